//! Renaming this process as `ps` shows it: the daemon after `shim start` forked it, the zygote,
//! and each cell the zygote forks.
#![allow(unsafe_code)]

use std::ffi::CString;

/// The memory of this process's original command line, which `/proc/PID/cmdline` shows.
///
/// Renaming writes the new arguments over it, NUL-separated, and fills the rest with NULs (which
/// the kernel shows as empty trailing arguments). That needs no privilege, unlike `PR_SET_MM`
/// (CAP_SYS_RESOURCE, which some machines, these test machines among them, withhold even from
/// root). The new command line must fit in the old one. All of them start from the command line
/// containerd gave `shim start` (the binary, `-namespace`, `-address`, `-publish-binary` and
/// `-id` with their values, and `start`): the daemon keeps a part of it, and a cell needs the
/// binary, `cell` and an id (containerd limits ids to 76 bytes). A name that does not fit is
/// refused ([`Cmdline::encode`]); the zygote then refuses that cell and the daemon executes it.
#[derive(Clone, Copy)]
pub struct Cmdline {
    start: usize,
    room: usize,
}

impl Cmdline {
    /// The area of this process's original arguments.
    pub fn of_this_process() -> std::io::Result<Cmdline> {
        let (start, end) = stat_area(48)?;
        Ok(Cmdline {
            start,
            room: end - start,
        })
    }

    /// Blanks the memory of this process's original environment, which `/proc/PID/environ`
    /// shows (`clearenv` empties only the list the C library reads), so that a cell's shows
    /// nothing, as an executed cell's (started with an empty environment) does.
    pub fn blank_environ() -> std::io::Result<()> {
        let (start, end) = stat_area(50)?;
        // SAFETY: as in `set`: the original environment strings on the initial stack, which
        // nothing reads after `clearenv`.
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
        Ok(())
    }

    /// `args` as the kernel keeps them, if they fit.
    pub fn encode(&self, args: &[&str]) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        for arg in args {
            bytes.extend_from_slice(
                CString::new(*arg)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
                    .as_bytes_with_nul(),
            );
        }
        if bytes.len() > self.room {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the command line {args:?} needs {} bytes, the original has {}",
                    bytes.len(),
                    self.room
                ),
            ));
        }
        Ok(bytes)
    }

    /// Makes `/proc/self/cmdline` read as `bytes` (from [`Cmdline::encode`]).
    pub fn set(&self, bytes: &[u8]) {
        let len = bytes.len().min(self.room);
        // SAFETY: [start, start + room) is this process's original argument strings, on its
        // initial stack: mapped and writable for the process's whole life. Nothing reads them
        // any more (`shim start` parsed its arguments into owned strings before forking).
        unsafe {
            let area = self.start as *mut u8;
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, len);
            std::ptr::write_bytes(area.add(len), 0, self.room - len);
        }
    }
}

/// Fields `n` and `n + 1` of `/proc/self/stat`: 48 for the arguments' memory, 50 for the
/// environment's.
fn stat_area(n: usize) -> std::io::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Field 3 (the state) is the first after the `(comm)`.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok());
    match (field(n), field(n + 1)) {
        (Some(start), Some(end)) if start > 0 && end >= start => Ok((start, end)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "no memory area in fields {n} and {} of /proc/self/stat",
                n + 1
            ),
        )),
    }
}
