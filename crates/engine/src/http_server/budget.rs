//! The memory the requests in flight share.
//!
//! Under a container memory limit one request's linear memory is capped
//! ([`crate::linear_memory_cap`]), but a server runs many requests at once, and their memories
//! together could pass the limit: the kernel's OOM killer would then end the whole server, and
//! every request in it. So the requests draw their linear memory from one budget: a request that
//! would take more than is left sees `memory.grow` fail (or cannot be instantiated), fails alone
//! with the cause in its log line, and gives nothing back that others hold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits};

/// Linear memory the requests in flight may hold together, in bytes.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    total: u64,
    held: AtomicU64,
}

impl MemoryBudget {
    pub(crate) fn new(total: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            total,
            held: AtomicU64::new(0),
        })
    }

    /// Takes `bytes` if that many are left.
    fn take(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|after| *after <= self.total)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held by the requests in flight.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

/// One request's limits: the per-memory cap of every store, and its share of the budget, given
/// back when the request's store is dropped.
pub(crate) struct RequestLimits {
    per_memory: StoreLimits,
    budget: Option<Arc<MemoryBudget>>,
    /// What this request holds of the budget.
    holds: u64,
    /// Taken for a growth that has not happened yet (given back if it fails).
    pending: u64,
    /// Why a growth was refused, for the request's log line.
    refused: Option<String>,
}

impl RequestLimits {
    pub(crate) fn new(per_memory: StoreLimits, budget: Option<Arc<MemoryBudget>>) -> Self {
        RequestLimits {
            per_memory,
            budget,
            holds: 0,
            pending: 0,
            refused: None,
        }
    }

    /// Why this request's memory could not grow, if it could not.
    pub(crate) fn refused(&mut self) -> Option<String> {
        self.refused.take()
    }
}

const MIB: f64 = (1 << 20) as f64;

impl ResourceLimiter for RequestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if !self.per_memory.memory_growing(current, desired, maximum)? {
            self.refused = Some(format!(
                "a memory.grow to {:.1} MiB passed the cap on one memory",
                desired as f64 / MIB
            ));
            return Ok(false);
        }
        let Some(budget) = &self.budget else {
            return Ok(true);
        };
        let extra = desired.saturating_sub(current) as u64;
        if !budget.take(extra) {
            self.refused = Some(format!(
                "a memory.grow of {:.1} MiB was refused: the requests in flight hold {:.1} MiB \
                 of the server's {:.1} MiB memory budget",
                extra as f64 / MIB,
                budget.held() as f64 / MIB,
                budget.total as f64 / MIB
            ));
            return Ok(false);
        }
        self.holds += extra;
        self.pending = extra;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        if let Some(budget) = &self.budget {
            budget.give_back(self.pending);
            self.holds -= self.pending;
        }
        self.pending = 0;
        self.per_memory.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.per_memory.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.per_memory.instances()
    }

    fn tables(&self) -> usize {
        self.per_memory.tables()
    }

    fn memories(&self) -> usize {
        self.per_memory.memories()
    }
}

impl Drop for RequestLimits {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.holds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::StoreLimitsBuilder;

    const MIB: usize = 1 << 20;

    fn limits(budget: &Arc<MemoryBudget>) -> RequestLimits {
        RequestLimits::new(StoreLimitsBuilder::new().build(), Some(budget.clone()))
    }

    #[test]
    fn requests_share_one_budget_and_give_it_back_when_they_end() {
        let budget = MemoryBudget::new(40 << 20);
        let mut first = limits(&budget);
        let mut second = limits(&budget);
        assert!(first.memory_growing(0, 16 * MIB, None).unwrap());
        assert!(second.memory_growing(0, 16 * MIB, None).unwrap());
        // A third 16 MiB would pass 40 MiB: refused, and the refusal says how much is held.
        let mut third = limits(&budget);
        assert!(!third.memory_growing(0, 16 * MIB, None).unwrap());
        let why = third.refused().unwrap();
        assert!(
            why.contains("hold 32.0 MiB of the server's 40.0 MiB"),
            "{why}"
        );
        // Growing counts only what is added.
        assert!(first.memory_growing(16 * MIB, 20 * MIB, None).unwrap());
        assert_eq!(budget.held(), 36 << 20);
        drop(first);
        assert_eq!(budget.held(), 16 << 20);
        assert!(third.memory_growing(0, 16 * MIB, None).unwrap());
        drop((second, third));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_growth_that_fails_after_it_was_allowed_is_given_back() {
        let budget = MemoryBudget::new(40 << 20);
        let mut request = limits(&budget);
        assert!(request.memory_growing(0, 8 * MIB, None).unwrap());
        assert!(request.memory_growing(8 * MIB, 24 * MIB, None).unwrap());
        request
            .memory_grow_failed(wasmtime::Error::msg("mmap failed"))
            .unwrap();
        assert_eq!(budget.held(), 8 << 20);
        drop(request);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn the_cap_on_one_memory_still_holds_and_is_named() {
        let budget = MemoryBudget::new(64 << 20);
        let mut request = RequestLimits::new(
            StoreLimitsBuilder::new().memory_size(8 * MIB).build(),
            Some(budget.clone()),
        );
        assert!(!request.memory_growing(0, 16 * MIB, None).unwrap());
        assert!(request.refused().unwrap().contains("cap on one memory"));
        assert_eq!(budget.held(), 0);
    }
}
