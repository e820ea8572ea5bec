//! A spec's own seccomp profile (`linux.seccomp`, such as the one containerd writes for
//! Kubernetes' `RuntimeDefault`), compiled by the cell and installed beneath its allow-list.
//!
//! The kernel runs every filter a thread has and takes the strictest answer, so a cell with both
//! is never weaker than either: the profile cannot widen the allow-list, and the allow-list
//! cannot widen the profile. What the cell cannot carry out exactly (a user-space notifier, a
//! flag it does not know) is refused here, and the shim sends such a spec to runc.
//!
//! Names follow libseccomp's rules as runc applies them: a rule's names that this architecture
//! does not have are skipped (profiles list every architecture's calls); the rules of one call
//! are tried in order, those with argument conditions before one without; an argument is
//! compared on all of its 64 bits.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use super::bpf::{Action, Case, Compare, Condition, Instruction, Policy, Rule};
use super::{nr, syscalls, AUDIT_ARCH};

/// errno of `SCMP_ACT_ERRNO` without `errnoRet`, as runc gives it.
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// A compiled profile and the flags `seccomp(2)` installs it with.
pub struct Compiled {
    pub program: Vec<Instruction>,
    pub flags: libc::c_ulong,
}

/// Compiles `profile`, or says why the cell cannot apply it as runc would.
pub fn compile(profile: &LinuxSeccomp) -> Result<Compiled, String> {
    if syscalls::NATIVE.is_empty() {
        return Err("a seccomp profile on an architecture other than x86-64".into());
    }
    if profile.listener_path().is_some() {
        return Err("a seccomp profile with a notification listener (listenerPath)".into());
    }
    // `architectures` adds tables to the native one in libseccomp, which runc never removes, so
    // the rules always apply to x86-64 calls; calls through any other table the cell's own filter
    // kills, which is stricter than any profile.
    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            // The cell installs its filters while it has one thread.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            other => return Err(format!("the seccomp filter flag {other:?}")),
        };
    }
    let policy = policy(profile)?;
    let program = policy.compile()?;
    // The cell's own filter is installed after this one, with `seccomp(2)`.
    let install = [
        libc::SECCOMP_SET_MODE_FILTER as u64,
        0,
        0x7fff_0000,
        0,
        0,
        0,
    ];
    let rule = policy.calls.get(&nr(libc::SYS_seccomp));
    let answer = rule.map_or(policy.default, |r| r.answer(&install, policy.default));
    if answer != Action::Allow {
        return Err(
            "a seccomp profile that refuses seccomp(2) itself (the cell's own filter comes \
             after it)"
                .into(),
        );
    }
    Ok(Compiled {
        program,
        flags: libc::c_ulong::from(flags),
    })
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<Action, String> {
    let value = |v: Option<u32>, default: u32| -> Result<u16, String> {
        let v = v.unwrap_or(default);
        u16::try_from(v).map_err(|_| format!("the seccomp return value {v}"))
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(value(errno, DEFAULT_ERRNO)?),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Action::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActTrace => Action::Trace(value(errno, 0)?),
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err("the seccomp action SCMP_ACT_NOTIFY (a user-space notifier)".into())
        }
    })
}

fn condition(arg: &oci_spec::runtime::LinuxSeccompArg) -> Result<Condition, String> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i < 6)
        .ok_or_else(|| format!("a seccomp condition on argument {}", arg.index()))?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => (Compare::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpNe => (Compare::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (Compare::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (Compare::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (Compare::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (Compare::Ge, arg.value()),
        // `value` is the mask, `valueTwo` what the masked argument must equal.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            (Compare::MaskedEq(arg.value()), arg.value_two().unwrap_or(0))
        }
    };
    Ok(Condition {
        arg: index,
        op,
        value,
    })
}

/// The profile as a policy of the cell's compiler.
fn policy(profile: &LinuxSeccomp) -> Result<Policy, String> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let numbers: BTreeMap<&str, u32> = syscalls::NATIVE
        .iter()
        .map(|(name, number)| (*name, nr(*number)))
        .collect();
    // Per call: the cases with conditions in the profile's order, then the first without.
    let mut conditional: BTreeMap<u32, Vec<Case>> = BTreeMap::new();
    let mut unconditional: BTreeMap<u32, Action> = BTreeMap::new();
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        let conditions = rule
            .args()
            .iter()
            .flatten()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?;
        for name in rule.names() {
            let Some(number) = numbers.get(name.as_str()) else {
                continue;
            };
            if conditions.is_empty() {
                unconditional.entry(*number).or_insert(act);
            } else {
                conditional.entry(*number).or_default().push(Case {
                    conditions: conditions.clone(),
                    action: act,
                });
            }
        }
    }
    let mut calls = BTreeMap::new();
    for (number, act) in &unconditional {
        if !conditional.contains_key(number) && *act != default {
            calls.insert(*number, Rule::Always(*act));
        }
    }
    for (number, mut cases) in conditional {
        if let Some(act) = unconditional.get(&number) {
            cases.push(Case {
                conditions: Vec::new(),
                action: *act,
            });
        }
        calls.insert(number, Rule::Cases(cases));
    }
    Ok(Policy {
        arch: AUDIT_ARCH,
        calls,
        default,
    })
}

#[cfg(test)]
mod tests {
    use super::super::bpf::interpreter::run;
    use super::*;

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
        let names: std::collections::HashSet<_> =
            syscalls::NATIVE.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), syscalls::NATIVE.len(), "no name twice");
        let numbers: std::collections::HashSet<_> =
            syscalls::NATIVE.iter().map(|(_, n)| *n).collect();
        assert_eq!(numbers.len(), syscalls::NATIVE.len(), "no number twice");
        assert!(syscalls::NATIVE.contains(&("getrandom", libc::SYS_getrandom)));
    }
}
