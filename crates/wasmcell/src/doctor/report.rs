//! What each check found, and the report of them all: a table for people, JSON for machines.

use serde::Serialize;

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
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            status: Status::Warn,
            ..Finding::fail(check, detail, fix)
        }
    }

    pub fn skip(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Skip,
            ..Finding::ok(check, detail)
        }
    }
}

#[derive(Serialize)]
pub struct Report<'a> {
    pub failures: usize,
    pub checks: &'a [Finding],
}

/// The findings as a table, each fix on a line of its own below its check.
pub fn table(findings: &[Finding]) -> String {
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
