//! `wasmcell doctor`: what an operator runs when a wasm pod will not start. It reads the node
//! as containerd, the kubelet and the shim will find it, and for each thing that would stop a
//! wasm pod prints what is wrong and the fix.
//!
//! Each check is a function of a [`Node`] (what was read once: the layout, containerd's binary
//! and its loaded configuration) and returns a [`Finding`]; the report is a table for people
//! or JSON for machines, and the exit status is non-zero when any check failed.

mod checks;
pub mod kernel;

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

/// What the user asked doctor for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's root directory (`/`, or a node's tree mounted elsewhere).
    pub node_root: PathBuf,
    /// The layout, when it cannot be found from the files.
    pub layout: Option<crate::install::layout::Kind>,
    /// A kubeadm-style root config, when it is not the default.
    pub config: Option<PathBuf>,
    /// containerd's binary (default: the layout's, else on `PATH`).
    pub containerd: Option<PathBuf>,
    /// The runtime handler pods name in their RuntimeClass.
    pub handler: String,
    /// The kubelet's configuration file.
    pub kubelet_config: PathBuf,
    /// The shim's compile cache (its `WASMCELL_CACHE_DIR`).
    pub cache_dir: PathBuf,
    /// Print JSON rather than a table.
    pub json: bool,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but worth knowing.
    Warn,
    /// A wasm pod will not start (or not as it should).
    Fail,
    /// Could not be checked here (what it needs is missing, and another check says so).
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (failures and warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            status: Status::Warn,
            ..Finding::fail(check, detail, fix)
        }
    }

    fn skip(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Skip,
            ..Finding::ok(check, detail)
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    failures: usize,
    checks: &'a [Finding],
}

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

/// The findings as a table, each fix on a line of its own below its check.
fn table(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(5);
    let mut out = format!("{:width$}  STATUS  DETAIL\n", "CHECK");
    for f in findings {
        let status = match f.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out.push_str(&format!("{:width$}  {status:6}  {}\n", f.check, f.detail));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("{:width$}          fix: {fix}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_puts_each_fix_under_its_check() {
        let t = table(&[
            Finding::ok("containerd", "v2.3.7"),
            Finding::fail("handler", "no handler `wasmtime`", "run wasmcell install"),
        ]);
        assert_eq!(
            t,
            "CHECK       STATUS  DETAIL\n\
             containerd  ok      v2.3.7\n\
             handler     FAIL    no handler `wasmtime`\n\
             \x20                   fix: run wasmcell install\n"
        );
    }
}
