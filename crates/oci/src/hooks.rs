//! The OCI hooks of a spec that run in the runtime's namespaces (prestart, createRuntime,
//! poststart, poststop): what nerdctl puts into every spec to set up its CNI network, port
//! mappings and `/etc/hosts`. The shim runs them for a cell as runc does for its containers;
//! the hooks that run inside the container (createContainer, startContainer) need a native
//! process there, so a spec with them goes to runc ([`crate::isolation::Isolation::from_spec`]).

use std::path::PathBuf;
use std::time::Duration;

use oci_spec::runtime::Spec;

/// One hook: the program, its argv, its environment, its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The program's absolute path, as `execv` takes it.
    pub path: PathBuf,
    /// Its argv (`args[0]` included); empty means `[path]`.
    pub args: Vec<String>,
    /// Its environment; `None` means the runtime's own (as runc passes it).
    pub env: Option<Vec<String>>,
    /// Past this it is killed and fails its stage; `None` waits for it.
    pub timeout: Option<Duration>,
}

/// The runtime-namespace hooks of a spec, by stage, in the spec's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Deprecated by the runtime spec, still run by runc: before createRuntime, at the same
    /// point.
    pub prestart: Vec<Hook>,
    /// After the container's namespaces exist, before Create returns.
    pub create_runtime: Vec<Hook>,
    /// After the program started, before Start returns.
    pub poststart: Vec<Hook>,
    /// After the container is deleted, before Delete returns.
    pub poststop: Vec<Hook>,
}

impl Hooks {
    /// The runtime-namespace hooks `spec` lists.
    pub fn of(spec: &Spec) -> Hooks {
        let Some(hooks) = spec.hooks() else {
            return Hooks::default();
        };
        let list = |hooks: &Option<Vec<oci_spec::runtime::Hook>>| -> Vec<Hook> {
            hooks
                .iter()
                .flatten()
                .map(|h| Hook {
                    path: h.path().clone(),
                    args: h.args().clone().unwrap_or_default(),
                    env: h.env().clone(),
                    timeout: h
                        .timeout()
                        .and_then(|t| u64::try_from(t).ok())
                        .map(Duration::from_secs),
                })
                .collect()
        };
        #[allow(deprecated)] // prestart is deprecated, but runc still runs it
        let prestart = list(hooks.prestart());
        Hooks {
            prestart,
            create_runtime: list(hooks.create_runtime()),
            poststart: list(hooks.poststart()),
            poststop: list(hooks.poststop()),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.prestart.is_empty()
            && self.create_runtime.is_empty()
            && self.poststart.is_empty()
            && self.poststop.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_namespace_stages_are_read_in_order() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "hooks": {
                "prestart": [{"path": "/bin/p"}],
                "createRuntime": [
                    {"path": "/usr/bin/nerdctl", "args": ["nerdctl", "internal", "oci-hook", "createRuntime"],
                     "env": ["A=1"]},
                    {"path": "/bin/second", "timeout": 5}
                ],
                "poststop": [{"path": "/usr/bin/nerdctl", "args": ["nerdctl", "internal", "oci-hook", "postStop"]}]
            }
        }))
        .expect("spec");
        let hooks = Hooks::of(&spec);
        assert_eq!(hooks.prestart.len(), 1);
        assert_eq!(hooks.create_runtime.len(), 2);
        assert_eq!(hooks.create_runtime[0].args[3], "createRuntime");
        assert_eq!(hooks.create_runtime[0].env, Some(vec!["A=1".to_owned()]));
        assert_eq!(
            hooks.create_runtime[1].timeout,
            Some(Duration::from_secs(5))
        );
        assert!(hooks.poststart.is_empty());
        assert_eq!(hooks.poststop.len(), 1);
        let none: Spec =
            serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2"})).expect("spec");
        assert!(Hooks::of(&none).is_empty());
    }
}
