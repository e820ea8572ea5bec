//! systemd's cgroup driver. A container whose `linux.cgroupsPath` has systemd's form
//! (`slice:prefix:name`) on a host whose init is systemd gets its cgroup as systemd expects it:
//! a transient scope unit `prefix-name.scope` in `slice`, which the shim asks systemd for over
//! D-Bus (`StartTransientUnit`, with `Delegate=yes`, as runc's systemd driver does) with the
//! cell's pid in it, so that `systemctl status` shows the container and systemd never treats
//! its cgroup as a stranger. The limits systemd has properties for (memory, CPU weight and
//! quota, tasks) are the unit's properties too, as runc sets them: systemd writes a unit's
//! properties into its cgroup again whenever it re-applies them (a `daemon-reload` does), and
//! would otherwise put back its defaults. The shim then writes every limit into the scope's
//! cgroup itself (the rest of the spec's, the unified settings), and stops the unit at delete.
//! What has no property on every systemd (`memory.oom.group`, the cpuset, a quota's period
//! other than 100 ms) a re-apply may reset; a cell ends as a whole on an OOM kill even without
//! `memory.oom.group` (its supervisor ends the PID namespace).
//! Native containers get runc's `--systemd-cgroup`.
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

use wasmcell_oci::Resources;

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

/// The unit properties (all of D-Bus type `t`) that carry `r`'s limits, as runc's systemd
/// driver sets them: on the unified hierarchy (`v2`) `MemoryMax`, `MemorySwapMax`,
/// `MemoryLow`, `CPUWeight`; on v1 `MemoryLimit` and `CPUShares` (within the range systemd
/// accepts, which the kernel would clamp to anyway); on both `TasksMax` and
/// `CPUQuotaPerSecUSec` (rounded up to systemd's 10 ms steps, as runc rounds it). What has no
/// property on every systemd this runs on (the quota's period, the cpuset, unified settings) is
/// written to the cgroup's files only, and a re-apply by systemd may reset it.
pub fn limit_properties(r: &Resources, v2: bool) -> Vec<(&'static str, u64)> {
    let mut props = Vec::new();
    let unlimited_or = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
    if let Some(limit) = r.memory_limit.filter(|l| *l != 0) {
        let name = if v2 { "MemoryMax" } else { "MemoryLimit" };
        props.push((name, unlimited_or(limit)));
    }
    if let (true, Some(limit), Some(swap)) = (v2, r.memory_limit, r.memory_swap) {
        // v1's memsw counts memory plus swap; v2's swap.max counts swap alone.
        let swap_max = if swap < 0 || limit < 0 {
            u64::MAX
        } else {
            (swap - limit).max(0) as u64
        };
        props.push(("MemorySwapMax", swap_max));
    }
    if v2 {
        if let Some(low) = r.memory_reservation.filter(|l| *l > 0) {
            props.push(("MemoryLow", low as u64));
        }
        if let Some(weight) = r.cpu_weight() {
            props.push(("CPUWeight", weight));
        }
    } else if let Some(shares) = r.cpu_shares.filter(|s| *s != 0) {
        props.push(("CPUShares", shares.clamp(2, 262_144)));
    }
    if let Some(quota) = r.cpu_quota.filter(|q| *q > 0) {
        let period = r.cpu_period.filter(|p| *p != 0).unwrap_or(100_000);
        let per_sec = (quota as u64).saturating_mul(1_000_000) / period;
        props.push((
            "CPUQuotaPerSecUSec",
            per_sec.div_ceil(10_000).saturating_mul(10_000),
        ));
    }
    if let Some(pids) = r.pids_limit.filter(|p| *p != 0) {
        props.push(("TasksMax", unlimited_or(pids)));
    }
    props
}

/// Asks systemd for the transient scope `unit` in `slice` holding `pid`, with the unit
/// properties `limits` ([`limit_properties`]), and waits until `pid` is in the scope's cgroup,
/// `relative` below the cgroup root.
pub fn start_scope(
    unit: &str,
    slice: &str,
    pid: i32,
    relative: &Path,
    limits: &[(&str, u64)],
) -> Result<()> {
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let description = format!("wasmcell container {unit}");
    let pid_number = u32::try_from(pid).map_err(|_| Error::Internal(format!("pid {pid}")))?;
    let pid = pid.to_string();
    let count = (5 + limits.len()).to_string();
    let values: Vec<String> = limits.iter().map(|(_, v)| v.to_string()).collect();
    let mut busctl_args = vec![
        "ssa(sv)a(sa(sv))",
        unit,
        "fail",
        &count,
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
    ];
    for ((name, _), value) in limits.iter().zip(&values) {
        busctl_args.extend([*name, "t", value.as_str()]);
    }
    busctl_args.push("0");
    let pids = [pid_number];
    let mut properties = vec![
        ("Description", Value::Str(&description)),
        ("Slice", Value::Str(slice)),
        ("Delegate", Value::Bool(true)),
        ("DefaultDependencies", Value::Bool(false)),
        ("PIDs", Value::U32s(&pids)),
    ];
    properties.extend(limits.iter().map(|(name, v)| (*name, Value::U64(*v))));
    call(
        "StartTransientUnit",
        &busctl_args,
        &Args::Transient(unit, "fail", &properties),
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
    fn limits_become_the_units_properties_as_runc_sets_them() {
        let r = Resources {
            memory_limit: Some(64 << 20),
            memory_reservation: Some(16 << 20),
            cpu_shares: Some(1024),
            cpu_quota: Some(25_001),
            cpu_period: Some(100_000),
            pids_limit: Some(-1),
            ..Resources::default()
        };
        assert_eq!(
            limit_properties(&r, true),
            [
                ("MemoryMax", 64 << 20),
                ("MemoryLow", 16 << 20),
                ("CPUWeight", 39),
                // 250,010 µs a second, rounded up to systemd's 10 ms steps.
                ("CPUQuotaPerSecUSec", 260_000),
                ("TasksMax", u64::MAX),
            ]
        );
        let swap = Resources {
            memory_swap: Some(96 << 20),
            ..r.clone()
        };
        assert!(limit_properties(&swap, true).contains(&("MemorySwapMax", 32 << 20)));
        let tiny = Resources {
            cpu_shares: Some(1),
            ..Resources::default()
        };
        assert_eq!(limit_properties(&tiny, false), [("CPUShares", 2)]);
        assert_eq!(
            limit_properties(&r, false),
            [
                ("MemoryLimit", 64 << 20),
                ("CPUShares", 1024),
                ("CPUQuotaPerSecUSec", 260_000),
                ("TasksMax", u64::MAX),
            ]
        );
        assert!(limit_properties(&Resources::default(), true).is_empty());
        let unlimited = Resources {
            memory_limit: Some(-1),
            ..Resources::default()
        };
        assert_eq!(
            limit_properties(&unlimited, true),
            [("MemoryMax", u64::MAX)]
        );
    }

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
