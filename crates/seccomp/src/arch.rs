//! The native architecture as a seccomp filter sees it.

/// `AUDIT_ARCH_*` of the architecture this is built for: the value a filter compares
/// `seccomp_data.arch` with.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xc000_003e;
/// `AUDIT_ARCH_*` of the architecture this is built for: the value a filter compares
/// `seccomp_data.arch` with.
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xc000_00b7;
/// `AUDIT_ARCH_*` of the architecture this is built for: the value a filter compares
/// `seccomp_data.arch` with.
#[cfg(target_arch = "riscv64")]
pub const AUDIT_ARCH: u32 = 0xc000_00f3;

/// A system call number as a filter compares it (`seccomp_data.nr` is 32 bits).
pub fn nr(call: libc::c_long) -> u32 {
    call as u32
}
