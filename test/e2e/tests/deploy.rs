//! `deploy/`: every Kubernetes manifest is valid against the Kubernetes 1.37 OpenAPI schema
//! (kubernetes-validate, strict: unknown fields fail), every kustomization renders with
//! kubectl 1.37 to valid resources, the RuntimeClass selects the label the installer sets, and the containerd snippets
//! load in the containerd under test and say what `wasmcell install` writes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmcell_e2e::{bin_dir, containerd_bin, containerd_major, Containerd, Ran};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `WASMCELL_KUBERNETES_VALIDATE` (`make test` installs the pinned one), else PATH's.
fn validator() -> PathBuf {
    std::env::var_os("WASMCELL_KUBERNETES_VALIDATE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "kubernetes-validate".into())
}

fn validate(files: &[PathBuf]) -> Ran {
    Command::new(validator())
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e} (make tools installs it, or set WASMCELL_KUBERNETES_VALIDATE)",
                validator().display()
            )
        })
        .into()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

#[test]
fn every_manifest_is_valid_for_kubernetes_1_36_and_the_validator_bites() {
    let mut files = Vec::new();
    yaml_files(&deploy().join("kubernetes"), &mut files);
    let manifests: Vec<PathBuf> = files
        .iter()
        .filter(|f| !f.ends_with("kustomization.yaml"))
        .cloned()
        .collect();
    assert!(manifests.len() >= 7, "{manifests:?}");
    let r = validate(&manifests);
    assert_eq!(r.code, 0, "{r:?}");
    let passed = r.stdout.matches(" passed for resource ").count()
        + r.stderr.matches(" passed for resource ").count();
    assert!(passed >= 9, "every resource was checked: {r:?}");

    // The same check refuses a misspelt field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(deploy().join("kubernetes/runtimeclass.yaml")).unwrap();
    std::fs::write(&bad, text.replace("nodeSelector:", "nodeSelectr:")).unwrap();
    let r = validate(&[bad]);
    assert_ne!(r.code, 0, "{r:?}");
}

/// `WASMCELL_KUBECTL` (`make test` builds the pinned Kubernetes), else PATH's.
fn kubectl() -> PathBuf {
    std::env::var_os("WASMCELL_KUBECTL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "kubectl".into())
}

#[test]
fn every_kustomization_renders_with_kubectl_to_valid_resources() {
    let dir = tempfile::tempdir().unwrap();
    for (name, resources) in [("", 6), ("installer", 5), ("uninstall", 5), ("examples", 5)] {
        let path = deploy().join("kubernetes").join(name);
        let out = Command::new(kubectl())
            .arg("kustomize")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "run {}: {e} (make tools builds it, or set WASMCELL_KUBECTL)",
                    kubectl().display()
                )
            });
        assert!(
            out.status.success(),
            "kustomize {}: {out:?}",
            path.display()
        );
        let rendered = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            rendered.matches("\nkind: ").count() + usize::from(rendered.starts_with("kind: ")),
            resources,
            "{}:\n{rendered}",
            path.display()
        );
        if name == "uninstall" {
            assert!(
                rendered.contains("name: WASMCELL_ACTION\n          value: uninstall"),
                "the uninstall patch applies:\n{rendered}"
            );
        }
        let file = dir
            .path()
            .join(format!("rendered-{}.yaml", name.replace('/', "-")));
        std::fs::write(&file, &rendered).unwrap();
        let r = validate(&[file]);
        assert_eq!(r.code, 0, "{}: {r:?}", path.display());
    }
}

#[test]
fn the_runtimeclass_selects_what_the_installer_sets_and_names_the_handler() {
    let rc = std::fs::read_to_string(deploy().join("kubernetes/runtimeclass.yaml")).unwrap();
    assert!(rc.contains("\nhandler: wasmtime\n"), "{rc}");
    assert!(rc.contains("wasmcell.dev/installed: \"true\""), "{rc}");
    let ds = std::fs::read_to_string(deploy().join("kubernetes/installer/daemonset.yaml")).unwrap();
    assert!(
        ds.contains("--label-node") && ds.contains("--enter-host"),
        "{ds}"
    );
    assert!(ds.contains("hostPID: true") && ds.contains("privileged: true"));
}

#[test]
fn the_containerd_snippets_are_what_install_writes_and_load() {
    let versions: &[i64] = if containerd_major() >= 2 {
        &[2, 3]
    } else {
        &[2]
    };
    for version in versions {
        let snippet = deploy().join(format!("containerd/config-v{version}.toml"));
        let text = std::fs::read_to_string(&snippet).unwrap();
        // containerd loads it.
        let out = Command::new(containerd_bin())
            .arg("--config")
            .arg(&snippet)
            .args(["config", "dump"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", snippet.display());
        // install adds the same table (with /usr/local/bin as the shim's directory).
        let dir = Containerd::new_dir();
        std::fs::write(
            dir.path().join("config.toml"),
            format!("version = {version}\n"),
        )
        .unwrap();
        let out = Command::new(bin_dir().join("wasmcell"))
            .args(["install", "--dry-run", "--config"])
            .arg(dir.path().join("config.toml"))
            .arg("--containerd")
            .arg(containerd_bin())
            .output()
            .unwrap();
        let r: Ran = out.into();
        assert_eq!(r.code, 0, "{r:?}");
        let table_start = text.find("[plugins.").unwrap();
        // The last table is what install adds for containerd 2.3 and later only.
        let end = if wasmcell_e2e::containerd_version() >= (2, 3) {
            text.len()
        } else {
            text.find("\n# containerd 2.3+").unwrap_or(text.len())
        };
        for line in text[table_start..end].lines() {
            assert!(
                r.stdout.contains(&format!("+{line}")),
                "install writes {line:?}: {r:?}"
            );
        }
    }
}
