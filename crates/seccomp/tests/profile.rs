//! OCI seccomp profiles compiled as runc applies them, checked by running the programs.

use oci_spec::runtime::LinuxSeccomp;
use wasmcell_seccomp::arch::{nr, AUDIT_ARCH};
use wasmcell_seccomp::interpreter::run;
use wasmcell_seccomp::profile::compile;
use wasmcell_seccomp::{syscalls, Instruction};

/// A profile in the shape containerd writes for `RuntimeDefault` (a part of it).
fn runtime_default() -> LinuxSeccomp {
    serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["read", "write", "mmap", "seccomp", "exit_group", "_llseek",
                       "arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}
        ]
    }))
    .expect("profile")
}

fn answer(program: &[Instruction], call: libc::c_long, args: [u64; 6]) -> u32 {
    run(program, AUDIT_ARCH, nr(call), &args).expect("run")
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

#[test]
fn a_runtime_default_profile_answers_as_libseccomp_would() {
    let compiled = compile(&runtime_default()).expect("compile");
    let p = &compiled.program;
    assert_eq!(compiled.flags, 0);
    assert_eq!(answer(p, libc::SYS_read, [0; 6]), ALLOW);
    assert_eq!(answer(p, libc::SYS_mount, [0; 6]), EPERM);
    assert_eq!(answer(p, libc::SYS_personality, [0, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        answer(p, libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(answer(p, libc::SYS_personality, [8, 0, 0, 0, 0, 0]), EPERM);
    // A whole 64-bit compare: the high word counts.
    assert_eq!(
        answer(p, libc::SYS_personality, [1 << 32, 0, 0, 0, 0, 0]),
        EPERM
    );
    assert_eq!(answer(p, libc::SYS_clone, [0x11, 0, 0, 0, 0, 0]), ALLOW);
    let newns = libc::CLONE_NEWNS as u64;
    assert_eq!(answer(p, libc::SYS_clone, [newns, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(
        answer(p, libc::SYS_clone3, [0; 6]),
        libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
    );
    assert_eq!(answer(p, libc::SYS_socket, [2, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(answer(p, libc::SYS_socket, [40, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(
        answer(p, libc::SYS_socket, [40 | (1 << 32), 0, 0, 0, 0, 0]),
        ALLOW
    );
}

#[test]
fn a_profile_the_cell_cannot_honour_is_refused_with_its_reason() {
    let refused = |json: serde_json::Value| {
        let p: LinuxSeccomp = serde_json::from_value(json).expect("profile");
        compile(&p).err().expect("refused")
    };
    let no_seccomp = refused(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert!(no_seccomp.contains("refuses seccomp(2)"), "{no_seccomp}");
    let notify = refused(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]
    }));
    assert!(notify.contains("SCMP_ACT_NOTIFY"), "{notify}");
    let listener = refused(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"
    }));
    assert!(listener.contains("listenerPath"), "{listener}");
    let seventh = refused(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
    }));
    assert!(seventh.contains("argument 6"), "{seventh}");
}

#[test]
fn flags_and_actions_pass_through() {
    let p: LinuxSeccomp = serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["mount"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["umount2"], "action": "SCMP_ACT_TRAP"},
            {"names": ["ptrace"], "action": "SCMP_ACT_LOG"},
            {"names": ["reboot"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
        ]
    }))
    .expect("profile");
    let compiled = compile(&p).expect("compile");
    let c = &compiled.program;
    assert_eq!(
        compiled.flags,
        libc::SECCOMP_FILTER_FLAG_LOG as libc::c_ulong
    );
    assert_eq!(
        answer(c, libc::SYS_mount, [0; 6]),
        libc::SECCOMP_RET_KILL_PROCESS
    );
    assert_eq!(answer(c, libc::SYS_umount2, [0; 6]), libc::SECCOMP_RET_TRAP);
    assert_eq!(answer(c, libc::SYS_ptrace, [0; 6]), libc::SECCOMP_RET_LOG);
    assert_eq!(answer(c, libc::SYS_reboot, [0; 6]), EPERM);
    assert_eq!(
        answer(c, libc::SYS_write, [1, 0, 0, 0, 0, 0]),
        libc::SECCOMP_RET_ERRNO | 13
    );
    assert_eq!(answer(c, libc::SYS_write, [2, 0, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn every_name_of_the_table_has_its_number() {
    let names: std::collections::HashSet<_> = syscalls::NATIVE.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), syscalls::NATIVE.len(), "no name twice");
    let numbers: std::collections::HashSet<_> = syscalls::NATIVE.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers.len(), syscalls::NATIVE.len(), "no number twice");
    assert!(syscalls::NATIVE.contains(&("getrandom", libc::SYS_getrandom)));
}
