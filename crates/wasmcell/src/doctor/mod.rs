//! `wasmcell doctor`: what an operator runs when a wasm pod will not start. It reads the node
//! as containerd, the kubelet and the shim will find it, and for each thing that would stop a
//! wasm pod prints what is wrong and the fix.
//!
//! Each check (`checks`) is a function of what was read of the node once (the layout,
//! containerd's binary and its loaded configuration) and returns a finding (`report`); the
//! report is a table for people or JSON for machines, and the exit status is non-zero when any
//! check failed.

mod checks;
pub mod kernel;
mod report;

use anyhow::Result;

pub use checks::Options;
use report::{table, Report, Status};

/// Runs every check, prints the report; Ok(false) when a check failed.
pub fn run(opts: &Options) -> Result<bool> {
    let node = checks::Node::read(opts);
    let findings = checks::all(&node, opts, &kernel::Running);
    let failures = findings.iter().filter(|f| f.status == Status::Fail).count();
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Report {
                failures,
                checks: &findings,
            })?
        );
    } else {
        print!("{}", table(&findings));
        if failures == 0 {
            println!("no problems found");
        } else {
            println!("{failures} check(s) failed");
        }
    }
    Ok(failures == 0)
}
