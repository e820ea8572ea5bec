//! `containerd-shim-wasmref-v1`: the benchmark's reference shim (runtime type
//! `io.containerd.wasmref.v1`), on runwasi's `containerd-shim-wasm` framework and wasmtime.
//!
//! It does what runwasi's wasmtime shim does and nothing more: the framework runs each container
//! through youki and calls [`Sandbox::run_wasi`] inside it; that compiles the module or component
//! (from the rootfs file on every start, or from the image's wasm layer), preopens `/` and runs
//! `_start` or `wasi:cli/run`. It is a yardstick, so it keeps runwasi's choices (one engine per
//! container, no compile cache for rootfs images, `/` preopened with full rights) and does not try
//! to be better.

use anyhow::{bail, Context, Result};
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{version, Cli, Shim, Version};
use wasmtime::component::{Component, Linker as ComponentLinker, ResourceTable};
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

struct WasmRefShim;

#[derive(Default)]
struct WasmRefSandbox;

impl Shim for WasmRefShim {
    type Sandbox = WasmRefSandbox;

    fn name() -> &'static str {
        "wasmref"
    }

    fn version() -> Version {
        version!()
    }
}

struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn wasi(ctx: &impl RuntimeContext) -> Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(ctx.args())
        .inherit_stdio()
        .preopened_dir("/", "/", FsPerms::ReadWrite)
        .map_err(wt)?;
    for kv in ctx.envs() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        builder.env(k, v);
    }
    Ok(builder)
}

/// wasmtime's own error type as an `anyhow` error.
fn wt(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// The exit status of a guest that ended with `err`: `proc_exit(n)` gives n, a trap 1.
fn status_of(err: wasmtime::Error) -> Result<i32> {
    match err.downcast_ref::<I32Exit>() {
        Some(exit) => Ok(exit.0),
        None => {
            eprintln!("wasm trap: {err:#}");
            Ok(1)
        }
    }
}

impl Sandbox for WasmRefSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> Result<i32> {
        let entrypoint = ctx.entrypoint();
        let bytes = entrypoint.source.as_bytes()?;
        if entrypoint.source.is_precompiled()? {
            bail!("the reference shim loads no precompiled layers");
        }
        // runwasi's framework runs this on its tokio runtime, so the guest runs async, as in
        // runwasi's wasmtime shim.
        let engine = Engine::new(&Config::new()).map_err(wt)?;
        if wasmtime::Engine::detect_precompiled(&bytes).is_some() {
            bail!("precompiled input");
        }
        if bytes.get(4..8) == Some(&[0x0d, 0, 1, 0]) {
            let component = Component::new(&engine, &bytes)
                .map_err(wt)
                .context("compile component")?;
            let mut linker = ComponentLinker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wt)?;
            let state = ComponentState {
                ctx: wasi(ctx)?.build(),
                table: ResourceTable::new(),
            };
            let mut store = Store::new(&engine, state);
            let command = Command::instantiate_async(&mut store, &component, &linker)
                .await
                .map_err(wt)?;
            return match command.wasi_cli_run().call_run(&mut store).await {
                Ok(Ok(())) => Ok(0),
                Ok(Err(())) => Ok(1),
                Err(e) => status_of(e),
            };
        }
        let module = Module::new(&engine, &bytes)
            .map_err(wt)
            .context("compile module")?;
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| s).map_err(wt)?;
        let mut store = Store::new(&engine, wasi(ctx)?.build_p1());
        let instance = linker
            .instantiate_async(&mut store, &module)
            .await
            .map_err(wt)?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, &entrypoint.func)
            .map_err(wt)?;
        match start.call_async(&mut store, ()).await {
            Ok(()) => Ok(0),
            Err(e) => status_of(e),
        }
    }
}

fn main() {
    WasmRefShim::run(None);
}
