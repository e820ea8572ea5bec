//! End-to-end test harness of wasmcell.
pub mod fixtures;
