//! Links `containerd-shim-wasmcell-v1` as a position-dependent executable (`-no-pie`), as
//! Debian builds containerd, its runc shim and runc. A position-independent build relocates
//! tens of thousands of pointers at every exec, which dirties the `.data.rel.ro` pages of every
//! process (the shim and each cell) and costs CPU and page faults per exec; linked without PIE
//! those pages stay shared file pages (the figures: docs/performance.md). The price is that the
//! binary's own code sits at a fixed address (libraries, stack, heap, compiled guests and guest
//! memory stay randomized); docs/design.md weighs it.
//! `WASMCELL_PIE=1 cargo build` builds a position-independent binary instead.
//!
//! `make build` also links it statically (`-C target-feature=+crt-static -C
//! relocation-model=static`, set in the `Makefile`, which rustc links without PIE by itself); a
//! plain `cargo build` gives a dynamic binary that works the same, only slower to start.
fn main() {
    wasmtime_version();
    println!("cargo:rerun-if-env-changed=WASMCELL_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let pie_asked = std::env::var_os("WASMCELL_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    if linux && !pie_asked {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}

/// Passes the version of wasmtime the build resolved (the workspace's `Cargo.lock`) to the
/// code as `WASMCELL_WASMTIME_VERSION`, for `-v` and `-info`, so that it follows the pin.
fn wasmtime_version() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lock = std::path::Path::new(&manifest).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let version = text
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == "name = \"wasmtime\""))
        .and_then(|p| p.lines().find_map(|l| l.trim().strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WASMCELL_WASMTIME_VERSION={version}");
}
