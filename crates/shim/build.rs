//! Links `containerd-shim-wasmcell-v1` as a position-dependent executable (`-no-pie`), as
//! Debian builds containerd, its runc shim and runc. Measured by `make bench` on the
//! development machine: a position-independent build relocates 58,764 pointers at every exec,
//! which dirties 936 KiB of `.data.rel.ro` in every process (the shim and each cell: 1.9 MiB of
//! private memory per container, half of its footprint) and costs 0.45 ms of CPU and about 240
//! page faults per exec (four execs per container). Linked without PIE those pages stay shared
//! file pages. The price is that the binary's own code sits at a fixed address (libraries,
//! stack, heap, compiled guests and guest memory stay randomized); docs/design.md weighs it.
//! `WASMCELL_PIE=1 cargo build` builds a position-independent binary instead.
//!
//! `make build` also links it statically (`-C target-feature=+crt-static -C
//! relocation-model=static`, set in the `Makefile`, which rustc links without PIE by itself); a
//! plain `cargo build` gives a dynamic binary that works the same, only slower to start.
fn main() {
    println!("cargo:rerun-if-env-changed=WASMCELL_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let pie_asked = std::env::var_os("WASMCELL_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    if linux && !pie_asked {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
