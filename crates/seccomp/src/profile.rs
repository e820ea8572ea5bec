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

use crate::arch::{nr, AUDIT_ARCH};
use crate::bpf::{Action, Case, Compare, Condition, Instruction, Policy, Rule};
use crate::syscalls;

/// errno of `SCMP_ACT_ERRNO` without `errnoRet`, as runc gives it.
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// A compiled profile and the flags `seccomp(2)` installs it with.
pub struct Compiled {
    /// The filter.
    pub program: Vec<Instruction>,
    /// `SECCOMP_FILTER_FLAG_*` from the profile's `flags`.
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
