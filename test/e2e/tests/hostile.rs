//! Hostile specs: every field of a working spec, mutated in turn (removed, given another JSON
//! type, an out-of-range number, a huge or path-like string), is handed to the shim through
//! containerd's API. Each one either runs or fails Create with an error; no shim panics; and
//! the pod's shim, which took most of them, still serves a plain task afterwards.
//!
//! The mutations are generated from the spec `ctr oci spec` gives (plus what a wasm task's spec
//! holds), so they follow containerd's spec as it changes; none is hand-listed.

use serde_json::{json, Value};
use wasmcell_e2e::api::ContainerRequest;
use wasmcell_e2e::{fixtures, Containerd};

const IMG: &str = "wasmcell.test/hostile:1";
const POD: &str = "io.kubernetes.cri.sandbox-id";

/// Every path to a value in `v` (object keys and array indexes), parents before children.
fn paths(v: &Value, here: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                here.push(k.clone());
                out.push(here.clone());
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(i.to_string());
                out.push(here.clone());
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, key| match v {
        Value::Object(m) => m.get_mut(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// What a mutation does to the value at its path.
#[derive(Clone, Copy, Debug)]
enum Mutation {
    Remove,
    Null,
    /// A value of another JSON type than the one there.
    OtherType,
    /// The largest and smallest numbers JSON readers take, or a number where there was none.
    Extreme,
    /// A long string, or one that names a host path.
    Hostile,
}

/// Every mutation, each applied at every path.
const MUTATIONS: [Mutation; 5] = [
    Mutation::Remove,
    Mutation::Null,
    Mutation::OtherType,
    Mutation::Extreme,
    Mutation::Hostile,
];

fn mutate(spec: &Value, path: &[String], m: Mutation) -> Option<Value> {
    let mut out = spec.clone();
    if let Mutation::Remove = m {
        let (last, parent) = path.split_last()?;
        match at(&mut out, parent)? {
            Value::Object(map) => {
                map.remove(last)?;
            }
            Value::Array(items) => {
                let i: usize = last.parse().ok()?;
                items.remove(i);
            }
            _ => return None,
        }
        return Some(out);
    }
    let v = at(&mut out, path)?;
    *v = match (m, &*v) {
        (Mutation::Null, _) => Value::Null,
        (Mutation::OtherType, Value::String(_)) => json!(7),
        (Mutation::OtherType, Value::Number(_)) => json!("seven"),
        (Mutation::OtherType, Value::Bool(_)) => json!([true]),
        (Mutation::OtherType, Value::Array(_)) => json!({"a": 1}),
        (Mutation::OtherType, _) => json!([]),
        (Mutation::Extreme, Value::Number(n)) if n.is_u64() => json!(u64::MAX),
        (Mutation::Extreme, Value::Number(_)) => json!(i64::MIN),
        (Mutation::Extreme, _) => json!(-1),
        (Mutation::Hostile, Value::String(s)) if s.starts_with('/') => json!("/../../../../etc"),
        (Mutation::Hostile, _) => json!("x".repeat(70_000)),
        (Mutation::Remove, _) => unreachable!(),
    };
    Some(out)
}

#[test]
fn generated_hostile_specs_fail_cleanly_and_the_shim_keeps_serving() {
    let c = Containerd::start();
    let api = c.api();
    let d = c.import_probe_unpacked(IMG);
    let layers = d.tar_layers.clone();
    let request =
        |id: &'static str, spec: Value| ContainerRequest::wasmcell(id, IMG, spec, layers.clone());
    let base = |id: &str, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut spec = c.default_spec(id, &args, &d.env, &d.cwd);
        spec["annotations"] = json!({ POD: "hostile-pod" });
        spec["linux"]["resources"]["memory"] = json!({"limit": 268435456});
        spec
    };
    // The pod's long-running task: its shim takes the hostile specs that keep the annotation.
    api.start_detached(
        request("anchor", base("anchor", &["/probe.wasm", "sleep", "3600"])),
        c.dir.path(),
    )
    .unwrap_or_else(|e| panic!("anchor: {e}\n{}", c.log()));
    let shims = c.shim_pids();

    let template = base("template", &["/probe.wasm", "hello"]);
    let mut all = Vec::new();
    paths(&template, &mut Vec::new(), &mut all);
    let (mut ran, mut refused) = (0, 0);
    let mut kinds = std::collections::BTreeSet::new();
    let mut n = 0;
    for path in &all {
        // The cgroup path only picks where the task's cgroup goes; it is checked on its own.
        if path.first().is_some_and(|p| p == "annotations") {
            continue;
        }
        for m in MUTATIONS {
            let Some(mut spec) = mutate(&template, path, m) else {
                continue;
            };
            n += 1;
            let id = format!("hostile-{n}");
            // Each task's own cgroup, whatever the mutation did to the path.
            if let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) {
                if path.len() < 2 || path[..2] != ["linux".to_owned(), "cgroupsPath".to_owned()] {
                    linux.insert("cgroupsPath".into(), json!(format!("/default/{id}")));
                }
            }
            let request = ContainerRequest::wasmcell(&id, IMG, spec, layers.clone());
            match api.run(request, c.dir.path()) {
                Ok(_) => ran += 1,
                Err(e) => {
                    refused += 1;
                    // The error less the task's own words, to show the kinds met.
                    kinds.insert(e.replace(&id, "ID").chars().take(160).collect::<String>());
                    assert!(
                        e.len() > 12 && !e.contains("panicked"),
                        "{id} ({path:?}, {m:?}): an error that says nothing: {e}"
                    );
                }
            }
        }
    }
    eprintln!("hostile specs: {n} generated, {ran} ran, {refused} refused with an error");
    for kind in &kinds {
        eprintln!("  {kind}");
    }
    assert!(n >= 100, "only {n} mutations");
    let log = c.log();
    assert!(!log.contains("panicked"), "a shim panicked\n{log}");
    // The pod's shim is the one it was, and it still serves a plain task.
    assert!(
        c.shim_pids().contains(&shims[0]),
        "the pod's shim is gone\n{log}"
    );
    let r = api
        .run(
            request("after", base("after", &["/probe.wasm", "hello"])),
            c.dir.path(),
        )
        .unwrap_or_else(|e| panic!("after: {e}\n{}", c.log()));
    assert_eq!((r.exit, r.stdout.as_str()), (0, "hello from C\n"));
}

/// Bundles handed straight to the shim over its socket, past containerd's own checks: the
/// working spec's bytes cut short at points spread over it, with bytes overwritten, and with
/// fields of the wrong type. Each Create fails with an error or runs; the shim serves on.
#[test]
fn malformed_bundles_sent_straight_to_the_shim_fail_cleanly() {
    use containerd_shim_protos::api::{CreateTaskRequest, DeleteRequest, StateRequest};
    use containerd_shim_protos::ttrpc::context;

    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let r = c.run_detached(
        &[&format!("--annotation={POD}=bundle-pod")],
        IMG,
        "anchor",
        &["/probe.wasm", "sleep", "3600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let client = c.shim_client("anchor");
    let args: Vec<String> = ["/probe.wasm", "hello"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let spec = c.default_spec("template", &args, &[], "/");
    let good = serde_json::to_vec_pretty(&spec).unwrap();

    let mut bundles: Vec<Vec<u8>> = Vec::new();
    // Cut short, at about 60 points spread over the text.
    let step = (good.len() / 60).max(1);
    bundles.extend((0..good.len()).step_by(step).map(|at| good[..at].to_vec()));
    // One byte overwritten with each of a few bytes that break JSON or its strings.
    for (i, at) in (step / 2..good.len()).step_by(step).enumerate() {
        let mut b = good.clone();
        b[at] = [b'{', b'"', 0xff, 0, b'\\'][i % 5];
        bundles.push(b);
    }
    // A wrong type at every top-level and process field.
    let mut fields = Vec::new();
    paths(&spec, &mut Vec::new(), &mut fields);
    for path in fields.iter().filter(|p| p.len() <= 2) {
        if let Some(bad) = mutate(&spec, path, Mutation::OtherType) {
            bundles.push(serde_json::to_vec(&bad).unwrap());
        }
    }

    let (mut ran, mut refused) = (0, 0);
    for (n, config) in bundles.iter().enumerate() {
        let id = format!("bundle-{n}");
        let dir = c.dir.path().join("bundles").join(&id);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        std::fs::write(dir.join("rootfs/probe.wasm"), fixtures::PROBE).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        let mut req = CreateTaskRequest::new();
        req.id = id.clone();
        req.bundle = dir.to_string_lossy().into_owned();
        match client.create(context::with_timeout(30_000_000_000), &req) {
            Ok(_) => {
                ran += 1;
                let mut del = DeleteRequest::new();
                del.id = id.clone();
                client
                    .delete(context::with_timeout(30_000_000_000), &del)
                    .unwrap_or_else(|e| panic!("{id}: delete: {e:?}"));
            }
            Err(e) => {
                refused += 1;
                let e = format!("{e:?}");
                assert!(e.len() > 12, "{id}: an error that says nothing: {e}");
            }
        }
    }
    eprintln!(
        "malformed bundles: {} sent to the shim, {ran} created, {refused} refused",
        bundles.len()
    );
    assert!(bundles.len() >= 100, "only {} bundles", bundles.len());
    let log = c.log();
    assert!(!log.contains("panicked"), "the shim panicked\n{log}");
    let mut state = StateRequest::new();
    state.id = "anchor".into();
    let anchor = client
        .state(context::with_timeout(10_000_000_000), &state)
        .unwrap_or_else(|e| panic!("the shim no longer answers: {e:?}\n{log}"));
    assert_eq!(
        anchor.status.value(),
        2,
        "the anchor still runs: {anchor:?}"
    );
    let r = c.run_wasm_with(
        &[&format!("--annotation={POD}=bundle-pod")],
        IMG,
        "after",
        &["/probe.wasm", "hello"],
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "hello from C\n"), "{r:?}");
}

/// Images through containerd's content store: every field of a working CNCF wasm artifact's
/// index, manifest and config, mutated in turn as the specs above are. Each Create fails with
/// an error that names the image or runs; no shim panics; the pod's shim serves on.
#[test]
fn generated_malformed_images_fail_cleanly_and_the_shim_keeps_serving() {
    use std::collections::HashMap;

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
    const WASM_LAYER: &str = "application/wasm";

    let c = Containerd::start();
    let api = c.api();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let r = c.run_detached(
        &[&format!("--annotation={POD}=image-pod")],
        IMG,
        "anchor",
        &["/probe.wasm", "sleep", "3600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let shims = c.shim_pids();

    let layer = api.put_blob(WASM_LAYER, fixtures::PROBE, HashMap::new());
    let config = json!({"architecture": "wasm", "os": "wasip1", "layerDigests": [layer.digest]});
    let manifest_of = |config: &Value| {
        let bytes = serde_json::to_vec(config).unwrap();
        let d = api.put_blob(WASM_CONFIG, &bytes, HashMap::new());
        json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": WASM_CONFIG, "digest": d.digest, "size": d.size},
            "layers": [{
                "mediaType": WASM_LAYER, "digest": layer.digest, "size": layer.size,
                "annotations": {"org.opencontainers.image.title": "probe.wasm"}
            }],
        })
    };
    let index_of = |manifest: &Value| {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let d = api.put_blob(MANIFEST, &bytes, HashMap::new());
        json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [{
                "mediaType": MANIFEST, "digest": d.digest, "size": d.size,
                "platform": {"os": "wasip1", "architecture": "wasm"}
            }],
        })
    };
    // The image's target: an index (whose manifest and config are the working ones, or the
    // mutated one given).
    let run = |n: usize, index: &Value| {
        let id = format!("image-{n}");
        let name = format!("wasmcell.test/mutated-{n}:1");
        let bytes = serde_json::to_vec(index).unwrap();
        let target = api.put_blob(INDEX, &bytes, HashMap::new());
        api.put_image(&name, target);
        let args = vec!["/probe.wasm".to_owned(), "hello".to_owned()];
        let mut spec = c.default_spec(&id, &args, &[], "/");
        spec["annotations"] = json!({ POD: "image-pod" });
        api.run(
            ContainerRequest::wasmcell(&id, &name, spec, vec![]),
            c.dir.path(),
        )
    };
    let good_manifest = manifest_of(&config);
    let good_index = index_of(&good_manifest);
    let control = run(0, &good_index).unwrap_or_else(|e| panic!("the working image: {e}"));
    assert_eq!(control.stdout, "hello from C\n", "{control:?}");

    let mut variants = Vec::new();
    for (doc, template) in [
        ("index", &good_index),
        ("manifest", &good_manifest),
        ("config", &config),
    ] {
        let mut all = Vec::new();
        paths(template, &mut Vec::new(), &mut all);
        for path in &all {
            for m in MUTATIONS {
                if let Some(bad) = mutate(template, path, m) {
                    variants.push((doc, path.clone(), m, bad));
                }
            }
        }
    }
    let (mut ran, mut refused, mut named) = (0, 0, 0);
    for (n, (doc, path, m, bad)) in variants.iter().enumerate() {
        let index = match *doc {
            "index" => bad.clone(),
            "manifest" => index_of(bad),
            _ => index_of(&manifest_of(bad)),
        };
        match run(n + 1, &index) {
            Ok(_) => ran += 1,
            Err(e) => {
                refused += 1;
                named += usize::from(e.contains("image wasmcell.test/mutated-"));
                assert!(
                    e.len() > 12 && !e.contains("panicked"),
                    "{doc} {path:?} {m:?}: an error that says nothing: {e}"
                );
            }
        }
    }
    eprintln!(
        "malformed images: {} generated, {ran} ran, {refused} refused with an error \
         ({named} of them naming the image)",
        variants.len()
    );
    assert!(variants.len() >= 100, "only {} images", variants.len());
    let log = c.log();
    assert!(!log.contains("panicked"), "a shim panicked\n{log}");
    assert!(
        c.shim_pids().contains(&shims[0]),
        "the pod's shim is gone\n{log}"
    );
    let after = run(variants.len() + 1, &good_index).unwrap_or_else(|e| panic!("after: {e}"));
    assert_eq!(after.stdout, "hello from C\n", "{after:?}");
}
