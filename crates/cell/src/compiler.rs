//! Compiling a program in a child that can do nothing else.
//!
//! Compiling parses and transforms wasm from an image, which may be hostile, with a large
//! compiler. The child that does it drops to the `nobody` user with no groups and no
//! capabilities, sets `no_new_privs`, and installs a seccomp filter that allows memory, threads
//! and writes to one pipe (`crate::seccomp::install_compiler`): it can open no file, so it
//! cannot touch the compile cache, and it cannot signal, trace or start a process. It hands
//! the compiled bytes back through the pipe; its parent, which hashed the input itself, writes
//! them under that hash (`wasmcell_engine::CompileCache::load`).
//!
//! The child also keeps the compiler's worker threads out of the cell, which must stay
//! single-threaded until it has locked itself down. It dies with its parent
//! (`PR_SET_PDEATHSIG`, set again after the user change clears it), so a cell killed at the
//! prepare deadline takes its compiler along.

use std::fs::File;
use std::io::{PipeReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{Gid, Uid};
use wasmcell_engine::{Engine, Error, Result};

/// The user and group the compiler runs as (`nobody`, `nogroup`).
const NOBODY: u32 = 65534;
/// The first byte of the child's answer: the bytes that follow are the compiled program.
const COMPILED: u8 = b'c';
/// The first byte of the child's answer: the bytes that follow are an error message.
const FAILED: u8 = b'e';

/// Compiles `wasm` (named `program` in messages) in a locked-down child and returns what
/// `wasmcell_engine::precompile` returns for it.
pub fn compile_locked_down(engine: &Engine, program: &str, wasm: &[u8]) -> Result<Vec<u8>> {
    compile_locked_down_in(engine, program, wasm, None)
}

/// [`compile_locked_down`] with the child first joining the mount namespace `mount` (a
/// container's), which its parent could not join and still reach the compile cache. The
/// parent's other namespaces, PID namespace for children included, are the child's.
pub fn compile_locked_down_in(
    engine: &Engine,
    program: &str,
    wasm: &[u8],
    mount: Option<&File>,
) -> Result<Vec<u8>> {
    let io = |doing: &str, e: std::io::Error| Error::io(format!("{doing} for {program}"), e);
    let (mut answer_r, mut answer_w) =
        std::io::pipe().map_err(|e| io("make the compiler's pipe", e))?;
    // The child knows its parent is alive while this pipe has a writer: `getppid` cannot tell
    // it in a PID namespace its parent is not in.
    let (alive_r, alive_w) = std::io::pipe().map_err(|e| io("make the compiler's pipe", e))?;
    let alive_w_fd = alive_w.as_raw_fd();
    let child = crate::sys::fork_run(|| {
        // The child's copy of the writer; it leaves by `_exit`, so nothing closes it again.
        let _ = nix::unistd::close(alive_w_fd);
        let walls = mount
            .map_or(Ok(()), |ns| {
                nix::sched::setns(ns, CloneFlags::CLONE_NEWNS)
                    .map_err(|e| format!("join the container's mount namespace: {e}"))
            })
            .and_then(|()| lock_down(&alive_r, answer_w.as_raw_fd()));
        let answer = match walls {
            Ok(()) => wasmcell_engine::precompile(engine, program, wasm).map_err(|e| match e {
                Error::Compile { reason, .. } => reason,
                other => other.to_string(),
            }),
            Err(e) => Err(format!("lock down the compiler: {e}")),
        };
        let (kind, bytes) = match &answer {
            Ok(compiled) => (COMPILED, compiled.as_slice()),
            Err(message) => (FAILED, message.as_bytes()),
        };
        let written = answer_w
            .write_all(&[kind])
            .and_then(|()| answer_w.write_all(bytes));
        i32::from(written.is_err() || answer.is_err())
    })
    .map_err(|e| io("fork the compiler", e))?;
    drop(alive_r);
    drop(answer_w);
    let mut answer = Vec::new();
    let read = answer_r.read_to_end(&mut answer);
    let status = waitpid(child, None);
    drop(alive_w);
    read.map_err(|e| io("read the compiler's answer", e))?;
    let failed = |reason: String| Error::Compile {
        program: program.to_owned(),
        reason,
    };
    match (status, answer.split_first()) {
        (Ok(WaitStatus::Exited(_, 0)), Some((&COMPILED, compiled))) => Ok(compiled.to_vec()),
        (Ok(WaitStatus::Exited(..)), Some((&FAILED, message))) => {
            Err(failed(String::from_utf8_lossy(message).into_owned()))
        }
        (Ok(WaitStatus::Signaled(_, sig, _)), _) => Err(Error::CompileAborted {
            program: program.to_owned(),
            reason: format!(
                "the compiler was killed by {sig:?}: is the container's memory limit too low \
                 for compiling it? (a first start compiles in the container's cgroup; later \
                 starts load the node's compile cache)"
            ),
        }),
        (status, _) => Err(failed(format!(
            "the compiler ended without an answer ({status:?})"
        ))),
    }
}

/// The child's walls, in the order they can be raised: the parent-death signal, the user
/// change (which needs privileges and clears that signal), the signal again, `no_new_privs`,
/// the filter.
fn lock_down(alive: &PipeReader, out_fd: i32) -> std::result::Result<(), String> {
    let die_with_parent = || {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| format!("set the parent-death signal: {e}"))?;
        // The parent may have ended before the signal was set: then the pipe has no writer.
        let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => Ok(()),
            Ok(_) => Err("the parent ended".to_owned()),
            Err(e) => Err(format!("poll the parent's pipe: {e}")),
        }
    };
    die_with_parent()?;
    if nix::unistd::geteuid().is_root() {
        nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        let (gid, uid) = (Gid::from_raw(NOBODY), Uid::from_raw(NOBODY));
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
        // From root to another user: the kernel clears every capability set.
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
        die_with_parent()?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    crate::seccomp::install_compiler(out_fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_and_a_component_compile_and_garbage_is_named() {
        let engine = Engine::new().expect("engine");
        let module = wat::parse_str(r#"(module (func (export "_start")))"#).expect("wat");
        let compiled = compile_locked_down(&engine, "m.wasm", &module).expect("module");
        assert_eq!(
            wasmtime::Engine::detect_precompiled(&compiled),
            Some(wasmtime::Precompiled::Module)
        );
        let component = wat::parse_str("(component)").expect("wat");
        let compiled = compile_locked_down(&engine, "c.wasm", &component).expect("component");
        assert_eq!(
            wasmtime::Engine::detect_precompiled(&compiled),
            Some(wasmtime::Precompiled::Component)
        );
        let err = compile_locked_down(&engine, "/bad.wasm", b"\0asm\x01\0\0\0\xff")
            .expect_err("garbage")
            .to_string();
        assert!(
            err.starts_with("/bad.wasm is not valid WebAssembly"),
            "{err}"
        );
    }
}
