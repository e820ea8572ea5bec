//! `names`: one name lookup from a cell (`wasi:sockets/ip-name-lookup`, the resolve fixture)
//! against the same lookup by a native process of the same network (busybox `nslookup` under
//! runc, a process per lookup, as `getent hosts` in a sidecar would be), both against one
//! nameserver in a network namespace of the run's, with the kubelet's resolv.conf. Each name is
//! a Service's full name (`svc-N.ns.svc.cluster.local`, given with its final dot to the cell, so
//! that both sides send one question per address family: busybox's `nslookup` applies no search
//! list).
//!
//! A lookup's cost is the slope between a container that looks up one name and one that looks
//! up `1 + LOOKUPS` (the start, the same in both, cancels out): with every name different (cold:
//! nothing cached) and, for the cell, with one name again and again (warm: the resolver's cache
//! answers; busybox has none).

use std::time::Duration;

use serde_json::{json, Value};
use wasmcell_e2e::api::{Api, ContainerRequest};
use wasmcell_e2e::dns::{TestDns, Zone};
use wasmcell_e2e::image::ImageDefaults;
use wasmcell_e2e::netns::NetNs;
use wasmcell_e2e::{Containerd, RUNTIME};

use crate::progress::Progress;
use crate::stats::median;
use crate::workload::{next_id, RUNC};

/// Lookups in a long container.
const LOOKUPS: usize = 200;
/// The search list and options the kubelet writes for a pod in namespace `ns`.
const RESOLV_CONF: &str = "search ns.svc.cluster.local svc.cluster.local cluster.local\n\
                           nameserver 127.0.0.1\noptions ndots:5\n";

/// One side: an image and how to make its command line for some names.
struct Side<'a> {
    runtime: &'static str,
    image: &'static str,
    defaults: &'a ImageDefaults,
    args: fn(&[String]) -> Vec<String>,
}

fn wasm_args(names: &[String]) -> Vec<String> {
    let mut args = vec!["/resolve.wasm".to_owned()];
    args.extend(names.iter().map(|n| format!("{n}.")));
    args
}

fn busybox_args(names: &[String]) -> Vec<String> {
    let script = format!(
        "for n in {}; do out=$(busybox nslookup $n 2>&1) || {{ echo \"$out\"; exit 1; }}; done; echo looked up",
        names.join(" ")
    );
    vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script]
}

/// Where the containers run: the private containerd, its API, the network namespace with the
/// nameserver, and the resolv.conf bound into each container.
struct Place<'a> {
    c: &'a Containerd,
    api: &'a Api,
    netns: &'a NetNs,
    conf: &'a str,
}

/// Runs `side` once on `names` at `place`; how long it took.
fn run(place: &Place<'_>, side: &Side<'_>, names: &[String]) -> Duration {
    let Place {
        c,
        api,
        netns,
        conf,
    } = *place;
    let id = next_id();
    let d = side.defaults;
    let mut spec = c.default_spec(&id, &(side.args)(names), &d.env, &d.cwd);
    for ns in spec["linux"]["namespaces"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if ns["type"] == "network" {
            ns["path"] = json!(netns.path());
        }
    }
    spec["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/etc/resolv.conf", "type": "bind", "source": conf,
        "options": ["rbind", "ro"]
    }));
    let started = std::time::Instant::now();
    let r = api.run(
        ContainerRequest {
            id: &id,
            image: side.image,
            runtime: side.runtime,
            spec,
            parent: d.chain_id(),
            layers: vec![],
            plain_stdio: false,
        },
        c.dir.path(),
    );
    let took = started.elapsed();
    for ext in ["out", "err"] {
        let _ = std::fs::remove_file(c.dir.path().join(format!("{id}.{ext}")));
    }
    match r {
        Ok(f) if f.exit == 0 => took,
        Ok(f) => panic!(
            "names: {} {id}: exit {}: {} {}",
            side.runtime, f.exit, f.stdout, f.stderr
        ),
        Err(e) => panic!("names: {} {id}: {e}", side.runtime),
    }
}

/// The median per-lookup cost, in ms, of `side` over `rounds`: (long − short) / LOOKUPS.
fn slope(
    place: &Place<'_>,
    side: &Side<'_>,
    long: impl Fn(usize) -> Vec<String>,
    rounds: usize,
    progress: &Progress,
) -> f64 {
    let mut per = Vec::new();
    for round in 0..rounds {
        let short = run(
            place,
            side,
            &[format!("svc-short-{round}.ns.svc.cluster.local")],
        );
        let many = run(place, side, &long(round));
        let d = many.as_secs_f64() - short.as_secs_f64();
        per.push(d * 1000.0 / LOOKUPS as f64);
        progress.advance(1);
    }
    median(&per)
}

/// Measures the `names` scenario; `resolve` and `busybox` are the imported images.
pub fn measure(
    c: &Containerd,
    api: &Api,
    resolve: (&'static str, &ImageDefaults),
    busybox: (&'static str, &ImageDefaults),
    rounds: usize,
) -> Value {
    let netns = NetNs::create("bench-names");
    let mut zone = Zone::default();
    let address = "198.18.5.1".parse().expect("address");
    for round in 0..rounds {
        zone = zone.with(&format!("svc-short-{round}.ns.svc.cluster.local"), address);
        for i in 0..=LOOKUPS + 1 {
            zone = zone.with(&format!("svc-{round}-{i}.ns.svc.cluster.local"), address);
        }
    }
    zone = zone.with("svc-warm.ns.svc.cluster.local", address);
    let _dns = TestDns::start(&netns, "127.0.0.1".parse().expect("address"), zone);
    let conf = c.dir.path().join("bench-resolv.conf");
    std::fs::write(&conf, RESOLV_CONF).expect("write resolv.conf");
    let conf = conf.to_string_lossy().into_owned();
    let cell = Side {
        runtime: RUNTIME,
        image: resolve.0,
        defaults: resolve.1,
        args: wasm_args,
    };
    let native = Side {
        runtime: RUNC,
        image: busybox.0,
        defaults: busybox.1,
        args: busybox_args,
    };
    let cold = |round: usize| -> Vec<String> {
        (1..=LOOKUPS + 1)
            .map(|i| format!("svc-{round}-{i}.ns.svc.cluster.local"))
            .collect()
    };
    let warm =
        |_: usize| -> Vec<String> { vec!["svc-warm.ns.svc.cluster.local".to_owned(); LOOKUPS + 1] };
    let place = Place {
        c,
        api,
        netns: &netns,
        conf: &conf,
    };
    let progress = Progress::new("names", rounds * 3);
    let cell_cold = slope(&place, &cell, cold, rounds, &progress);
    let cell_warm = slope(&place, &cell, warm, rounds, &progress);
    let native_cold = slope(&place, &native, cold, rounds, &progress);
    drop(progress);
    println!(
        "\n{:<44} {:>10} {:>14} {:>10}",
        "name lookup, one Service name (ms)", "cell", "busybox (runc)", "cell/nat"
    );
    for (label, wc) in [
        ("  cold (nothing cached)", cell_cold),
        ("  warm (the cell's cache)", cell_warm),
    ] {
        println!(
            "{label:<44} {wc:>10.3} {native_cold:>14.3} {:>10.2}",
            wc / native_cold
        );
    }
    json!({
        "method": format!("per lookup: (a container looking up {} names − one looking up 1) / {LOOKUPS}, median of {rounds} rounds; a Service's full name, A and AAAA, one nameserver on the pod network's loopback", LOOKUPS + 1),
        "cell_cold_ms": cell_cold,
        "cell_warm_ms": cell_warm,
        "busybox_nslookup_ms": native_cold,
        "cold_ratio": cell_cold / native_cold,
        "warm_ratio": cell_warm / native_cold,
    })
}
