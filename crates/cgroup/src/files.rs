//! A cgroup's control files, as the version-specific code (`v1`, `v2`) sees them: it knows
//! the files' names and meaning, not where a hierarchy keeps them.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::PathBuf;

use wasmcell_oci::Resources;

use crate::error::{CgroupError, Result};

/// Reading and writing one cgroup's control files by name (`memory.max`,
/// `memory.limit_in_bytes`…).
pub(crate) trait ControlFiles {
    /// Where the file is; `None` when this machine does not mount its controller.
    fn file(&self, name: &str) -> Option<PathBuf>;
    /// Writes the file.
    fn write(&self, name: &str, value: &str) -> Result<()>;
    /// Reads the file.
    fn read(&self, name: &str) -> Result<String>;
    /// Reads a flat-keyed file (`key value` per line).
    fn read_keyed(&self, name: &str) -> Result<HashMap<String, u64>>;
}

/// The files v1 and v2 name alike: the cpuset and the pids limit.
pub(crate) fn apply_cpuset_and_pids(cg: &impl ControlFiles, r: &Resources) -> Result<()> {
    if let Some(v) = &r.cpuset_cpus {
        cg.write("cpuset.cpus", v)?;
    }
    if let Some(v) = &r.cpuset_mems {
        cg.write("cpuset.mems", v)?;
    }
    if let Some(v) = r.pids_limit {
        cg.write("pids.max", &pids_max(v))?;
    }
    Ok(())
}

pub(crate) fn timeout(file: &str) -> CgroupError {
    CgroupError {
        what: format!("wait for {file}"),
        source: std::io::Error::new(ErrorKind::TimedOut, "the kernel did not finish in 5 s"),
    }
}

fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_owned()
    }
}

/// A cgroup double for the version-specific code's tests: every file exists, writes are
/// recorded in order, reads find nothing.
#[cfg(test)]
pub(crate) mod recorder {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) writes: RefCell<Vec<(String, String)>>,
    }

    impl ControlFiles for Recorder {
        fn file(&self, name: &str) -> Option<PathBuf> {
            Some(PathBuf::from(name))
        }
        fn write(&self, name: &str, value: &str) -> Result<()> {
            self.writes
                .borrow_mut()
                .push((name.to_owned(), value.to_owned()));
            Ok(())
        }
        fn read(&self, name: &str) -> Result<String> {
            Err(CgroupError {
                what: format!("read {name}"),
                source: std::io::Error::new(ErrorKind::NotFound, "a double"),
            })
        }
        fn read_keyed(&self, _name: &str) -> Result<HashMap<String, u64>> {
            Ok(HashMap::new())
        }
    }
}
