//! What an operator tunes per workload: read from the container's env and from pod and
//! container annotations under `wasmcell.dev/`, validated once at Create.
//!
//! Each setting has one name. Its annotation is `wasmcell.dev/<name>` for every container of a
//! pod, or `<container>.wasmcell.dev/<name>` for the container of that name (the form of
//! `container.apparmor.security.beta.kubernetes.io/<container>`: Kubernetes has no annotations
//! per container, and the CRI plugin names the container in `io.kubernetes.cri.container-name`).
//! The CRI plugin passes a pod's annotations to the runtime only when the handler lists them in
//! `pod_annotations`; `wasmcell install` lists both forms.
//!
//! The first found wins: the container's annotation, the pod's annotation, the container's env,
//! the default. Annotations come first because they are the operator's, set on the pod; the env
//! is also where an image's author sets defaults.
//!
//! Nothing falls back silently: an annotation under `wasmcell.dev/` that names no setting, or a
//! value outside what a setting allows, fails Create with a message that names the key, the value
//! and what is allowed, which `kubectl describe` shows.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The annotations' domain.
pub const DOMAIN: &str = "wasmcell.dev";
/// The annotation in which the CRI plugin names the container of a pod.
pub const CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";

/// A WebAssembly proposal a workload may switch on or off, beyond wasmtime's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proposal {
    /// Shared memories and atomics.
    Threads,
    /// Garbage-collected structs and arrays.
    Gc,
    /// Exception handling.
    Exceptions,
    /// 64-bit memories.
    Memory64,
    /// Tail calls.
    TailCall,
    /// More than one memory per module.
    MultiMemory,
    /// 128-bit SIMD.
    Simd,
    /// Relaxed SIMD.
    RelaxedSimd,
    /// Typed function references.
    FunctionReferences,
    /// 128-bit arithmetic.
    WideArithmetic,
    /// Memories with page sizes other than 64 KiB.
    CustomPageSizes,
    /// Extended constant expressions.
    ExtendedConst,
}

impl Proposal {
    /// Every proposal, in the order the README lists them.
    pub const ALL: [Proposal; 12] = [
        Proposal::Threads,
        Proposal::Gc,
        Proposal::Exceptions,
        Proposal::Memory64,
        Proposal::TailCall,
        Proposal::MultiMemory,
        Proposal::Simd,
        Proposal::RelaxedSimd,
        Proposal::FunctionReferences,
        Proposal::WideArithmetic,
        Proposal::CustomPageSizes,
        Proposal::ExtendedConst,
    ];

    /// Its name in a setting.
    pub fn name(self) -> &'static str {
        match self {
            Proposal::Threads => "threads",
            Proposal::Gc => "gc",
            Proposal::Exceptions => "exceptions",
            Proposal::Memory64 => "memory64",
            Proposal::TailCall => "tail-call",
            Proposal::MultiMemory => "multi-memory",
            Proposal::Simd => "simd",
            Proposal::RelaxedSimd => "relaxed-simd",
            Proposal::FunctionReferences => "function-references",
            Proposal::WideArithmetic => "wide-arithmetic",
            Proposal::CustomPageSizes => "custom-page-sizes",
            Proposal::ExtendedConst => "extended-const",
        }
    }

    fn from_name(name: &str) -> Option<Proposal> {
        Proposal::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One proposal switched on (`gc`) or off (`-simd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Toggle {
    /// Which.
    pub proposal: Proposal,
    /// On or off.
    pub enable: bool,
}

/// A workload's settings, resolved; `None` and `false` are the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Where a served component listens, inside the pod's network namespace.
    pub http_addr: Option<SocketAddr>,
    /// How long one request may run, in milliseconds.
    pub http_timeout_ms: Option<u64>,
    /// How many requests may run at once; more are answered 503.
    pub http_max_in_flight: Option<u32>,
    /// One line on stderr per request.
    pub http_access_log: bool,
    /// Serve a component that exports both `wasi:http/incoming-handler` and `wasi:cli/run`.
    pub http_serve: bool,
    /// The most one linear memory may grow to, in bytes (below what the memory limit allows).
    pub memory_max: Option<u64>,
    /// Proposals switched on or off, in the order given; changes compiled code.
    pub wasm_features: Vec<Toggle>,
    /// CPU time a command may use, in milliseconds, before it is stopped; changes compiled
    /// code (it checks an epoch).
    pub cpu_deadline_ms: Option<u64>,
    /// Where the pod's Prometheus endpoint listens, inside the pod's network namespace; off
    /// when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// Where each setting that is not at its default came from (`annotation
    /// wasmcell.dev/memory-max`, `env WASMCELL_MEMORY_MAX`), by setting name: for the messages
    /// of a refusal found later (a proposal wasmtime cannot combine, a limit hit).
    pub sources: BTreeMap<String, String>,
}

impl Settings {
    /// Where `setting` came from, for a message; "the default" when it was not set.
    pub fn source_of(&self, setting: &str) -> &str {
        self.sources
            .get(setting)
            .map_or("the default", String::as_str)
    }
}

/// One setting: its names, what it allows, and how a value is applied.
pub struct Setting {
    /// Its name: the annotation is `wasmcell.dev/<name>`.
    pub name: &'static str,
    /// Its env variables, the first found wins.
    pub env: &'static [&'static str],
    /// Its default, as the README says it.
    pub default: &'static str,
    /// What it allows, as the README and the messages say it.
    pub allowed: &'static str,
    apply: fn(&mut Settings, &str) -> Result<(), ()>,
}

/// The longest request deadline and CPU deadline: a day, and a week.
const MAX_HTTP_TIMEOUT_MS: u64 = 86_400_000;
const MAX_CPU_DEADLINE_MS: u64 = 604_800_000;
/// The most requests in flight (each holds an instance of the pool).
const MAX_IN_FLIGHT: u64 = 65_536;
/// The smallest and largest memory cap: one wasm page, and 1 TiB.
const MIN_MEMORY: u64 = 64 << 10;
const MAX_MEMORY: u64 = 1 << 40;

/// Every setting.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "http-addr",
        env: &["WASMCELL_HTTP_ADDR", "WASMTIME_HTTP_PROXY_SOCKET_ADDR"],
        default: "0.0.0.0:8080",
        allowed: "an IP address and port, such as 0.0.0.0:8080 or [::]:8080",
        apply: |s, v| {
            s.http_addr = Some(v.parse().map_err(|_| ())?);
            Ok(())
        },
    },
    Setting {
        name: "http-timeout-ms",
        env: &["WASMCELL_HTTP_TIMEOUT_MS"],
        default: "30000",
        allowed: "a whole number of milliseconds from 1 to 86400000",
        apply: |s, v| {
            s.http_timeout_ms = Some(number(v, 1, MAX_HTTP_TIMEOUT_MS)?);
            Ok(())
        },
    },
    Setting {
        name: "http-max-in-flight",
        env: &["WASMCELL_HTTP_MAX_IN_FLIGHT"],
        default: "64 per CPU of the container's limit (of the node, without one)",
        allowed: "a whole number from 1 to 65536",
        apply: |s, v| {
            s.http_max_in_flight = Some(number(v, 1, MAX_IN_FLIGHT)? as u32);
            Ok(())
        },
    },
    Setting {
        name: "http-access-log",
        env: &["WASMCELL_HTTP_ACCESS_LOG"],
        default: "false",
        allowed: "true, false, 1 or 0",
        apply: |s, v| {
            s.http_access_log = boolean(v)?;
            Ok(())
        },
    },
    Setting {
        name: "http-serve",
        env: &["WASMCELL_HTTP_SERVE"],
        default: "false",
        allowed: "true, false, 1 or 0",
        apply: |s, v| {
            s.http_serve = boolean(v)?;
            Ok(())
        },
    },
    Setting {
        name: "memory-max",
        env: &["WASMCELL_MEMORY_MAX"],
        default: "the container's memory limit less a headroom (a quarter, at most 8Mi)",
        allowed: "bytes from 64Ki to 1Ti, as a number or with a suffix Ki, Mi, Gi, Ti, k, M, G \
                  or T; at most the container's memory limit",
        apply: |s, v| {
            let bytes = quantity(v).ok_or(())?;
            if !(MIN_MEMORY..=MAX_MEMORY).contains(&bytes) {
                return Err(());
            }
            s.memory_max = Some(bytes);
            Ok(())
        },
    },
    Setting {
        name: "wasm-features",
        env: &["WASMCELL_WASM_FEATURES"],
        default: "wasmtime's defaults",
        allowed: "a comma-separated list of proposals, each to switch on, or off with a leading \
                  `-`: threads, gc, exceptions, memory64, tail-call, multi-memory, simd, \
                  relaxed-simd, function-references, wide-arithmetic, custom-page-sizes, \
                  extended-const",
        apply: |s, v| {
            s.wasm_features = features(v)?;
            Ok(())
        },
    },
    Setting {
        name: "cpu-deadline-ms",
        env: &["WASMCELL_CPU_DEADLINE_MS"],
        default: "none",
        allowed: "a whole number of milliseconds of CPU time from 1 to 604800000; for commands \
                  only",
        apply: |s, v| {
            s.cpu_deadline_ms = Some(number(v, 1, MAX_CPU_DEADLINE_MS)?);
            Ok(())
        },
    },
    Setting {
        name: "metrics-addr",
        env: &["WASMCELL_METRICS_ADDR"],
        default: "off",
        allowed: "an IP address and port, such as 0.0.0.0:9100, where the pod's Prometheus \
                  endpoint listens inside the pod's network namespace",
        apply: |s, v| {
            s.metrics_addr = Some(v.parse().map_err(|_| ())?);
            Ok(())
        },
    },
];

/// A setting that cannot be used: the whole message, naming the key, the value and what is
/// allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingError(pub String);

/// Resolves the settings of a container from its `env` and its spec's `annotations`;
/// `memory_limit`: its memory limit, which `memory-max` may not exceed.
pub fn resolve(
    env: &[(String, String)],
    annotations: &HashMap<String, String>,
    memory_limit: Option<u64>,
) -> Result<Settings, SettingError> {
    let container = annotations
        .get(CONTAINER_NAME_ANNOTATION)
        .map(String::as_str);
    // Every key under the domain is checked, also those for the pod's other containers: a
    // mistake fails the first container it could, not only the one it names.
    let mut pod: BTreeMap<&str, &str> = BTreeMap::new();
    let mut own: BTreeMap<&str, &str> = BTreeMap::new();
    let mut keys: Vec<&String> = annotations.keys().collect();
    keys.sort();
    for key in keys {
        let Some((scope, name)) = split_key(key) else {
            continue;
        };
        let setting = SETTINGS.iter().find(|s| s.name == name).ok_or_else(|| {
            SettingError(format!(
                "unknown setting annotation {key:?}: wasmcell's settings are {}",
                SETTINGS
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let value = annotations[key].as_str();
        let source = format!("annotation {key}");
        apply(setting, &mut Settings::default(), value, &source)?;
        if scope.is_some() && container.is_none() {
            return Err(SettingError(format!(
                "setting annotation {key:?} is for one container, but this container has no \
                 name ({CONTAINER_NAME_ANNOTATION}, which the CRI plugin sets): use \
                 {DOMAIN}/{name} for every container"
            )));
        }
        match scope {
            None => {
                pod.insert(setting.name, value);
            }
            Some(c) if Some(c) == container => {
                own.insert(setting.name, value);
            }
            Some(_) => {}
        }
    }
    let mut settings = Settings::default();
    for setting in SETTINGS {
        let (value, source) = if let Some(v) = own.get(setting.name) {
            let c = container.unwrap_or_default();
            (*v, format!("annotation {c}.{DOMAIN}/{}", setting.name))
        } else if let Some(v) = pod.get(setting.name) {
            (*v, format!("annotation {DOMAIN}/{}", setting.name))
        } else if let Some((var, v)) = setting
            .env
            .iter()
            .find_map(|var| lookup(env, var).map(|v| (*var, v)))
        {
            (v, format!("env {var}"))
        } else {
            continue;
        };
        apply(setting, &mut settings, value, &source)?;
        settings.sources.insert(setting.name.to_owned(), source);
    }
    if let (Some(max), Some(limit)) = (settings.memory_max, memory_limit) {
        if max > limit {
            return Err(SettingError(format!(
                "setting {}={} is more than the container's memory limit ({}): a linear memory \
                 could never grow that far",
                settings.source_of("memory-max"),
                show_bytes(max),
                show_bytes(limit)
            )));
        }
    }
    Ok(settings)
}

/// Applies one value, or says what is wrong with it.
fn apply(
    setting: &Setting,
    settings: &mut Settings,
    value: &str,
    source: &str,
) -> Result<(), SettingError> {
    (setting.apply)(settings, value.trim()).map_err(|()| {
        SettingError(format!(
            "setting {source}={value:?} is not allowed: {} expects {}",
            setting.name, setting.allowed
        ))
    })
}

/// `wasmcell.dev/<name>` is the pod's; `<container>.wasmcell.dev/<name>` the container's.
fn split_key(key: &str) -> Option<(Option<&str>, &str)> {
    let (prefix, name) = key.split_once('/')?;
    if prefix == DOMAIN {
        return Some((None, name));
    }
    let container = prefix.strip_suffix(DOMAIN)?.strip_suffix('.')?;
    (!container.is_empty()).then_some((Some(container), name))
}

fn lookup<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn number(v: &str, min: u64, max: u64) -> Result<u64, ()> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or(())
}

fn boolean(v: &str) -> Result<bool, ()> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(()),
    }
}

/// Bytes from a Kubernetes-style quantity: `1048576`, `64Mi`, `1G`.
fn quantity(v: &str) -> Option<u64> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, unit) = SUFFIXES
        .iter()
        .find_map(|(s, m)| v.strip_suffix(s).map(|d| (d, *m)))
        .unwrap_or((v, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// The toggles of a list, one per proposal (the last one given wins); an empty list, or an
/// empty item, is refused: it says nothing, and is most likely a mistake.
fn features(v: &str) -> Result<Vec<Toggle>, ()> {
    let mut out: Vec<Toggle> = Vec::new();
    for item in v.split(',').map(str::trim) {
        let (enable, name) = match item.strip_prefix('-') {
            Some(name) => (false, name),
            None => (true, item.strip_prefix('+').unwrap_or(item)),
        };
        let proposal = Proposal::from_name(name).ok_or(())?;
        out.retain(|t| t.proposal != proposal);
        out.push(Toggle { proposal, enable });
    }
    Ok(out)
}

/// Bytes as the README writes them: `32Mi` when whole, else the number.
pub fn show_bytes(n: u64) -> String {
    for (unit, size) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_set_is_all_defaults() {
        let s = resolve(&[], &HashMap::new(), None).expect("defaults");
        assert_eq!(s, Settings::default());
        assert_eq!(s.source_of("memory-max"), "the default");
    }

    #[test]
    fn container_annotation_then_pod_annotation_then_env() {
        let a = annotations(&[
            (CONTAINER_NAME_ANNOTATION, "app"),
            ("wasmcell.dev/http-timeout-ms", "250"),
            ("app.wasmcell.dev/http-timeout-ms", "100"),
            ("sidecar.wasmcell.dev/http-timeout-ms", "900"),
            ("wasmcell.dev/http-max-in-flight", "3"),
        ]);
        let e = env(&[
            ("WASMCELL_HTTP_TIMEOUT_MS", "5"),
            ("WASMCELL_HTTP_MAX_IN_FLIGHT", "7"),
            ("WASMCELL_HTTP_ACCESS_LOG", "1"),
            ("WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:3000"),
        ]);
        let s = resolve(&e, &a, None).expect("settings");
        assert_eq!(s.http_timeout_ms, Some(100));
        assert_eq!(
            s.source_of("http-timeout-ms"),
            "annotation app.wasmcell.dev/http-timeout-ms"
        );
        assert_eq!(s.http_max_in_flight, Some(3));
        assert!(s.http_access_log);
        assert_eq!(s.http_addr, Some("127.0.0.1:3000".parse().unwrap()));
        assert_eq!(
            s.source_of("http-addr"),
            "env WASMTIME_HTTP_PROXY_SOCKET_ADDR"
        );
        // wasmcell's own variable wins over runwasi's.
        let e = env(&[
            ("WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:3000"),
            ("WASMCELL_HTTP_ADDR", "[::]:9000"),
        ]);
        let s = resolve(&e, &HashMap::new(), None).expect("settings");
        assert_eq!(s.http_addr, Some("[::]:9000".parse().unwrap()));
    }

    #[test]
    fn a_bad_value_names_the_key_the_value_and_what_is_allowed() {
        let e = resolve(
            &[],
            &annotations(&[("wasmcell.dev/http-timeout-ms", "soon")]),
            None,
        )
        .expect_err("not a number");
        assert!(
            e.0.contains("annotation wasmcell.dev/http-timeout-ms=\"soon\"")
                && e.0.contains("from 1 to 86400000"),
            "{e}"
        );
        let e = resolve(
            &env(&[("WASMCELL_HTTP_ACCESS_LOG", "yes")]),
            &HashMap::new(),
            None,
        )
        .expect_err("not a boolean");
        assert!(e.0.contains("env WASMCELL_HTTP_ACCESS_LOG=\"yes\""), "{e}");
        let e = resolve(
            &env(&[("WASMCELL_HTTP_ADDR", "8080")]),
            &HashMap::new(),
            None,
        )
        .expect_err("no host");
        assert!(e.0.contains("an IP address and port"), "{e}");
        // A key for another container is checked too.
        let e = resolve(
            &[],
            &annotations(&[
                (CONTAINER_NAME_ANNOTATION, "app"),
                ("sidecar.wasmcell.dev/cpu-deadline-ms", "0"),
            ]),
            None,
        )
        .expect_err("zero");
        assert!(e.0.contains("sidecar.wasmcell.dev/cpu-deadline-ms"), "{e}");
    }

    #[test]
    fn an_unknown_key_under_the_domain_is_refused_and_others_are_ignored() {
        let e = resolve(
            &[],
            &annotations(&[("wasmcell.dev/http-timeout", "5")]),
            None,
        )
        .expect_err("unknown");
        assert!(
            e.0.contains("\"wasmcell.dev/http-timeout\"") && e.0.contains("http-timeout-ms"),
            "{e}"
        );
        let s = resolve(
            &[],
            &annotations(&[
                ("example.com/http-timeout-ms", "x"),
                ("notwasmcell.dev/x", "y"),
                ("io.kubernetes.container.terminationMessagePath", "/dev/x"),
            ]),
            None,
        )
        .expect("not ours");
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn memory_max_takes_quantities_within_the_limit() {
        for (v, bytes) in [
            ("65536", 65536),
            ("64Ki", 64 << 10),
            ("16Mi", 16 << 20),
            ("1G", 1_000_000_000),
        ] {
            let s = resolve(&env(&[("WASMCELL_MEMORY_MAX", v)]), &HashMap::new(), None).expect(v);
            assert_eq!(s.memory_max, Some(bytes), "{v}");
        }
        for v in ["1Ki", "16MB", "-1", "Mi", "2Ti", "1.5Gi"] {
            resolve(&env(&[("WASMCELL_MEMORY_MAX", v)]), &HashMap::new(), None).expect_err(v);
        }
        let e = resolve(
            &[],
            &annotations(&[("wasmcell.dev/memory-max", "64Mi")]),
            Some(32 << 20),
        )
        .expect_err("above the limit");
        assert!(e.0.contains("64Mi") && e.0.contains("(32Mi)"), "{e}");
    }

    #[test]
    fn features_are_known_proposals_on_or_off() {
        let s = resolve(
            &env(&[("WASMCELL_WASM_FEATURES", "gc, -simd,+memory64")]),
            &HashMap::new(),
            None,
        )
        .expect("features");
        assert_eq!(
            s.wasm_features,
            vec![
                Toggle {
                    proposal: Proposal::Gc,
                    enable: true
                },
                Toggle {
                    proposal: Proposal::Simd,
                    enable: false
                },
                Toggle {
                    proposal: Proposal::Memory64,
                    enable: true
                },
            ]
        );
        let e = resolve(
            &env(&[("WASMCELL_WASM_FEATURES", "gc,warp")]),
            &HashMap::new(),
            None,
        )
        .expect_err("unknown proposal");
        assert!(
            e.0.contains("\"gc,warp\"") && e.0.contains("tail-call"),
            "{e}"
        );
    }

    #[test]
    fn every_setting_is_in_the_readme() {
        let readme = include_str!("../../../README.md");
        for s in SETTINGS {
            assert!(
                readme.contains(&format!("`{DOMAIN}/{}`", s.name)),
                "README lists {}",
                s.name
            );
            for var in s.env {
                assert!(readme.contains(&format!("`{var}`")), "README lists {var}");
            }
        }
    }
}
