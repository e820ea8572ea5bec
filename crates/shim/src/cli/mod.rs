//! The shim binary as containerd runs it: `start` (find or launch the pod's shim daemon),
//! `delete` (clean up after a task whose shim died), and `-v` / `-info` ([`info`]).

pub mod bootstrap;
pub mod delete;
pub mod info;
pub mod start;

use std::io::Read;
use std::io::Write;

/// Runs the action of `flags` (`start` or `delete`, or `-v` / `-info`); the process's exit
/// status.
pub fn run(flags: containerd_shim::Flags) -> i32 {
    if flags.version {
        print!("{}", info::version_text());
        return 0;
    }
    if flags.info {
        let mut stdin = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            eprintln!("{}: read stdin: {e}", info::RUNTIME_ID);
            return 1;
        }
        return match info::runtime_info(&stdin) {
            Ok(bytes) if std::io::stdout().write_all(&bytes).is_ok() => 0,
            Ok(_) => 1,
            Err(e) => {
                eprintln!("{}: {e}", info::RUNTIME_ID);
                1
            }
        };
    }
    if !matches!(flags.action.as_str(), "start" | "delete") {
        eprintln!(
            "{}: unknown action {:?} (expected start or delete)",
            info::RUNTIME_ID,
            flags.action
        );
        return 2;
    }
    if let Err(missing) = invoked_by_containerd(&flags) {
        eprintln!(
            "{}: {missing}: containerd runs this binary itself (runtime type {}); to use it, \
             configure containerd and run e.g. `ctr run --runtime {} IMAGE ID`",
            info::RUNTIME_ID,
            info::RUNTIME_ID,
            info::RUNTIME_ID
        );
        return 2;
    }
    let outcome = if flags.action == "start" {
        // containerd 2.3 and later write their bootstrap params here; earlier ones the
        // runtime options, or nothing.
        let mut stdin = Vec::new();
        match std::io::stdin().read_to_end(&mut stdin) {
            Ok(_) => start::run(&flags, &stdin),
            Err(e) => Err(format!("read stdin: {e}")),
        }
    } else {
        delete::run(&flags)
    };
    match outcome {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("{}: {why}", info::RUNTIME_ID);
            1
        }
    }
}

/// Checks what containerd always passes to `start` and `delete`, so a run by hand gets a plain
/// message.
fn invoked_by_containerd(flags: &containerd_shim::Flags) -> Result<(), String> {
    if flags.namespace.is_empty() {
        return Err("missing -namespace".into());
    }
    if flags.id.is_empty() {
        return Err("missing -id".into());
    }
    if flags.address.is_empty() {
        return Err("missing -address (containerd's socket)".into());
    }
    if std::env::var_os("TTRPC_ADDRESS").is_none() {
        return Err("TTRPC_ADDRESS is not set".into());
    }
    Ok(())
}
