//! The shim binary's own command line, run the way containerd and people run it.
#![allow(clippy::unwrap_used)] // a test helper: a failed call is a failed test

use std::io::Write;
use std::process::{Command, Stdio};

use wasmcell_e2e::bin_dir;

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs the shim binary with `args`, `stdin` as its input and no containerd environment.
fn shim(args: &[&str], stdin: &[u8]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin_dir().join("containerd-shim-wasmcell-v1"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("TTRPC_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let r = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !r.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        r.stderr
    );
    r
}

#[test]
fn version_flag() {
    let r = shim(&["-v"], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = String::from_utf8(r.stdout).unwrap();
    assert!(text.starts_with("containerd-shim-wasmcell-v1:\n"), "{text}");
    assert!(
        text.contains(concat!("Version:  ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("io.containerd.wasmcell.v1"), "{text}");
}

#[test]
fn info_flag_answers_a_runtime_info() {
    let r = shim(&["-info"], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    // RuntimeInfo field 1 (name): tag 0x0a, length, then the runtime type.
    let name = b"io.containerd.wasmcell.v1";
    assert_eq!(r.stdout[0], 0x0a);
    assert_eq!(usize::from(r.stdout[1]), name.len());
    assert_eq!(&r.stdout[2..2 + name.len()], name);

    // The runtime options containerd writes on stdin (an Any) come back in the answer.
    let type_url = b"runtimeoptions.v1.Options";
    let mut any = vec![0x0a, type_url.len() as u8];
    any.extend_from_slice(type_url);
    let r = shim(&["-info"], &any);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.windows(type_url.len()).any(|w| w == type_url));

    let r = shim(&["-info"], b"\xff\xff\xff garbage");
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("stdin is not a protobuf Any"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_command_lines_fail_with_a_message() {
    for (args, says) in [
        (&["-bogus"][..], "flag provided but not defined: -bogus"),
        (&["-namespace"][..], "flag needs an argument: -namespace"),
        (
            &["-namespace", "default", "frobnicate"][..],
            "unknown action \"frobnicate\"",
        ),
        (&["start"][..], "missing -namespace"),
        (&["-namespace", "default", "start"][..], "missing -id"),
        (
            &["-namespace", "default", "-id", "x", "delete"][..],
            "missing -address",
        ),
        (
            &[
                "-namespace",
                "default",
                "-id",
                "x",
                "-address",
                "/run/x.sock",
                "start",
            ][..],
            "TTRPC_ADDRESS is not set",
        ),
    ] {
        let r = shim(args, b"");
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_shim_is_linked_statically_without_pie_unless_asked() {
    // crates/shim/build.rs: relocating a PIE build at each exec dirties pages of every process.
    // Makefile: a static binary skips the dynamic loader at each of the two execs per task.
    let elf = std::fs::read(bin_dir().join("containerd-shim-wasmcell-v1")).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    let e_type = u16_at(16);
    let pie_asked = std::env::var_os("WASMCELL_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    let (want, name) = if pie_asked {
        (3, "ET_DYN")
    } else {
        (2, "ET_EXEC")
    };
    assert_eq!(e_type, want, "the shim binary's ELF type should be {name}");
    // A program header of type PT_INTERP names the dynamic loader; a static binary has none.
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    });
    assert_eq!(
        interp,
        pie_asked,
        "the shim binary should be {} (build it with `make build`, whose flags link it \
         statically)",
        if pie_asked {
            "dynamically linked"
        } else {
            "statically linked"
        }
    );
}
