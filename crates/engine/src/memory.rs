//! How a container's memory limit is shared out: the cap of one linear memory, what an
//! instance pool's idle slots keep resident, and the budget of a server's requests in flight.
//! The kernel counts all of it against the same limit, so the parts are sized together.

/// How large one linear memory may grow under a container memory limit: the limit less a
/// headroom for what the runtime itself keeps in the same cgroup (engine, compiled code, WASI
/// buffers), a quarter of the limit and at most 8 MiB. Without the headroom a guest growing its
/// memory up to the limit would be OOM-killed instead of seeing `memory.grow` fail.
pub fn linear_memory_cap(limit: u64) -> u64 {
    const MAX_HEADROOM: u64 = 8 << 20;
    limit - (limit / 4).min(MAX_HEADROOM)
}

/// The most one linear memory may grow to: the lower of what the container's memory `limit`
/// allows ([`linear_memory_cap`]) and the operator's cap `max` (the memory-max setting).
pub fn memory_cap(limit: Option<u64>, max: Option<u64>) -> Option<u64> {
    match (limit.map(linear_memory_cap), max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the pool's idle memory slots may keep resident together: an eighth of the container's
/// memory, or this much without a limit.
const KEEP_RESIDENT_WITHOUT_LIMIT: u64 = 1 << 30;
/// The most one slot keeps resident: more than a componentize-py or componentize-js handler's
/// request dirties.
const KEEP_RESIDENT_PER_SLOT: u64 = 16 << 20;
/// Granularity of what is kept resident: a wasm page.
const WASM_PAGE: u64 = 64 << 10;

/// How many bytes of each memory slot stay resident between instances: reset in place (only the
/// pages the last request dirtied, where the kernel answers `PAGEMAP_SCAN`) rather than given
/// back with `madvise`, whose TLB shootdown interrupts every core the server's threads ran on,
/// and whose pages the next request faults in again (most of a request's memory cost;
/// docs/performance.md). The pool keeps at most `instances` idle slots warm (see
/// [`Engine::serving`](crate::Engine::serving)), and a slot in use holds memory the requests' own budget counts, so
/// this much per slot keeps the idle slots within their budget.
pub(crate) fn keep_resident(instances: u32, memory_cap: Option<u64>) -> usize {
    let budget = keep_resident_budget(memory_cap);
    let per_slot = (budget / u64::from(instances.max(1))).min(KEEP_RESIDENT_PER_SLOT);
    usize::try_from(per_slot / WASM_PAGE * WASM_PAGE).unwrap_or(0)
}

/// What all slots may keep resident together.
fn keep_resident_budget(memory_cap: Option<u64>) -> u64 {
    memory_cap.map_or(KEEP_RESIDENT_WITHOUT_LIMIT, |cap| cap / 8)
}

/// The linear memory the requests in flight may hold together under a container memory limit
/// (`serve`'s memory budget): one memory's cap ([`linear_memory_cap`]) less what the pool keeps
/// resident in its idle slots, which the kernel counts against the same limit.
pub(crate) fn requests_memory_budget(limit: u64) -> u64 {
    let cap = linear_memory_cap(limit);
    cap - keep_resident_budget(Some(cap))
}

#[cfg(test)]
mod tests {
    use super::{keep_resident, linear_memory_cap};

    #[test]
    fn linear_memory_cap_leaves_headroom() {
        assert_eq!(linear_memory_cap(32 << 20), 24 << 20);
        assert_eq!(linear_memory_cap(8 << 20), 6 << 20);
        assert_eq!(linear_memory_cap(1 << 30), (1 << 30) - (8 << 20));
    }
    #[test]
    fn what_the_pool_keeps_resident_stays_within_its_budget() {
        // No limit, 128 instances: 1 GiB / 128, 8 MiB each.
        assert_eq!(keep_resident(128, None), 8 << 20);
        // A few instances: at most 16 MiB each.
        assert_eq!(keep_resident(4, None), 16 << 20);
        // 64 MiB limit, 256 instances: 8 MiB / 256 = 32 KiB, less than a wasm page: nothing.
        assert_eq!(keep_resident(256, Some(64 << 20)), 0);
        // 1 GiB limit, 64 instances: 128 MiB / 64 = 2 MiB.
        assert_eq!(keep_resident(64, Some(1 << 30)), 2 << 20);
        // Always whole wasm pages.
        assert_eq!(keep_resident(3, Some(3 << 20)) % (64 << 10), 0);
    }
}
