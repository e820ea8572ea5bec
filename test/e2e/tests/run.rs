//! `ctr run` of wasm programs under wasmcell against a real containerd.

use std::time::Duration;

use wasmcell_e2e::{fixtures, Containerd};

#[test]
fn wat_module_prints_and_exits_zero() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/hello:latest", "hello.wasm", fixtures::HELLO);
    let r = c.run_wasm("wasmcell.test/hello:latest", "hello", &[]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{r:?}"
    );
}

#[test]
fn c_program_gets_args_and_env_and_exit_codes() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/probe:latest", "probe.wasm", fixtures::PROBE);
    let img = "wasmcell.test/probe:latest";
    let r = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        wasmcell_e2e::RUNTIME,
        "--platform",
        "wasi/wasm",
        "--env",
        "GREETING=hi there",
        img,
        "args-env",
        "/probe.wasm",
        "env",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("env:GREETING=hi there\n"), "{r:?}");
    assert!(
        !r.stdout.contains("WASMCELL_CACHE_DIR"),
        "the shim's env leaked: {r:?}"
    );

    let r = c.run_wasm(img, "args", &["/probe.wasm", "args", "a", "b c"]);
    assert_eq!(
        r.stdout, "arg[0]=/probe.wasm\narg[1]=args\narg[2]=a\narg[3]=b c\n",
        "{r:?}"
    );

    let r = c.run_wasm(img, "exit", &["/probe.wasm", "exit", "42"]);
    assert_eq!(r.code, 42, "proc_exit(42): {r:?}");
    let r = c.run_wasm(img, "ret", &["/probe.wasm", "return", "3"]);
    assert_eq!(r.code, 3, "main returning 3: {r:?}");
}

#[test]
fn proc_exit_and_trap_statuses() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/exit7:latest", "exit7.wasm", fixtures::EXIT7);
    c.import_wasm("wasmcell.test/trap:latest", "trap.wasm", fixtures::TRAP);
    let r = c.run_wasm("wasmcell.test/exit7:latest", "exit7", &[]);
    assert_eq!(r.code, 7, "{r:?}");
    let r = c.run_wasm("wasmcell.test/trap:latest", "trap", &[]);
    assert_eq!(r.code, 134, "{r:?}");
    assert!(
        r.stderr.contains("wasm trap"),
        "trap message on stderr: {r:?}"
    );
    assert!(r.stderr.contains("unreachable"), "{r:?}");
    assert!(
        !r.stderr.contains("WASMTIME_BACKTRACE_DETAILS"),
        "no hint at an environment variable that configures nothing: {r:?}"
    );
}

#[test]
fn component_runs_wasi_cli_run() {
    let c = Containerd::start();
    c.import_wasm(
        "wasmcell.test/component:latest",
        "probe.wasm",
        fixtures::PROBE_COMPONENT,
    );
    let r = c.run_wasm(
        "wasmcell.test/component:latest",
        "comp",
        &["/probe.wasm", "hello"],
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "hello from C\n"), "{r:?}");
    // WASI 0.2's `wasi:cli/exit` carries ok/err only: a non-zero exit is status 1.
    let r = c.run_wasm(
        "wasmcell.test/component:latest",
        "comp-exit",
        &["/probe.wasm", "exit", "5"],
    );
    assert_eq!(r.code, 1, "{r:?}");
}

#[test]
fn stdin_reaches_the_guest() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/probe:latest", "probe.wasm", fixtures::PROBE);
    let r = c.ctr_with_stdin(
        &[
            "run",
            "--rm",
            "--runtime",
            wasmcell_e2e::RUNTIME,
            "--platform",
            "wasi/wasm",
            "wasmcell.test/probe:latest",
            "stdin",
            "/probe.wasm",
            "stdin",
        ],
        Some(b"line one\nline two\n"),
    );
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "line one\nline two\n<eof>\n"),
        "{r:?}"
    );
}

#[test]
fn kill_ends_sleeping_and_busy_guests() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/probe:latest", "probe.wasm", fixtures::PROBE);
    c.import_wasm("wasmcell.test/busy:latest", "busy.wasm", fixtures::BUSY);
    let events = c.events();
    for (id, image, args, signal, want) in [
        (
            "sleep-term",
            "wasmcell.test/probe:latest",
            vec!["/probe.wasm", "sleep", "600"],
            "SIGTERM",
            143,
        ),
        (
            "sleep-kill",
            "wasmcell.test/probe:latest",
            vec!["/probe.wasm", "sleep", "600"],
            "SIGKILL",
            137,
        ),
        (
            "stdin-term",
            "wasmcell.test/probe:latest",
            vec!["/probe.wasm", "stdin"],
            "SIGTERM",
            143,
        ),
        (
            "busy-term",
            "wasmcell.test/busy:latest",
            vec![],
            "SIGTERM",
            143,
        ),
        (
            "busy-kill",
            "wasmcell.test/busy:latest",
            vec![],
            "SIGKILL",
            137,
        ),
    ] {
        let mut a = vec![
            "run",
            "-d",
            "--runtime",
            wasmcell_e2e::RUNTIME,
            "--platform",
            "wasi/wasm",
            image,
            id,
        ];
        a.extend(args);
        let r = c.ctr(&a);
        assert_eq!(r.code, 0, "{id}: {r:?}");
        let started = std::time::Instant::now();
        let r = c.ctr(&["task", "kill", "--signal", signal, id]);
        assert_eq!(r.code, 0, "{id}: kill: {r:?}");
        let exit = events
            .wait_for("/tasks/exit", id, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{id}: no TaskExit within 5 s"));
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "{id} took {elapsed:?} to exit"
        );
        assert_eq!(exit.exit_status(), want, "{id}: TaskExit status");
        let r = c.ctr(&["task", "delete", id]);
        assert_eq!(r.code, 0, "{id}: {r:?}");
        let r = c.ctr(&["container", "delete", id]);
        assert_eq!(r.code, 0, "{id}: {r:?}");
    }
}
