//! systemd's cgroup driver. A container whose `linux.cgroupsPath` has systemd's form
//! (`slice:prefix:name`) on a host whose init is systemd gets its cgroup as systemd expects it:
//! a transient scope unit `prefix-name.scope` in `slice`, which the shim asks systemd for over
//! D-Bus (`StartTransientUnit`, with `Delegate=yes`, as runc's systemd driver does) with the
//! cell's pid in it, so that `systemctl status` shows the container and systemd never treats
//! its cgroup as a stranger. The shim then writes the limits into the scope's cgroup itself,
//! and stops the unit at delete. Native containers get runc's `--systemd-cgroup`.
//!
//! The D-Bus calls go through `busctl` (part of systemd, so present wherever this driver
//! applies), which keeps a D-Bus client out of the shim. On a node whose system bus does not
//! answer (no dbus, or stopped), they go straight to systemd over its private socket instead
//! (`systemd_direct`), as runc's driver does as root. On a host without systemd as init the
//! same path is taken as a directory layout and created directly.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::systemd_direct::{self, Args, Value, PRIVATE_SOCKET};
use crate::error::{Error, Result};

/// How long systemd may take to create a scope and move the process into it.
const SCOPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether systemd is the host's init (`sd_booted()`: systemd creates this directory early).
pub fn running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The scope unit and slice systemd is asked for when `path` has systemd's form and systemd is
/// the host's init; `None` when the shim creates the cgroup itself.
pub fn scope_of(path: &wasmcell_oci::CgroupPath) -> Option<(String, String)> {
    match path {
        wasmcell_oci::CgroupPath::Systemd {
            slice,
            prefix,
            name,
        } if running() => Some((unit_name(prefix, name), slice.clone())),
        _ => None,
    }
}

/// Whether runc gets `--systemd-cgroup` for `spec` (whose cgroupsPath has systemd's form, on a
/// host whose init is systemd).
pub fn drives(spec: &oci_spec::runtime::Spec, id: &str) -> bool {
    wasmcell_oci::CgroupPath::of_spec(spec, id)
        .ok()
        .is_some_and(|p| scope_of(&p).is_some())
}

/// The scope unit of a `slice:prefix:name` path.
pub fn unit_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    }
}

/// How long one D-Bus call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The system bus's socket: `DBUS_SYSTEM_BUS_ADDRESS`'s `unix:path=`, else the standard one.
fn system_bus_socket(address: Option<&str>) -> String {
    address
        .and_then(|a| {
            a.split(';').find_map(|t| {
                t.strip_prefix("unix:path=")
                    .map(|p| p.split(',').next().unwrap_or(p).to_owned())
            })
        })
        .unwrap_or_else(|| "/run/dbus/system_bus_socket".to_owned())
}

/// Calls `method` of systemd's manager: through busctl (`busctl_args`, in its notation) when
/// the system bus answers, else over systemd's private socket (`direct`). Whether the bus
/// answers is asked of its socket, not read from busctl's words, which change between systemd
/// releases.
fn call(method: &str, busctl_args: &[&str], direct: &Args) -> Result<()> {
    let bus = system_bus_socket(std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok().as_deref());
    if UnixStream::connect(&bus).is_err() && Path::new(PRIVATE_SOCKET).exists() {
        return systemd_direct::call_manager(method, direct, CALL_TIMEOUT).map_err(|d| {
            Error::Internal(format!(
                "systemd refused {method} over {PRIVATE_SOCKET} (no system bus answers at \
                 {bus}): {d}"
            ))
        });
    }
    let mut all = vec![method];
    all.extend_from_slice(busctl_args);
    busctl(&all).map(drop)
}

fn busctl(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("busctl");
    cmd.args([
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    ])
    .args(args);
    // Through the shim's helper: the daemon's reaper collects every child, so a plain
    // `Command::output` could find its child's status already taken (ECHILD).
    let out = crate::host::process::run_command(&mut cmd, CALL_TIMEOUT)?;
    if out.status != 0 {
        return Err(Error::Internal(format!(
            "systemd refused {}: {}",
            args.first().copied().unwrap_or_default(),
            out.stderr.trim()
        )));
    }
    Ok(out.stdout)
}

/// Asks systemd for the transient scope `unit` in `slice` holding `pid`, and waits until `pid`
/// is in the scope's cgroup, `relative` below the cgroup root.
pub fn start_scope(unit: &str, slice: &str, pid: i32, relative: &Path) -> Result<()> {
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let description = format!("wasmcell container {unit}");
    let pid_number = u32::try_from(pid).map_err(|_| Error::Internal(format!("pid {pid}")))?;
    let pid = pid.to_string();
    call(
        "StartTransientUnit",
        &[
            "ssa(sv)a(sa(sv))",
            unit,
            "fail",
            "5",
            "Description",
            "s",
            &description,
            "Slice",
            "s",
            slice,
            "Delegate",
            "b",
            "true",
            "DefaultDependencies",
            "b",
            "false",
            "PIDs",
            "au",
            "1",
            &pid,
            "0",
        ],
        &Args::Transient(
            unit,
            "fail",
            &[
                ("Description", Value::Str(&description)),
                ("Slice", Value::Str(slice)),
                ("Delegate", Value::Bool(true)),
                ("DefaultDependencies", Value::Bool(false)),
                ("PIDs", Value::U32s(&[pid_number])),
            ],
        ),
    )?;
    // The call returns once the job is queued; the move is done when the process's cgroup
    // (v2's line, or v1's systemd hierarchy) names the scope.
    let want = format!("/{}", relative.display());
    let deadline = Instant::now() + SCOPE_TIMEOUT;
    loop {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let placed = cgroups
            .lines()
            .any(|l| (l.starts_with("0::") || l.contains(":name=systemd:")) && l.ends_with(&want));
        if placed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Internal(format!(
                "systemd did not move pid {pid} into {unit} within {SCOPE_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Stops the scope `unit` (systemd kills what is left in it); a unit that is gone is fine.
pub fn stop_scope(unit: &str) {
    if let Err(e) = call(
        "StopUnit",
        &["ss", unit, "replace"],
        &Args::Strings2(unit, "replace"),
    ) {
        if !e.to_string().contains("not loaded") {
            log::warn!("stop {unit}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_bus_is_where_its_address_says() {
        assert_eq!(system_bus_socket(None), "/run/dbus/system_bus_socket");
        assert_eq!(
            system_bus_socket(Some("unix:path=/var/run/dbus/sock,guid=1;tcp:host=x")),
            "/var/run/dbus/sock"
        );
        assert_eq!(
            system_bus_socket(Some("tcp:host=x")),
            "/run/dbus/system_bus_socket"
        );
    }

    #[test]
    fn scope_names_follow_runc() {
        assert_eq!(
            unit_name("cri-containerd", "abc"),
            "cri-containerd-abc.scope"
        );
        assert_eq!(unit_name("", "abc"), "abc.scope");
    }
}
