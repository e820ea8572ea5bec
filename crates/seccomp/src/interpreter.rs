//! The part of classic BPF the compiler emits, run as the kernel runs it, so tests (and
//! the fuzz target `fuzz/fuzz_targets/seccomp_policy.rs`) can ask a compiled program for
//! its answer to any call.

use crate::bpf::Instruction;

/// The program's return value for a call, or why the program is not one the kernel would
/// run (a jump out of it, an instruction this module does not emit, no `ret` at the end).
pub fn run(program: &[Instruction], arch: u32, nr: u32, args: &[u64; 6]) -> Result<u32, String> {
    trace(program, arch, nr, args).map(|(value, _)| value)
}

/// [`run`]'s return value and the number of instructions it ran.
pub fn trace(
    program: &[Instruction],
    arch: u32,
    nr: u32,
    args: &[u64; 6],
) -> Result<(u32, usize), String> {
    let mut data = Vec::with_capacity(64);
    data.extend(nr.to_ne_bytes());
    data.extend(arch.to_ne_bytes());
    data.extend(0u64.to_ne_bytes());
    for arg in args {
        data.extend(arg.to_ne_bytes());
    }
    let mut accumulator = 0u32;
    let mut pc = 0usize;
    let mut executed = 0usize;
    loop {
        executed += 1;
        let insn = program
            .get(pc)
            .ok_or(format!("fell off the program at {pc}"))?;
        let code = u32::from(insn.code);
        pc += 1;
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                let at = insn.k as usize;
                let word = data.get(at..at + 4).ok_or(format!("load at {at}"))?;
                accumulator = u32::from_ne_bytes(word.try_into().expect("four bytes"));
            }
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => accumulator &= insn.k,
            c if c == libc::BPF_RET | libc::BPF_K => return Ok((insn.k, executed)),
            c if c == libc::BPF_JMP | libc::BPF_JA => pc += insn.k as usize,
            c if c & 0x07 == libc::BPF_JMP => {
                let taken = match c & 0xf0 {
                    op if op == libc::BPF_JEQ => accumulator == insn.k,
                    op if op == libc::BPF_JGE => accumulator >= insn.k,
                    op if op == libc::BPF_JGT => accumulator > insn.k,
                    op if op == libc::BPF_JSET => accumulator & insn.k != 0,
                    op => return Err(format!("jump op {op:#x}")),
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            c => return Err(format!("instruction {c:#x}")),
        }
    }
}
