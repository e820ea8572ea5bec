//! The seccomp compiler (`wasmcell-seccomp`, `crates/seccomp/src/bpf.rs`) against its own
//! table: for any policy the fuzzer builds, the compiled program, run by the
//! BPF interpreter as the kernel runs it, gives every probed call exactly the answer the
//! policy's table gives, a call through another architecture is killed, and the program fits
//! the kernel's limit.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

use wasmcell_seccomp::interpreter::run;
use wasmcell_seccomp::{Action, Case, Check, Compare, Condition, Policy, Rule};

const ARCH: u32 = 0xc000_003e;

/// Reads the fuzzer's bytes as a policy's parts; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
    /// A call number: mostly small and close together, as real tables are.
    fn nr(&mut self) -> u32 {
        match self.u8() % 4 {
            0 => self.u32(),
            _ => u32::from(self.u8()) * 2 + u32::from(self.u8() % 3),
        }
    }
    /// An argument: mostly near the values conditions compare with.
    fn arg(&mut self, near: &[u64]) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            1 => near.get(usize::from(self.u8())).copied().unwrap_or(0),
            2 => near
                .get(usize::from(self.u8()))
                .copied()
                .unwrap_or(0)
                .wrapping_add(u64::from(self.u8() % 3))
                .wrapping_sub(1),
            _ => u64::from(self.u8()),
        }
    }
    fn action(&mut self) -> Action {
        match self.u8() % 7 {
            0 => Action::Allow,
            1 => Action::Errno(u16::from(self.u8())),
            2 => Action::KillProcess,
            3 => Action::KillThread,
            4 => Action::Trap,
            5 => Action::Trace(u16::from(self.u8())),
            _ => Action::Log,
        }
    }
    fn condition(&mut self, values: &mut Vec<u64>) -> Condition {
        let arg = self.u8() % 7; // 6 is out of range: the compiler must refuse it
        let op = match self.u8() % 7 {
            0 => Compare::Eq,
            1 => Compare::Ne,
            2 => Compare::Lt,
            3 => Compare::Le,
            4 => Compare::Gt,
            5 => Compare::Ge,
            _ => Compare::MaskedEq(self.u64()),
        };
        let value = self.u64();
        values.push(value);
        Condition { arg, op, value }
    }
    fn rule(&mut self, values: &mut Vec<u64>) -> Rule {
        let arg = self.u8() % 7;
        match self.u8() % 5 {
            0 => Rule::Always(self.action()),
            1 => Rule::Allow(Check::BitsClear {
                arg,
                mask: self.u32(),
            }),
            2 => Rule::Allow(Check::BitsSet {
                arg,
                mask: self.u32(),
            }),
            3 => {
                let n = usize::from(self.u8()) * 2; // up to 510: past 250 is refused
                let list: Vec<u32> = (0..n).map(|_| self.u32()).collect();
                values.extend(list.iter().map(|v| u64::from(*v)));
                Rule::Allow(Check::OneOf { arg, values: list })
            }
            _ => {
                let cases = (0..self.u8() % 6)
                    .map(|_| Case {
                        conditions: (0..self.u8() % 4).map(|_| self.condition(values)).collect(),
                        action: self.action(),
                    })
                    .collect();
                Rule::Cases(cases)
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = Bytes(data);
    let mut values = Vec::new();
    let mut calls = BTreeMap::new();
    for _ in 0..bytes.u8() % 64 {
        let nr = bytes.nr();
        let rule = bytes.rule(&mut values);
        calls.insert(nr, rule);
    }
    let policy = Policy {
        arch: ARCH,
        calls,
        default: bytes.action(),
    };
    let Ok(program) = policy.compile() else {
        return;
    };
    assert!(program.len() <= libc::BPF_MAXINSNS as usize);
    let listed: Vec<u32> = policy.calls.keys().copied().collect();
    for _ in 0..32 {
        let nr = match bytes.u8() % 3 {
            0 => bytes.nr(),
            _ => listed
                .get(usize::from(bytes.u8()) % listed.len().max(1))
                .copied()
                .unwrap_or(0)
                .wrapping_add(u32::from(bytes.u8() % 3))
                .wrapping_sub(1),
        };
        let mut args = [0u64; 6];
        for a in &mut args {
            *a = bytes.arg(&values);
        }
        let want = policy
            .calls
            .get(&nr)
            .map_or(policy.default, |rule| rule.answer(&args, policy.default));
        let got = run(&program, ARCH, nr, &args).expect("the program runs");
        assert_eq!(got, want.ret_value(), "call {nr} args {args:?}");
        let foreign = run(&program, ARCH ^ 1, nr, &args).expect("the program runs");
        assert_eq!(foreign, Action::KillProcess.ret_value());
        if bytes.0.is_empty() {
            break;
        }
    }
});
