//! Env isolation: a container's env goes to its guest and nowhere else. Variables that
//! would steer the host side if they leaked (`RUST_LOG`, `WASMTIME_*`, `LD_PRELOAD`) change
//! nothing in the shim or the cell; the guest sees exactly the spec's env.

use wasmcell_e2e::{fixtures, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";

const STEERING: [&str; 5] = [
    "--env",
    "RUST_LOG=trace",
    "--env",
    "WASMTIME_BACKTRACE_DETAILS=1",
    "--env=LD_PRELOAD=/no/such/preload.so",
];

fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .expect("environ")
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn container_env_reaches_the_guest_only() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);

    let r = c.run_wasm_with(&STEERING, IMG, "env-guest", &["/probe.wasm", "env"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr, "", "no loader or runtime noise: {r:?}");
    let mut seen: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("env:"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen.len(), 4, "the spec's env and nothing else: {seen:?}");
    assert!(seen[0].starts_with("LD_PRELOAD=/no/such/preload.so"));
    assert!(seen[1].starts_with("PATH="), "{seen:?}");
    assert_eq!(seen[2], "RUST_LOG=trace");
    assert_eq!(seen[3], "WASMTIME_BACKTRACE_DETAILS=1");

    // The runtime's behaviour does not follow the guest's env: a trap reads the same.
    let plain = c.run_wasm(IMG, "env-trap-plain", &["/probe.wasm", "trap"]);
    let steered = c.run_wasm_with(&STEERING, IMG, "env-trap", &["/probe.wasm", "trap"]);
    assert_eq!(plain.code, 134, "{plain:?}");
    assert_eq!(
        (steered.code, &steered.stderr),
        (plain.code, &plain.stderr),
        "same trap report with WASMTIME_BACKTRACE_DETAILS in the container env"
    );

    // The host side's own environment holds none of it.
    let r = c.run_detached(&STEERING, IMG, "env-held", &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");
    let cells = c.cell_pids(&["env-held".to_owned()]);
    assert_eq!(cells.len(), 1);
    assert_eq!(
        environ(cells[0]),
        Vec::<String>::new(),
        "the cell's env is empty"
    );
    for shim in c.shim_pids() {
        let env = environ(shim);
        for leaked in [
            "RUST_LOG=trace",
            "WASMTIME_BACKTRACE_DETAILS=1",
            "LD_PRELOAD=",
        ] {
            assert!(
                !env.iter().any(|v| v.starts_with(leaked)),
                "shim {shim} env has {leaked}: {env:?}"
            );
        }
    }
    let log = c.log();
    assert!(
        !log.contains("level=trace") && !log.contains("level=debug"),
        "RUST_LOG in the container did not raise the shim's log level"
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "KILL", "env-held"]).code, 0);
}
