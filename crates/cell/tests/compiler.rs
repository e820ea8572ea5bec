//! The compile child as the kernel sees it while it compiles: the `nobody` user, no
//! capabilities, `no_new_privs`, a seccomp filter; and it cannot open the compile cache.
//!
//! One test in this binary: the compiler forks, and the fork must not copy a lock another
//! test thread holds.

use std::time::{Duration, Instant};

use wasmcell_cell::compiler::compile_locked_down;
use wasmcell_engine::Engine;

/// A module of many functions, so that compiling it takes long enough to be watched.
fn slow_module() -> Vec<u8> {
    let funcs: String = (0..20_000)
        .map(|i| {
            format!(
                "(func (export \"f{i}\") (param i32) (result i32) \
                 local.get 0 i32.const {i} i32.mul i32.const 7 i32.rem_u)"
            )
        })
        .collect();
    wat::parse_str(format!("(module {funcs})")).expect("wat")
}

/// The `/proc/<pid>/status` lines of the first child of this process that shows up.
fn watch_child(deadline: Instant) -> Option<String> {
    let me = std::process::id();
    while Instant::now() < deadline {
        let tasks = std::fs::read_dir(format!("/proc/{me}/task")).ok()?;
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for pid in children.split_whitespace() {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                // Catch it once it has locked itself down.
                if let Some(status) = status.ok().filter(|s| s.contains("Seccomp:\t2")) {
                    return Some(status);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn the_compiler_runs_as_nobody_without_capabilities_under_a_filter() {
    let engine = Engine::new().expect("engine");
    let wasm = slow_module();
    let watcher = std::thread::spawn(|| watch_child(Instant::now() + Duration::from_secs(60)));
    let compiled = compile_locked_down(&engine, "slow.wasm", &wasm).expect("compile");
    assert!(compiled.starts_with(b"\x7fELF"), "not an ELF image");
    let status = watcher
        .join()
        .expect("watcher")
        .expect("saw the compile child");
    assert_eq!(field(&status, "Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(field(&status, "Gid:"), "65534\t65534\t65534\t65534");
    assert_eq!(field(&status, "Groups:"), "");
    assert_eq!(field(&status, "CapEff:"), "0000000000000000");
    assert_eq!(field(&status, "CapPrm:"), "0000000000000000");
    assert_eq!(field(&status, "NoNewPrivs:"), "1");
}
