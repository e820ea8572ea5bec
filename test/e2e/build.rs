//! Builds the wasm fixtures of the end-to-end tests from the sources in `test/fixtures`:
//! WAT with the `wat` crate, C with clang for wasm32-wasi (wasi-libc), a large generated module,
//! a component made from the C program with the WASI preview 1 command adapter, and a WASI 0.2
//! component written directly against `wasi:sockets` (`listener.wat` with the WIT world below),
//! and the native pause program of the CRI tests (`pause.c`, built statically with cc).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    println!("cargo:rerun-if-changed={}", src.display());

    for name in [
        "hello",
        "exit7",
        "trap",
        "missing_import",
        "busy",
        "two_memories",
        "grow",
        "bad_start",
        "simd",
    ] {
        let path = src.join(format!("{name}.wat"));
        let wasm = wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::fs::write(out.join(format!("{name}.wasm")), wasm).expect("write fixture");
    }

    // The hog again, sleeping 8 s before it grows.
    let hog = std::fs::read_to_string(src.join("two_memories.wat")).expect("read two_memories.wat");
    let no_delay = "(global $delay i64 (i64.const 0))";
    assert!(
        hog.contains(no_delay),
        "two_memories.wat declares {no_delay}"
    );
    let delayed = hog.replace(no_delay, "(global $delay i64 (i64.const 8000000000))");
    std::fs::write(
        out.join("delayed_hog.wasm"),
        wat::parse_str(delayed).expect("delayed hog"),
    )
    .expect("write delayed hog");

    std::fs::write(
        out.join("large.wasm"),
        wat::parse_str(large_wat(12000)).expect("large"),
    )
    .expect("write large");

    let probe = out.join("probe.wasm");
    let status = Command::new(std::env::var("WASI_CC").unwrap_or_else(|_| "clang".into()))
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(&probe)
        .arg(src.join("probe.c"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "building probe.wasm with clang failed ({other:?}): install the WASI C toolchain \
             with `make deps` (clang lld wasi-libc libclang-rt-14-dev-wasm32)"
        ),
    }

    // The pod sandbox's pause program of the CRI tests: native, static.
    let pause = out.join("pause");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-static", "-Os", "-o"])
        .arg(&pause)
        .arg(src.join("pause.c"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!("building the pause program with cc -static failed ({other:?})"),
    }

    let core = std::fs::read(&probe).expect("read probe.wasm");
    let component = wit_component::ComponentEncoder::default()
        .module(&core)
        .expect("probe module")
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .expect("adapter")
        .validate(true)
        .encode()
        .expect("encode component");
    std::fs::write(out.join("probe_component.wasm"), component).expect("write component");

    let listener = std::fs::read_to_string(src.join("listener.wat")).expect("read listener.wat");
    let listener_component = |text: &str| {
        wit_component_of(
            "listener.wat",
            text,
            wasi_wit_dir(),
            LISTENER_WORLD,
            "listener",
        )
    };
    std::fs::write(out.join("listener.wasm"), listener_component(&listener))
        .expect("write listener");
    // The same program answering connections until it is stopped.
    const ONE: &str = "(global $connections i32 (i32.const 1))";
    assert!(listener.contains(ONE), "listener.wat declares {ONE}");
    let server = listener.replace(ONE, "(global $connections i32 (i32.const -1))");
    std::fs::write(out.join("server.wasm"), listener_component(&server)).expect("write server");

    let resolve = std::fs::read_to_string(src.join("resolve.wat")).expect("read resolve.wat");
    std::fs::write(
        out.join("resolve.wasm"),
        wit_component_of(
            "resolve.wat",
            &resolve,
            wasi_wit_dir(),
            RESOLVE_WORLD,
            "resolve",
        ),
    )
    .expect("write resolve");

    let handler =
        std::fs::read_to_string(src.join("http_handler.wat")).expect("read http_handler.wat");
    std::fs::write(
        out.join("http_handler.wasm"),
        http_component(
            "http_handler.wat",
            &handler,
            HTTP_HANDLER_WORLD,
            "http-handler",
        ),
    )
    .expect("write http_handler");
    // The same handler that is also a command.
    const RUN_EXPORT: &str = ";; RUN EXPORT";
    assert!(
        handler.contains(RUN_EXPORT),
        "http_handler.wat has {RUN_EXPORT}"
    );
    let both = handler.replace(
        RUN_EXPORT,
        r#"(func (export "wasi:cli/run@0.2.12#run") (result i32)
             (local $s i32)
             (local.set $s (call $stdout))
             (call $write (local.get $s) (i32.const 640) (i32.const 17) (i32.const 64))
             (call $drop_output (local.get $s))
             (i32.const 0))"#,
    );
    std::fs::write(
        out.join("http_and_command.wasm"),
        http_component(
            "http_handler.wat (with run)",
            &both,
            &HTTP_HANDLER_WORLD.replace("}", "  export wasi:cli/run@0.2.12;\n}"),
            "http-handler",
        ),
    )
    .expect("write http_and_command");
    let echo = std::fs::read_to_string(src.join("http_echo.wat")).expect("read http_echo.wat");
    std::fs::write(
        out.join("http_echo.wasm"),
        http_component("http_echo.wat", &echo, HTTP_ECHO_WORLD, "http-echo"),
    )
    .expect("write http_echo");
    let fetch = std::fs::read_to_string(src.join("http_fetch.wat")).expect("read http_fetch.wat");
    std::fs::write(
        out.join("http_fetch.wasm"),
        http_component("http_fetch.wat", &fetch, HTTP_FETCH_WORLD, "http-fetch"),
    )
    .expect("write http_fetch");
    const HTTP_SCHEME: &str = "(global $scheme i32 (i32.const 0))";
    assert!(
        fetch.contains(HTTP_SCHEME),
        "http_fetch.wat declares {HTTP_SCHEME}"
    );
    let fetch_tls = fetch.replace(HTTP_SCHEME, "(global $scheme i32 (i32.const 1))");
    std::fs::write(
        out.join("https_fetch.wasm"),
        http_component(
            "http_fetch.wat (https)",
            &fetch_tls,
            HTTP_FETCH_WORLD,
            "http-fetch",
        ),
    )
    .expect("write https_fetch");
    let neither = wat::parse_file(src.join("no_world.wat")).expect("no_world.wat");
    std::fs::write(out.join("no_world.wasm"), neither).expect("write no_world");
}

/// What `http_handler.wat` imports and exports: the wasi:http of the wasmtime-wasi-http the shim
/// is built with.
const HTTP_HANDLER_WORLD: &str = r#"
package wasmcell:fixtures;

world http-handler {
  import wasi:http/types@0.2.12;
  import wasi:io/streams@0.2.12;
  import wasi:io/poll@0.2.12;
  import wasi:clocks/monotonic-clock@0.2.12;
  import wasi:cli/stdout@0.2.12;
  export wasi:http/incoming-handler@0.2.12;
}
"#;

/// What `http_fetch.wat` imports and exports.
const HTTP_FETCH_WORLD: &str = r#"
package wasmcell:fixtures;

world http-fetch {
  import wasi:http/types@0.2.12;
  import wasi:http/outgoing-handler@0.2.12;
  import wasi:io/streams@0.2.12;
  import wasi:io/poll@0.2.12;
  export wasi:http/incoming-handler@0.2.12;
}
"#;

/// What `http_echo.wat` imports and exports.
const HTTP_ECHO_WORLD: &str = r#"
package wasmcell:fixtures;

world http-echo {
  import wasi:http/types@0.2.12;
  import wasi:io/streams@0.2.12;
  export wasi:http/incoming-handler@0.2.12;
}
"#;

/// What `resolve.wat` imports and exports.
const RESOLVE_WORLD: &str = r#"
package wasmcell:fixtures;

world resolve {
  import wasi:cli/environment@0.2.12;
  import wasi:cli/stdout@0.2.12;
  import wasi:io/streams@0.2.12;
  import wasi:io/poll@0.2.12;
  import wasi:sockets/instance-network@0.2.12;
  import wasi:sockets/ip-name-lookup@0.2.12;
  export wasi:cli/run@0.2.12;
}
"#;

/// What `listener.wat` imports and exports, against the WASI 0.2 interfaces of the wasmtime-wasi
/// the shim is built with.
const LISTENER_WORLD: &str = r#"
package wasmcell:fixtures;

world listener {
  import wasi:sockets/instance-network@0.2.12;
  import wasi:sockets/tcp-create-socket@0.2.12;
  import wasi:sockets/tcp@0.2.12;
  import wasi:io/poll@0.2.12;
  import wasi:io/streams@0.2.12;
  import wasi:cli/stderr@0.2.12;
  export wasi:cli/run@0.2.12;
}
"#;

/// The WASI 0.2 WIT files that come with the wasmtime-wasi crate in cargo's registry (the
/// version the workspace pins).
fn wasi_wit_dir() -> PathBuf {
    registry_dir("wasmtime-wasi-48.0.8", "src/p2/wit")
}

/// The WIT files of wasi:http (and the WASI packages it uses) that come with the
/// wasmtime-wasi-http crate in cargo's registry.
fn wasi_http_wit_dir() -> PathBuf {
    registry_dir("wasmtime-wasi-http-48.0.8", "wit")
}

/// `dir` of the crate `name` (name-version) in cargo's registry.
fn registry_dir(name: &str, dir: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registry = home.join("registry/src");
    std::fs::read_dir(&registry)
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| index.path().join(name).join(dir))
        .find(|wit| wit.is_dir())
        .unwrap_or_else(|| panic!("no {name}/{dir} below {}", registry.display()))
}

/// A core module's text (`what`, for messages) as a component of the world `world` declared in
/// `wit` (the WIT source of package wasmcell:fixtures), against the WASI packages in `deps`:
/// the world is embedded, then encoded, with no adapter (the module speaks WASI 0.2 itself).
fn wit_component_of(what: &str, text: &str, deps: PathBuf, wit: &str, world: &str) -> Vec<u8> {
    let mut core = wat::parse_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut resolve = wit_parser::Resolve::default();
    resolve
        .push_dir(&deps)
        .unwrap_or_else(|e| panic!("WIT files in {}: {e:?}", deps.display()));
    let pkg = resolve
        .push_str(format!("{world}.wit"), wit)
        .unwrap_or_else(|e| panic!("the {world} world: {e:?}"));
    let world = resolve
        .select_world(&[pkg], Some(world))
        .unwrap_or_else(|e| panic!("select the {world} world: {e:?}"));
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed the world");
    wit_component::ComponentEncoder::default()
        .module(&core)
        .unwrap_or_else(|e| panic!("{what} as a module of a component: {e:?}"))
        .validate(true)
        .encode()
        .unwrap_or_else(|e| panic!("encode {what} as a component: {e:?}"))
}

/// A wasi:http handler's core module text as a component of `world` (declared in `wit`).
fn http_component(what: &str, text: &str, wit: &str, world: &str) -> Vec<u8> {
    wit_component_of(what, text, wasi_http_wit_dir(), wit, world)
}

/// A module with `n` functions of straight-line arithmetic: large enough that compiling it
/// takes far longer than loading it from the cache.
fn large_wat(n: usize) -> String {
    let mut s = String::from(
        "(module\n (import \"wasi_snapshot_preview1\" \"fd_write\" (func $w (param i32 i32 i32 i32) (result i32)))\n (memory (export \"memory\") 1)\n (data (i32.const 16) \"large module ok\\n\")\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            " (func $f{i} (param i32) (result i32) (local i32)\n"
        ));
        for k in 0..24 {
            s.push_str(&format!(
                "  (local.set 1 (i32.add (i32.mul (local.get 0) (i32.const {})) (i32.xor (local.get 1) (i32.const {}))))\n",
                i * 31 + k,
                k * 7 + 1
            ));
        }
        s.push_str("  (local.get 1))\n");
    }
    s.push_str(" (func (export \"_start\")\n  (drop (call $f0 (i32.const 1)))\n");
    s.push_str(
        "  (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 16))\n",
    );
    s.push_str("  (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))\n");
    s
}
