//! Terminals (`process.terminal`): `ctr run -t` and `ctr task exec -t` of wasm programs, which
//! get the slave side of a terminal the shim makes as their stdin, stdout and stderr (WASI's
//! `isatty` says so), and of native programs, whose terminal runc makes and sends back over a
//! console socket. The test is the user at the keyboard: `ctr` runs in a terminal the test
//! holds, and the test types and reads there. Window size changes (SIGWINCH to `ctr`, which
//! sends ResizePty) reach the process's terminal.

use std::time::Duration;

use wasmcell_e2e::terminal::window;
use wasmcell_e2e::{fixtures, workload_component, Containerd, RUNTIME};

const PROBE: &str = "wasmcell.test/probe:latest";
const REPL: &str = "wasmcell.test/python-repl:latest";
const BUSYBOX: &str = "wasmcell.test/busybox:latest";
/// How long a prompt may take to show: the first start of the REPL compiles CPython (about
/// 19 MiB of wasm).
const PROMPT: Duration = Duration::from_secs(120);
const LINE: Duration = Duration::from_secs(20);

/// `ctr run -t` of a wasm image under wasmcell.
fn run_t(image: &str, id: &str, args: &[&str]) -> Vec<String> {
    let mut a = vec!["run", "-t", "--rm", "--runtime", RUNTIME];
    a.extend(["--platform", "wasi/wasm", image, id]);
    a.extend_from_slice(args);
    a.into_iter().map(str::to_owned).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The window size of the terminal that process `pid` has as its stdout, opened through
/// `/proc` as the process sees it.
fn window_of(pid: i32) -> Option<(u16, u16)> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .open(format!("/proc/{pid}/fd/1"))
        .ok()?;
    window(&tty).ok()
}

#[test]
fn ctr_run_t_gives_a_wasm_guest_a_terminal_it_reads_and_writes() {
    let c = Containerd::start();
    c.import_wasm(PROBE, "probe.wasm", fixtures::PROBE);
    let mut t = c.ctr_in_terminal(&strs(&run_t(PROBE, "tty", &["/probe.wasm", "tty"])), 80, 24);
    let at = t.expect("isatty: 1 1 1", LINE).unwrap_or_else(|shown| {
        panic!(
            "stdin, stdout and stderr are a terminal: {shown:?}\n{}",
            c.log()
        )
    });
    t.type_in("typed at the keyboard\r");
    // The terminal echoes what is typed, then the guest prints what it read.
    t.expect_after(at, "got: typed at the keyboard", LINE)
        .unwrap_or_else(|shown| panic!("the guest read the line: {shown:?}\n{}", c.log()));
    assert_eq!(t.wait(LINE), Some(0), "ctr's exit status: {:?}", t.shown());
    // The terminal's output is complete before the exit is reported.
    assert!(
        t.shown().ends_with("got: typed at the keyboard\n"),
        "{:?}",
        t.shown()
    );
    assert_eq!(c.bundles(), Vec::<String>::new());
}

#[test]
fn ctr_run_t_runs_python_at_its_prompt_and_window_resizes_reach_its_terminal() {
    let c = Containerd::start();
    c.import_wasm(REPL, "repl.wasm", &workload_component("python-repl"));
    let mut t = c.ctr_in_terminal(&strs(&run_t(REPL, "repl", &[])), 100, 30);
    let at = t
        .expect(">>> ", PROMPT)
        .unwrap_or_else(|shown| panic!("Python's prompt: {shown:?}\n{}", c.log()));
    t.type_in("print(6*7)\r");
    let at = t
        .expect_after(at, "42\n>>> ", LINE)
        .unwrap_or_else(|shown| panic!("42 at the next prompt: {shown:?}\n{}", c.log()));
    t.type_in("import sys; sys.stdin.isatty(), sys.stdout.isatty()\r");
    let at = t
        .expect_after(at, "(True, True)", LINE)
        .unwrap_or_else(|shown| panic!("Python sees a terminal: {shown:?}"));

    // The guest's terminal has the window size of the user's, and follows it.
    let guest = c.guest_pids(&["repl".to_owned()]);
    assert_eq!(guest.len(), 1, "one guest: {guest:?}");
    assert!(
        c.wait_until(Duration::from_secs(10), || window_of(guest[0])
            == Some((100, 30))),
        "the first window size: {:?}",
        window_of(guest[0])
    );
    t.resize(132, 43);
    assert!(
        c.wait_until(Duration::from_secs(10), || window_of(guest[0])
            == Some((132, 43))),
        "the resized window: {:?}\n{}",
        window_of(guest[0]),
        c.log()
    );

    t.type_in("exit()\r");
    assert_eq!(t.wait(LINE), Some(0), "ctr's exit status: {:?}", t.shown());
    assert!(t.shown()[at..].contains("exit()"), "{:?}", t.shown());
}

#[test]
fn ctr_task_exec_t_gives_wasm_and_native_execs_a_terminal_and_follows_resizes() {
    let c = Containerd::start();
    c.import_wasm(PROBE, "probe.wasm", fixtures::PROBE);
    c.import_busybox(BUSYBOX);
    let r = c.run_detached(&[], PROBE, "box", &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");

    // A wasm exec with a terminal, beside the container's own process, which has none.
    let exec = [
        "task",
        "exec",
        "-t",
        "--exec-id",
        "tty",
        "box",
        "/probe.wasm",
        "tty",
    ];
    let mut t = c.ctr_in_terminal(&exec, 90, 20);
    let at = t
        .expect("isatty: 1 1 1", LINE)
        .unwrap_or_else(|shown| panic!("a terminal in the exec: {shown:?}\n{}", c.log()));
    t.type_in("exec line\r");
    t.expect_after(at, "got: exec line", LINE)
        .unwrap_or_else(|shown| panic!("the exec read its line: {shown:?}"));
    assert_eq!(t.wait(LINE), Some(0), "{:?}", t.shown());

    // A native exec: runc makes the terminal, the shim relays it and resizes it.
    let r = c.run_detached(&[], BUSYBOX, "native", &["/bin/busybox", "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");
    let exec = [
        "task",
        "exec",
        "-t",
        "--exec-id",
        "sh",
        "native",
        "/bin/busybox",
        "sh",
    ];
    let mut t = c.ctr_in_terminal(&exec, 90, 20);
    let at = t
        .expect("/ # ", LINE)
        .unwrap_or_else(|shown| panic!("the shell's prompt: {shown:?}\n{}", c.log()));
    t.type_in("tty\r");
    let at = t
        .expect_after(at, "/dev/pts/", LINE)
        .unwrap_or_else(|shown| panic!("a terminal in the native exec: {shown:?}"));
    // ctr sends the window size once the exec has started (ResizePty), and again on each
    // SIGWINCH; the shell sees it.
    let sees = |t: &mut wasmcell_e2e::terminal::Terminal, size: &str, from: usize| {
        c.wait_until(Duration::from_secs(10), || {
            t.type_in("stty size\r");
            std::thread::sleep(Duration::from_millis(200));
            t.shown()[from..].contains(size)
        })
    };
    assert!(
        sees(&mut t, "20 90", at),
        "the first window: {:?}",
        t.shown()
    );
    let at = t.shown().len();
    t.resize(120, 40);
    assert!(
        sees(&mut t, "40 120", at),
        "the resized window: {:?}",
        t.shown()
    );
    t.type_in("exit 5\r");
    assert_eq!(t.wait(LINE), Some(5), "{:?}", t.shown());
}

#[test]
fn ctr_run_t_of_a_native_container_gets_the_terminal_runc_makes() {
    let c = Containerd::start();
    c.import_busybox(BUSYBOX);
    let args = [
        "run",
        "-t",
        "--rm",
        "--runtime",
        RUNTIME,
        BUSYBOX,
        "native-tty",
        "/bin/busybox",
        "sh",
        "-c",
        "read line; echo \"read: $line\"; tty; exit 4",
    ];
    let mut t = c.ctr_in_terminal(&args, 80, 24);
    // Typed before the shell reads: the terminal keeps it.
    t.type_in("from the keyboard\r");
    t.expect("read: from the keyboard\n/dev/pts/", LINE)
        .unwrap_or_else(|shown| panic!("the container's terminal: {shown:?}\n{}", c.log()));
    assert_eq!(t.wait(LINE), Some(4), "{:?}", t.shown());
    // The console socket runc sent the terminal over is gone with it (another test's may
    // exist for the moment its `runc` runs).
    let console_dirs = || -> Vec<String> {
        std::fs::read_dir(std::env::temp_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("wasmcell-console-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        c.wait_until(Duration::from_secs(10), || console_dirs().is_empty()),
        "console socket directories left: {:?}",
        console_dirs()
    );
}

#[test]
fn ctr_run_t_of_a_wasm_container_under_the_runc_fallback_gets_runcs_terminal() {
    // A user namespace with id mappings sends a wasm container to runc (tests/fallback.rs).
    const UIDMAP: &str = "0:100000:65536";
    let c = Containerd::start();
    c.import_wasm(PROBE, "probe.wasm", fixtures::PROBE);
    let mut args = vec!["run", "-t", "--rm", "--uidmap", UIDMAP, "--gidmap", UIDMAP];
    args.extend(["--runtime", RUNTIME, "--platform", "wasi/wasm"]);
    args.extend([PROBE, "fb-tty", "/probe.wasm", "tty"]);
    let mut t = c.ctr_in_terminal(&args, 80, 24);
    let at = t
        .expect("isatty: 1 1 1", LINE)
        .unwrap_or_else(|shown| panic!("a terminal under runc: {shown:?}\n{}", c.log()));
    t.type_in("under runc\r");
    t.expect_after(at, "got: under runc", LINE)
        .unwrap_or_else(|shown| panic!("the guest read the line: {shown:?}"));
    assert_eq!(t.wait(LINE), Some(0), "{:?}", t.shown());
    assert!(
        c.log().contains("task fb-tty: runs under runc"),
        "{}",
        c.log()
    );
}
