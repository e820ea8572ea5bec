//! Stats: a cgroup's CPU, memory and pids figures in containerd's metrics types
//! (`io.containerd.cgroups.v1.Metrics` / `io.containerd.cgroups.v2.Metrics`), which `ctr task
//! metrics` and the CRI plugin (and through it `kubectl top`) decode.

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use wasmcell_cgroup::Cgroup;

use crate::error::{Error, Result};

/// The type URL containerd registers for cgroup v1 metrics.
const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// The type URL containerd registers for cgroup v2 metrics.
const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// Reads the cgroup's metrics, packed for a StatsResponse.
pub fn collect(cg: &Cgroup) -> Result<Any> {
    let (type_url, value) = if cg.is_v2() {
        (V2_TYPE_URL, collect_v2(cg)?.write_to_bytes())
    } else {
        (V1_TYPE_URL, collect_v1(cg)?.write_to_bytes())
    };
    let mut any = Any::new();
    any.type_url = type_url.to_owned();
    any.value = value.map_err(|e| Error::io("encode metrics", e))?;
    Ok(any)
}

fn cg_err(e: wasmcell_cgroup::CgroupError) -> Error {
    Error::Internal(format!("read the cgroup: {e}"))
}

fn collect_v1(cg: &Cgroup) -> Result<v1::Metrics> {
    let mut m = v1::Metrics::new();

    let mut pids = v1::PidsStat::new();
    pids.current = cg.read_u64("pids.current").map_err(cg_err)?;
    pids.limit = match cg.read_u64("pids.max").map_err(cg_err)? {
        u64::MAX => 0,
        n => n,
    };
    m.pids = Some(pids).into();

    let mut usage = v1::CPUUsage::new();
    usage.total = cg.read_u64("cpuacct.usage").map_err(cg_err)?;
    let stat = cg.read_keyed("cpuacct.stat").map_err(cg_err)?;
    // cpuacct.stat counts USER_HZ ticks; containerd reports nanoseconds.
    let tick_ns = 1_000_000_000 / clock_ticks();
    usage.user = stat.get("user").copied().unwrap_or(0) * tick_ns;
    usage.kernel = stat.get("system").copied().unwrap_or(0) * tick_ns;
    usage.per_cpu = cg
        .read("cpuacct.usage_percpu")
        .map_err(cg_err)?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let mut cpu = v1::CPUStat::new();
    cpu.usage = Some(usage).into();
    if let Ok(t) = cg.read_keyed("cpu.stat") {
        let mut th = v1::Throttle::new();
        th.periods = t.get("nr_periods").copied().unwrap_or(0);
        th.throttled_periods = t.get("nr_throttled").copied().unwrap_or(0);
        th.throttled_time = t.get("throttled_time").copied().unwrap_or(0);
        cpu.throttling = Some(th).into();
    }
    m.cpu = Some(cpu).into();

    let s = cg.read_keyed("memory.stat").map_err(cg_err)?;
    let get = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut mem = v1::MemoryStat::new();
    mem.cache = get("cache");
    mem.rss = get("rss");
    mem.rss_huge = get("rss_huge");
    mem.mapped_file = get("mapped_file");
    mem.dirty = get("dirty");
    mem.writeback = get("writeback");
    mem.pg_pg_in = get("pgpgin");
    mem.pg_pg_out = get("pgpgout");
    mem.pg_fault = get("pgfault");
    mem.pg_maj_fault = get("pgmajfault");
    mem.inactive_anon = get("inactive_anon");
    mem.active_anon = get("active_anon");
    mem.inactive_file = get("inactive_file");
    mem.active_file = get("active_file");
    mem.unevictable = get("unevictable");
    mem.hierarchical_memory_limit = get("hierarchical_memory_limit");
    mem.hierarchical_swap_limit = get("hierarchical_memsw_limit");
    mem.total_cache = get("total_cache");
    mem.total_rss = get("total_rss");
    mem.total_rss_huge = get("total_rss_huge");
    mem.total_mapped_file = get("total_mapped_file");
    mem.total_dirty = get("total_dirty");
    mem.total_writeback = get("total_writeback");
    mem.total_pg_pg_in = get("total_pgpgin");
    mem.total_pg_pg_out = get("total_pgpgout");
    mem.total_pg_fault = get("total_pgfault");
    mem.total_pg_maj_fault = get("total_pgmajfault");
    mem.total_inactive_anon = get("total_inactive_anon");
    mem.total_active_anon = get("total_active_anon");
    mem.total_inactive_file = get("total_inactive_file");
    mem.total_active_file = get("total_active_file");
    mem.total_unevictable = get("total_unevictable");
    mem.usage = Some(memory_entry(cg, "memory")?).into();
    if cg
        .file("memory.memsw.usage_in_bytes")
        .is_some_and(|p| p.exists())
    {
        mem.swap = Some(memory_entry(cg, "memory.memsw")?).into();
    }
    if cg
        .file("memory.kmem.usage_in_bytes")
        .is_some_and(|p| p.exists())
    {
        mem.kernel = Some(memory_entry(cg, "memory.kmem")?).into();
    }
    m.memory = Some(mem).into();

    let oom = cg.read_keyed("memory.oom_control").map_err(cg_err)?;
    let mut oc = v1::MemoryOomControl::new();
    oc.oom_kill_disable = oom.get("oom_kill_disable").copied().unwrap_or(0);
    oc.under_oom = oom.get("under_oom").copied().unwrap_or(0);
    oc.oom_kill = oom.get("oom_kill").copied().unwrap_or(0);
    m.memory_oom_control = Some(oc).into();
    Ok(m)
}

/// `usage`, `limit`, `max` and `failcnt` of a v1 memory counter family (`memory`,
/// `memory.memsw`, `memory.kmem`).
fn memory_entry(cg: &Cgroup, prefix: &str) -> Result<v1::MemoryEntry> {
    let read = |name: &str| cg.read_u64(&format!("{prefix}.{name}")).map_err(cg_err);
    let mut e = v1::MemoryEntry::new();
    e.usage = read("usage_in_bytes")?;
    e.limit = read("limit_in_bytes")?;
    e.max = read("max_usage_in_bytes")?;
    e.failcnt = read("failcnt")?;
    Ok(e)
}

fn collect_v2(cg: &Cgroup) -> Result<v2::Metrics> {
    let mut m = v2::Metrics::new();
    let max_or_zero = |n: u64| if n == u64::MAX { 0 } else { n };

    let mut pids = v2::PidsStat::new();
    pids.current = cg.read_u64("pids.current").map_err(cg_err)?;
    pids.limit = max_or_zero(cg.read_u64("pids.max").map_err(cg_err)?);
    m.pids = Some(pids).into();

    let c = cg.read_keyed("cpu.stat").map_err(cg_err)?;
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = get("usage_usec");
    cpu.user_usec = get("user_usec");
    cpu.system_usec = get("system_usec");
    cpu.nr_periods = get("nr_periods");
    cpu.nr_throttled = get("nr_throttled");
    cpu.throttled_usec = get("throttled_usec");
    m.cpu = Some(cpu).into();

    let s = cg.read_keyed("memory.stat").map_err(cg_err)?;
    let get = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut mem = v2::MemoryStat::new();
    mem.anon = get("anon");
    mem.file = get("file");
    mem.kernel_stack = get("kernel_stack");
    mem.slab = get("slab");
    mem.sock = get("sock");
    mem.shmem = get("shmem");
    mem.file_mapped = get("file_mapped");
    mem.file_dirty = get("file_dirty");
    mem.file_writeback = get("file_writeback");
    mem.anon_thp = get("anon_thp");
    mem.inactive_anon = get("inactive_anon");
    mem.active_anon = get("active_anon");
    mem.inactive_file = get("inactive_file");
    mem.active_file = get("active_file");
    mem.unevictable = get("unevictable");
    mem.slab_reclaimable = get("slab_reclaimable");
    mem.slab_unreclaimable = get("slab_unreclaimable");
    mem.pgfault = get("pgfault");
    mem.pgmajfault = get("pgmajfault");
    mem.usage = cg.read_u64("memory.current").map_err(cg_err)?;
    mem.usage_limit = max_or_zero(cg.read_u64("memory.max").map_err(cg_err)?);
    mem.max_usage = cg.read_u64("memory.peak").unwrap_or(0);
    mem.swap_usage = cg.read_u64("memory.swap.current").unwrap_or(0);
    mem.swap_limit = max_or_zero(cg.read_u64("memory.swap.max").unwrap_or(u64::MAX));
    m.memory = Some(mem).into();

    let ev = cg.read_keyed("memory.events").map_err(cg_err)?;
    let get = |k: &str| ev.get(k).copied().unwrap_or(0);
    let mut me = v2::MemoryEvents::new();
    me.low = get("low");
    me.high = get("high");
    me.max = get("max");
    me.oom = get("oom");
    me.oom_kill = get("oom_kill");
    m.memory_events = Some(me).into();
    Ok(m)
}

/// `USER_HZ`, the unit of `cpuacct.stat`.
fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}
