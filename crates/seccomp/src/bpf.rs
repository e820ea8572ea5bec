//! A seccomp policy (one answer per system call number, some depending on an argument) compiled
//! to a classic BPF program that finds the call's answer by binary search.
//!
//! Why not a general filter library: the usual layout is one comparison per listed call, in a
//! row. Since Linux 5.11 the kernel runs every new filter once per system call number of each
//! architecture when it is installed, to learn which calls it may allow without running it
//! again, so a long row of comparisons is run over and over at every start
//! (docs/performance.md has the cost). A search over the sorted numbers answers
//! any call in about eight comparisons, at install and at every checked call after it.
//!
//! Layout of the program:
//! 1. the architecture check: a call made through another architecture's table kills the process
//!    (its numbers mean other calls);
//! 2. the search: the call numbers are cut into ranges that share one answer (allowed runs of
//!    consecutive numbers merge), and a balanced tree of `jge` comparisons picks the range;
//! 3. each range ends in its answer: a `ret`, or the argument check of one call followed by its
//!    two `ret`s. Every block ends in `ret`, so a block can be placed anywhere and all jumps go
//!    forward within it, as the kernel's verifier demands.
//!
//! Arguments are compared on their low 32 bits: the calls checked here (`clone`'s flags as the
//! kernel reads them, `mmap`'s and `mprotect`'s protection bits, socket families, `ioctl`
//! requests, `prctl` options, thread group ids) are 32-bit values to the kernel.

use std::collections::BTreeMap;

/// What the filter answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The call runs.
    Allow,
    /// The call fails with this errno without running.
    Errno(u16),
    /// The whole process is killed (a call through a foreign architecture's table).
    KillProcess,
    /// The calling thread is killed (a profile's `SCMP_ACT_KILL`, `SCMP_ACT_KILL_THREAD`).
    KillThread,
    /// The thread gets SIGSYS (`SCMP_ACT_TRAP`).
    Trap,
    /// A ptrace tracer is told, with this value; without one the call fails with `ENOSYS`.
    Trace(u16),
    /// The call runs and is logged (`SCMP_ACT_LOG`).
    Log,
}

impl Action {
    /// The filter's return value for this answer.
    pub fn ret_value(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(errno) => libc::SECCOMP_RET_ERRNO | u32::from(errno),
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Trace(value) => libc::SECCOMP_RET_TRACE | u32::from(value),
            Action::Log => libc::SECCOMP_RET_LOG,
        }
    }
}

/// How a [`Condition`] compares a whole 64-bit argument with its value (unsigned), as
/// libseccomp's `SCMP_CMP_*` do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// The argument's bits under the mask equal the value.
    MaskedEq(u64),
}

/// A comparison of one argument (0 to 5), on all of its 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Which argument (0 to 5).
    pub arg: u8,
    /// How it is compared.
    pub op: Compare,
    /// What it is compared with.
    pub value: u64,
}

impl Condition {
    /// Whether `args` pass (what the program computes, for tests).
    pub fn passes(&self, args: &[u64; 6]) -> bool {
        let a = args[usize::from(self.arg)];
        let v = self.value;
        match self.op {
            Compare::Eq => a == v,
            Compare::Ne => a != v,
            Compare::Lt => a < v,
            Compare::Le => a <= v,
            Compare::Gt => a > v,
            Compare::Ge => a >= v,
            Compare::MaskedEq(mask) => a & mask == v,
        }
    }
}

/// One answer of a call whose answer depends on its arguments: `action` when every condition
/// holds (no condition: always).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// What must hold, all of it.
    pub conditions: Vec<Condition>,
    /// The answer when it does.
    pub action: Action,
}

/// A condition on the low 32 bits of one argument (0 to 5) that lets a call run; a call that
/// fails it gets the policy's default answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// None of `mask`'s bits is set.
    #[allow(missing_docs)]
    BitsClear { arg: u8, mask: u32 },
    /// All of `mask`'s bits are set.
    #[allow(missing_docs)]
    BitsSet { arg: u8, mask: u32 },
    /// The argument is one of `values`.
    #[allow(missing_docs)]
    OneOf { arg: u8, values: Vec<u32> },
}

impl Check {
    fn arg(&self) -> u8 {
        match self {
            Check::BitsClear { arg, .. }
            | Check::BitsSet { arg, .. }
            | Check::OneOf { arg, .. } => *arg,
        }
    }

    /// Whether arguments `args` pass (what the program computes, for tests).
    pub fn passes(&self, args: &[u64; 6]) -> bool {
        let low = |arg: &u8| args[usize::from(*arg)] as u32;
        match self {
            Check::BitsClear { arg, mask } => low(arg) & mask == 0,
            Check::BitsSet { arg, mask } => low(arg) & mask == *mask,
            Check::OneOf { arg, values } => values.contains(&low(arg)),
        }
    }
}

/// The answer for one call number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The same answer whatever the arguments.
    Always(Action),
    /// Allowed when the check passes, the policy's default answer otherwise.
    Allow(Check),
    /// The action of the first case whose conditions hold, the policy's default answer when
    /// none does (a seccomp profile's rules for one call, in order).
    Cases(Vec<Case>),
}

impl Rule {
    /// The answer for `args` (what the program computes, for tests).
    pub fn answer(&self, args: &[u64; 6], default: Action) -> Action {
        match self {
            Rule::Always(action) => *action,
            Rule::Allow(check) if check.passes(args) => Action::Allow,
            Rule::Allow(_) => default,
            Rule::Cases(cases) => cases
                .iter()
                .find(|c| c.conditions.iter().all(|k| k.passes(args)))
                .map_or(default, |c| c.action),
        }
    }
}

/// A whole policy: answers by call number, and the answer for every other number.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The audit architecture the numbers belong to (`AUDIT_ARCH_*`).
    pub arch: u32,
    /// Answers of the listed call numbers.
    pub calls: BTreeMap<u32, Rule>,
    /// The answer of every other number.
    pub default: Action,
}

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
pub type Instruction = libc::sock_filter;

/// Offsets in the kernel's `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

/// The longest program the kernel accepts.
const MAX_INSTRUCTIONS: usize = libc::BPF_MAXINSNS as usize;

fn statement(code: u32, k: u32) -> Instruction {
    Instruction {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> Instruction {
    Instruction {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn load(offset: u32) -> Instruction {
    statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn ret(action: Action) -> Instruction {
    statement(libc::BPF_RET | libc::BPF_K, action.ret_value())
}

/// The offset of the low 32 bits of argument `arg` (little-endian: they come first).
#[cfg(target_endian = "little")]
fn low_word_of(arg: u8) -> u32 {
    ARGS_OFFSET + 8 * u32::from(arg)
}

/// The offset of the high 32 bits of argument `arg`.
#[cfg(target_endian = "little")]
fn high_word_of(arg: u8) -> u32 {
    low_word_of(arg) + 4
}

/// Where a condition's jumps go: on to the next instruction, or to the case's failure (the
/// first instruction after the case), resolved once the case's length is known.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Skip(u8),
    Fail,
}

/// An instruction of a case, its jump targets not yet resolved.
struct Pending {
    insn: Instruction,
    jt: Target,
    jf: Target,
}

fn plain(insn: Instruction) -> Pending {
    Pending {
        insn,
        jt: Target::Next,
        jf: Target::Next,
    }
}

fn branch(op: u32, k: u32, jt: Target, jf: Target) -> Pending {
    Pending {
        insn: jump(op, k, 0, 0),
        jt,
        jf,
    }
}

/// The instructions of one condition: they fall through when it holds and go to the case's
/// failure when it does not. Comparisons of 64 bits: the high words decide unless equal.
fn condition_code(c: &Condition) -> Vec<Pending> {
    use Target::{Fail, Next, Skip};
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let load_hi = plain(load(high_word_of(c.arg)));
    let load_lo = plain(load(low_word_of(c.arg)));
    match c.op {
        Compare::Eq => vec![
            load_hi,
            branch(libc::BPF_JEQ, hi, Next, Fail),
            load_lo,
            branch(libc::BPF_JEQ, lo, Next, Fail),
        ],
        Compare::Ne => vec![
            load_hi,
            // Another high word: not equal, holds.
            branch(libc::BPF_JEQ, hi, Next, Skip(2)),
            load_lo,
            branch(libc::BPF_JEQ, lo, Fail, Next),
        ],
        Compare::MaskedEq(mask) => vec![
            load_hi,
            plain(statement(
                libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
                (mask >> 32) as u32,
            )),
            branch(libc::BPF_JEQ, hi, Next, Fail),
            load_lo,
            plain(statement(
                libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
                mask as u32,
            )),
            branch(libc::BPF_JEQ, lo, Next, Fail),
        ],
        // Greater: a greater high word holds; an equal one leaves it to the low words.
        Compare::Gt | Compare::Ge => {
            let low_op = if c.op == Compare::Gt {
                libc::BPF_JGT
            } else {
                libc::BPF_JGE
            };
            vec![
                load_hi,
                branch(libc::BPF_JGT, hi, Skip(3), Next),
                branch(libc::BPF_JEQ, hi, Next, Fail),
                load_lo,
                branch(low_op, lo, Next, Fail),
            ]
        }
        // Less: a smaller high word holds; an equal one leaves it to the low words.
        Compare::Lt | Compare::Le => {
            let low_op = if c.op == Compare::Lt {
                libc::BPF_JGE
            } else {
                libc::BPF_JGT
            };
            vec![
                load_hi,
                branch(libc::BPF_JGE, hi, Next, Skip(3)),
                branch(libc::BPF_JEQ, hi, Next, Fail),
                load_lo,
                branch(low_op, lo, Fail, Next),
            ]
        }
    }
}

/// One case's block: its conditions, then its answer; a failed condition jumps past it.
fn case_code(case: &Case) -> Result<Vec<Instruction>, String> {
    let mut pending = Vec::new();
    for c in &case.conditions {
        if c.arg > 5 {
            return Err(format!(
                "seccomp condition on argument {}: there are six",
                c.arg
            ));
        }
        pending.extend(condition_code(c));
    }
    pending.push(plain(ret(case.action)));
    let end = pending.len();
    let resolve = |at: usize, target: Target| -> Result<u8, String> {
        match target {
            Target::Next => Ok(0),
            Target::Skip(n) => Ok(n),
            Target::Fail => u8::try_from(end - at - 1)
                .map_err(|_| "a seccomp rule with too many conditions".to_owned()),
        }
    };
    pending
        .iter()
        .enumerate()
        .map(|(at, p)| {
            let mut insn = p.insn;
            insn.jt = resolve(at, p.jt)?;
            insn.jf = resolve(at, p.jf)?;
            Ok(insn)
        })
        .collect()
}

/// A range of call numbers, from `first` up to the next range's first, and its answer.
struct Range<'a> {
    first: u32,
    rule: &'a Rule,
}

impl Policy {
    /// The program, or why it cannot be built (an argument out of range, too long a program).
    pub fn compile(&self) -> Result<Vec<Instruction>, String> {
        let default_rule = Rule::Always(self.default);
        let ranges = self.ranges(&default_rule);
        let mut program = vec![
            load(ARCH_OFFSET),
            jump(libc::BPF_JEQ, self.arch, 1, 0),
            ret(Action::KillProcess),
            load(NR_OFFSET),
        ];
        program.extend(self.search(&ranges)?);
        if program.len() > MAX_INSTRUCTIONS {
            return Err(format!(
                "seccomp filter of {} instructions, more than the kernel's {MAX_INSTRUCTIONS}",
                program.len()
            ));
        }
        Ok(program)
    }

    /// The call numbers cut into ranges of one answer each, from 0 up; neighbours that answer
    /// alike without looking at arguments are one range.
    fn ranges<'a>(&'a self, default_rule: &'a Rule) -> Vec<Range<'a>> {
        let mut ranges: Vec<Range<'a>> = Vec::new();
        let mut push = |first: u32, rule: &'a Rule| match ranges.last() {
            Some(last) if last.rule == rule && matches!(rule, Rule::Always(_)) => {}
            _ => ranges.push(Range { first, rule }),
        };
        let mut next = 0u32;
        for (nr, rule) in &self.calls {
            if *nr > next {
                push(next, default_rule);
            }
            push(*nr, rule);
            next = match nr.checked_add(1) {
                Some(n) => n,
                None => return ranges,
            };
        }
        push(next, default_rule);
        ranges
    }

    /// A block that leaves with the answer of the call number in the accumulator, which lies in
    /// `ranges` (from `ranges[0].first` to the end of the last range).
    fn search(&self, ranges: &[Range<'_>]) -> Result<Vec<Instruction>, String> {
        if let [only] = ranges {
            return self.answer(only.rule);
        }
        let middle = ranges.len() / 2;
        let below = self.search(&ranges[..middle])?;
        let above = self.search(&ranges[middle..])?;
        let pivot = ranges[middle].first;
        let mut block = Vec::with_capacity(below.len() + above.len() + 2);
        match u8::try_from(below.len()) {
            // `jge` jumps over the lower half; a conditional jump reaches 255 instructions.
            Ok(skip) => block.push(jump(libc::BPF_JGE, pivot, skip, 0)),
            // Farther than that, through an unconditional jump, which reaches 2^32.
            Err(_) => {
                block.push(jump(libc::BPF_JGE, pivot, 0, 1));
                block.push(jump(libc::BPF_JA, below.len() as u32, 0, 0));
            }
        }
        block.extend(below);
        block.extend(above);
        Ok(block)
    }

    /// A block that leaves with `rule`'s answer.
    fn answer(&self, rule: &Rule) -> Result<Vec<Instruction>, String> {
        let check = match rule {
            Rule::Always(action) => return Ok(vec![ret(*action)]),
            Rule::Allow(check) => check,
            Rule::Cases(cases) => {
                let mut block = Vec::new();
                for case in cases {
                    block.extend(case_code(case)?);
                }
                block.push(ret(self.default));
                return Ok(block);
            }
        };
        if check.arg() > 5 {
            return Err(format!(
                "seccomp check of argument {}: there are six",
                check.arg()
            ));
        }
        let deny = ret(self.default);
        let allow = ret(Action::Allow);
        let mut block = vec![load(low_word_of(check.arg()))];
        match check {
            Check::BitsClear { mask, .. } => {
                block.extend([jump(libc::BPF_JSET, *mask, 0, 1), deny, allow]);
            }
            Check::BitsSet { mask, .. } => {
                block.extend([
                    statement(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, *mask),
                    jump(libc::BPF_JEQ, *mask, 1, 0),
                    deny,
                    allow,
                ]);
            }
            Check::OneOf { values, .. } => {
                let count = values.len();
                if count > 250 {
                    return Err(format!("seccomp check of {count} values: at most 250"));
                }
                for (i, value) in values.iter().enumerate() {
                    // To `allow`, past the remaining comparisons and `deny`.
                    block.push(jump(libc::BPF_JEQ, *value, (count - i) as u8, 0));
                }
                block.extend([deny, allow]);
            }
        }
        Ok(block)
    }
}
