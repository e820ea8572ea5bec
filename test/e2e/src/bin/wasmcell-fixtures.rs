//! Writes the test fixtures (wasm programs) into a directory: `wasmcell-fixtures DIR`.
//! `make demo` uses it for its hello image.
#![forbid(unsafe_code)]

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: wasmcell-fixtures DIR");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("wasmcell-fixtures: create {}: {e}", dir.display());
        std::process::exit(1);
    }
    for (name, bytes) in wasmcell_e2e::fixtures::ALL {
        if let Err(e) = std::fs::write(dir.join(name), bytes) {
            eprintln!("wasmcell-fixtures: write {name}: {e}");
            std::process::exit(1);
        }
    }
}
