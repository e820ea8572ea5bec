//! The compiler against its own table: every call number, argument and architecture gets the
//! answer the policy gives, when the program is run as the kernel runs it.

use std::collections::BTreeMap;

use wasmcell_seccomp::interpreter::run;
use wasmcell_seccomp::{Action, Case, Check, Compare, Condition, Policy, Rule};

const ARCH: u32 = 0xc000_003e;
const EPERM: Action = Action::Errno(1);

/// What `policy` says about a call, straight from its table.
fn expected(policy: &Policy, nr: u32, args: &[u64; 6]) -> u32 {
    match policy.calls.get(&nr) {
        None => policy.default.ret_value(),
        Some(rule) => rule.answer(args, policy.default).ret_value(),
    }
}

fn assert_same_answers(policy: &Policy, numbers: impl Iterator<Item = u32>, args: &[[u64; 6]]) {
    let program = policy.compile().expect("compile");
    for nr in numbers {
        for a in args {
            assert_eq!(
                run(&program, policy.arch, nr, a),
                Ok(expected(policy, nr, a)),
                "call {nr} with {a:?}"
            );
        }
    }
}

fn sample_policy() -> Policy {
    let mut calls = BTreeMap::new();
    for nr in [0, 1, 2, 3, 5, 8, 9, 10, 60, 61, 231, 435, 439] {
        calls.insert(nr, Rule::Always(Action::Allow));
    }
    calls.insert(4, Rule::Always(Action::Errno(38)));
    calls.insert(11, Rule::Allow(Check::BitsClear { arg: 2, mask: 4 }));
    calls.insert(
        56,
        Rule::Allow(Check::BitsSet {
            arg: 0,
            mask: 0x10000,
        }),
    );
    calls.insert(
        41,
        Rule::Allow(Check::OneOf {
            arg: 0,
            values: vec![2, 10],
        }),
    );
    calls.insert(u32::MAX, Rule::Always(Action::Allow));
    Policy {
        arch: ARCH,
        calls,
        default: EPERM,
    }
}

fn sample_args() -> Vec<[u64; 6]> {
    let mut args = vec![[0; 6]];
    for value in [
        1,
        2,
        4,
        5,
        10,
        0x10000,
        0x10004,
        0xffff_ffff,
        0x1_0000_0000,
        u64::MAX,
    ] {
        for arg in 0..6 {
            let mut a = [0; 6];
            a[arg] = value;
            args.push(a);
        }
    }
    args
}

#[test]
fn every_call_number_gets_the_answer_of_its_table() {
    let policy = sample_policy();
    let edges = [
        0x4000_0000,
        0x4000_0001,
        0x8000_0000,
        u32::MAX - 1,
        u32::MAX,
    ];
    assert_same_answers(&policy, (0..1024).chain(edges), &sample_args());
}

#[test]
fn a_foreign_architecture_kills_the_process() {
    let program = sample_policy().compile().expect("compile");
    for arch in [0x4000_0003, 0xc000_00b7, 0] {
        assert_eq!(
            run(&program, arch, 0, &[0; 6]),
            Ok(Action::KillProcess.ret_value())
        );
    }
}

#[test]
fn allowed_neighbours_share_one_range_and_the_search_is_short() {
    let mut calls = BTreeMap::new();
    for nr in 0..300 {
        calls.insert(nr, Rule::Always(Action::Allow));
    }
    let policy = Policy {
        arch: ARCH,
        calls,
        default: EPERM,
    };
    // arch check (3), load, one comparison, two answers
    assert_eq!(policy.compile().expect("compile").len(), 7);
}

#[test]
fn halves_longer_than_a_conditional_jump_are_reached_through_an_unconditional_one() {
    // Every other number allowed, every third checked: about 1,400 ranges.
    let mut calls = BTreeMap::new();
    for nr in (0..1400).step_by(2) {
        let rule = if nr % 3 == 0 {
            Rule::Allow(Check::OneOf {
                arg: 1,
                values: vec![5, 10, 0xffff_ffff],
            })
        } else {
            Rule::Always(Action::Allow)
        };
        calls.insert(nr, rule);
    }
    let policy = Policy {
        arch: ARCH,
        calls,
        default: Action::Errno(13),
    };
    let program = policy.compile().expect("compile");
    assert!(program.len() > 1000);
    let unconditional = (libc::BPF_JMP | libc::BPF_JA) as u16;
    assert!(program.iter().any(|i| i.code == unconditional));
    assert_same_answers(&policy, 0..1500, &sample_args());
}

#[test]
fn a_program_longer_than_the_kernel_takes_is_an_error() {
    let mut calls = BTreeMap::new();
    for nr in (0..20_000).step_by(2) {
        calls.insert(nr, Rule::Always(Action::Allow));
    }
    let policy = Policy {
        arch: ARCH,
        calls,
        default: EPERM,
    };
    let error = policy.compile().expect_err("too long");
    assert!(error.contains("more than the kernel's 4096"), "{error}");
}

/// Values at the edges of every comparison: around the high and low words' boundaries.
fn edge_values() -> Vec<u64> {
    let mut v = Vec::new();
    for base in [0u64, 1, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0001, u64::MAX] {
        v.extend([base.wrapping_sub(1), base, base.wrapping_add(1)]);
    }
    v.extend([0x8000_0000, 0x7e01_0000, 0x2000_0000_0000_0005]);
    v
}

#[test]
fn cases_compare_whole_64_bit_arguments_as_their_table_says() {
    let values = edge_values();
    let ops = [
        Compare::Eq,
        Compare::Ne,
        Compare::Lt,
        Compare::Le,
        Compare::Gt,
        Compare::Ge,
        Compare::MaskedEq(0x7e02_0000),
        Compare::MaskedEq(0xffff_0000_0000_ffff),
    ];
    let mut args = Vec::new();
    for v in &values {
        for w in [0, 1] {
            args.push([*v, w, *v, 0, 0, *v]);
        }
    }
    // One policy per comparison: all of them would not fit in one program.
    for op in ops {
        let mut calls = BTreeMap::new();
        let mut nr = 0;
        for value in &values {
            let value = match op {
                Compare::MaskedEq(mask) => value & mask,
                _ => *value,
            };
            let case = |arg| Case {
                conditions: vec![Condition { arg, op, value }],
                action: Action::Errno(7),
            };
            calls.insert(nr, Rule::Cases(vec![case(0)]));
            // The same on the sixth argument, and a second case that two conditions make.
            calls.insert(
                nr + 1,
                Rule::Cases(vec![
                    case(5),
                    Case {
                        conditions: vec![
                            Condition {
                                arg: 1,
                                op: Compare::Ne,
                                value: 0,
                            },
                            Condition { arg: 2, op, value },
                        ],
                        action: Action::Trap,
                    },
                ]),
            );
            nr += 2;
        }
        let policy = Policy {
            arch: ARCH,
            calls,
            default: Action::Allow,
        };
        assert_same_answers(&policy, 0..nr + 2, &args);
    }
}

#[test]
fn a_check_of_a_seventh_argument_is_an_error() {
    let mut calls = BTreeMap::new();
    calls.insert(1, Rule::Allow(Check::BitsClear { arg: 6, mask: 1 }));
    let policy = Policy {
        arch: ARCH,
        calls,
        default: EPERM,
    };
    assert!(policy.compile().expect_err("arg 6").contains("argument 6"));
}
