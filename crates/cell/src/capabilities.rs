//! Capabilities by name, as a spec lists them, and the kernel's own range of them.

/// Capability numbers by name (`linux/capability.h`).
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The numbers of capability names; an unknown name is an error (never silently dropped, which
/// could make a container fail in odd ways; never silently granted).
pub fn numbers(names: &[String]) -> Result<Vec<u32>, String> {
    names
        .iter()
        .map(|n| {
            CAPABILITIES
                .iter()
                .position(|c| c == n)
                .map(|i| i as u32)
                .ok_or_else(|| format!("unknown capability {n:?} in process.capabilities"))
        })
        .collect()
}

pub fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0u64, |m, c| m | (1u64 << c))
}

/// The highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAPABILITIES.len() as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_map_to_kernel_numbers() {
        let n = numbers(&[
            "CAP_KILL".into(),
            "CAP_NET_BIND_SERVICE".into(),
            "CAP_BPF".into(),
        ])
        .expect("known");
        assert_eq!(n, [5, 10, 39]);
        assert_eq!(mask(&n), (1 << 5) | (1 << 10) | (1 << 39));
        assert!(numbers(&["CAP_MAKE_COFFEE".into()]).is_err());
    }
}
