//! Per-workload settings from pod and container annotations and from the container's env,
//! against a real containerd: what each source sets reaches the engine, the first found wins,
//! a bad key or value fails Create with a message naming it (and the pod's shim keeps
//! serving), and settings that change compiled code have their own compile cache entries.
#![allow(clippy::unwrap_used)]

use wasmcell_e2e::{fixtures, Containerd, Ran};

const SIMD: &str = "wasmcell.test/simd:latest";
const HELLO: &str = "wasmcell.test/hello:latest";
const HTTP: &str = "wasmcell.test/http-handler:latest";
/// Every container of these tests in one pod: one shim serves them all.
const POD: &str = "--annotation=io.kubernetes.cri.sandbox-id=settings-pod";
const APP: &str = "--annotation=io.kubernetes.cri.container-name=app";

fn run(c: &Containerd, flags: &[&str], image: &str, id: &str) -> Ran {
    let mut all = vec![POD];
    all.extend_from_slice(flags);
    c.run_wasm_with(&all, image, id, &[])
}

/// A Create that failed with a message containing each of `says`.
#[track_caller]
fn refused(r: &Ran, says: &[&str]) {
    assert_ne!(r.code, 0, "{r:?}");
    for s in says {
        assert!(r.stderr.contains(s), "says {s:?}: {r:?}");
    }
}

#[test]
fn settings_reach_the_engine_and_bad_ones_fail_create() {
    let c = Containerd::start();
    c.import_wasm(SIMD, "simd.wasm", fixtures::SIMD);
    c.import_wasm(HELLO, "hello.wasm", fixtures::HELLO);
    c.import_wasm(HTTP, "http_handler.wasm", fixtures::HTTP_HANDLER);

    assert_eq!(
        run(&c, &[], SIMD, "simd-on").code,
        0,
        "SIMD is on by default"
    );
    let shims = c.shim_pids();
    // Off by the pod's annotation, then by the env: the module no longer validates.
    let off = [
        "--annotation",
        "wasmcell.dev/wasm-features=-relaxed-simd,-simd",
    ];
    refused(&run(&c, &off, SIMD, "simd-off-annotation"), &["SIMD"]);
    refused(
        &run(
            &c,
            &["--env", "WASMCELL_WASM_FEATURES=-relaxed-simd,-simd"],
            SIMD,
            "simd-off-env",
        ),
        &["SIMD"],
    );
    // The container's annotation wins over the pod's, the pod's over the env.
    let r = run(
        &c,
        &[
            APP,
            "--annotation",
            "wasmcell.dev/wasm-features=-relaxed-simd,-simd",
            "--annotation",
            "app.wasmcell.dev/wasm-features=simd",
        ],
        SIMD,
        "simd-container-wins",
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(
        &c,
        &[
            "--env",
            "WASMCELL_WASM_FEATURES=-relaxed-simd,-simd",
            "--annotation",
            "wasmcell.dev/wasm-features=simd",
        ],
        SIMD,
        "simd-pod-wins",
    );
    assert_eq!(r.code, 0, "{r:?}");
    // Another container's key is not this one's.
    let r = run(
        &c,
        &[
            APP,
            "--annotation",
            "sidecar.wasmcell.dev/wasm-features=-relaxed-simd,-simd",
        ],
        SIMD,
        "simd-other-container",
    );
    assert_eq!(r.code, 0, "{r:?}");

    // Bad keys and values: named, with what is allowed.
    refused(
        &run(
            &c,
            &["--annotation", "wasmcell.dev/wasm-feature=gc"],
            HELLO,
            "bad-key",
        ),
        &[
            "unknown setting annotation \"wasmcell.dev/wasm-feature\"",
            "wasm-features",
        ],
    );
    refused(
        &run(
            &c,
            &["--annotation", "wasmcell.dev/http-timeout-ms=soon"],
            HELLO,
            "bad-value",
        ),
        &[
            "annotation wasmcell.dev/http-timeout-ms=\"soon\"",
            "a whole number of milliseconds from 1 to 86400000",
        ],
    );
    refused(
        &run(&c, &["--env", "WASMCELL_MEMORY_MAX=lots"], HELLO, "bad-env"),
        &["env WASMCELL_MEMORY_MAX=\"lots\"", "64Ki to 1Ti"],
    );
    refused(
        &run(
            &c,
            &[
                "--memory-limit",
                "33554432",
                "--annotation",
                "wasmcell.dev/memory-max=64Mi",
            ],
            HELLO,
            "above-limit",
        ),
        &[
            "memory-max=64Mi",
            "more than the container's memory limit (32Mi)",
        ],
    );
    refused(
        &run(
            &c,
            &["--annotation", "wasmcell.dev/wasm-features=threads"],
            HELLO,
            "threads",
        ),
        &["setting annotation wasmcell.dev/wasm-features is refused by wasmtime"],
    );
    refused(
        &run(
            &c,
            &["--annotation", "wasmcell.dev/cpu-deadline-ms=100"],
            HTTP,
            "served-deadline",
        ),
        &["applies to commands only"],
    );

    // The pod's shim served every refusal and still runs its containers.
    assert_eq!(c.shim_pids(), shims, "the pod's shim stayed up");
    assert_eq!(run(&c, &[], HELLO, "hello-after").code, 0);
}

#[test]
fn settings_that_change_compiled_code_have_their_own_cache_entries() {
    let c = Containerd::start();
    c.import_wasm(HELLO, "hello.wasm", fixtures::HELLO);
    let rounds: &[(&str, &[&str], &str)] = &[
        ("plain-1", &[], "compiled"),
        ("plain-2", &[], "cache-hit"),
        (
            "wide-1",
            &["--annotation", "wasmcell.dev/wasm-features=wide-arithmetic"],
            "compiled",
        ),
        (
            "wide-2",
            &["--env", "WASMCELL_WASM_FEATURES=wide-arithmetic"],
            "cache-hit",
        ),
        (
            "deadline-1",
            &["--annotation", "wasmcell.dev/cpu-deadline-ms=60000"],
            "compiled",
        ),
        (
            "deadline-2",
            &["--annotation", "wasmcell.dev/cpu-deadline-ms=5000"],
            "cache-hit",
        ),
        // Not the code's business: the default entry.
        (
            "memory-max",
            &["--annotation", "wasmcell.dev/memory-max=16Mi"],
            "cache-hit",
        ),
    ];
    for (id, flags, want) in rounds {
        let r = run(&c, flags, HELLO, id);
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, "hello from wasm\n"),
            "{id}: {r:?}"
        );
        assert_eq!(c.prepared(id), *want, "{id}");
    }
}
