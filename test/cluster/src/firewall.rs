//! The node's iptables chains named `KUBE-*`, which the kubelet and kube-proxy make on the host
//! (the kubelet's canaries and `KUBE-IPTABLES-HINT` whatever its settings say): those that
//! were not there before the cluster started are removed with the cluster, with the rules that
//! jump to them, for IPv4 and IPv6.

use std::collections::BTreeSet;
use std::process::Command;

/// A chain: the tool (`iptables`, `ip6tables`), its table and its name.
type Chain = (&'static str, &'static str, String);

/// The `KUBE-*` chains there were when it was taken.
pub struct KubeChains {
    before: BTreeSet<Chain>,
}

const TOOLS: [&str; 2] = ["iptables", "ip6tables"];
const TABLES: [&str; 3] = ["filter", "nat", "mangle"];

/// The rules of `table` as `-S` prints them (nothing when the tool is missing).
fn rules(tool: &str, table: &str) -> String {
    Command::new(tool)
        .args(["-w", "-t", table, "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn kube_chains() -> BTreeSet<Chain> {
    let mut chains = BTreeSet::new();
    for tool in TOOLS {
        for table in TABLES {
            for line in rules(tool, table).lines() {
                if let Some(name) = line.strip_prefix("-N ").filter(|n| n.starts_with("KUBE-")) {
                    chains.insert((tool, table, name.to_owned()));
                }
            }
        }
    }
    chains
}

impl KubeChains {
    /// The chains there are now.
    pub fn snapshot() -> KubeChains {
        KubeChains {
            before: kube_chains(),
        }
    }

    /// Removes the chains made since the snapshot and every rule that jumps to one of them.
    pub fn remove_new(&self) {
        let new: Vec<Chain> = kube_chains().difference(&self.before).cloned().collect();
        for (tool, table, _) in &new {
            for rule in rules(tool, table).lines() {
                let Some(spec) = rule.strip_prefix("-A ") else {
                    continue;
                };
                let jumps_to_new = new.iter().any(|(t, tb, name)| {
                    t == tool && tb == table && spec.ends_with(&format!("-j {name}"))
                });
                if jumps_to_new {
                    let mut args = vec!["-w", "-t", table, "-D"];
                    args.extend(spec.split_whitespace());
                    let _ = Command::new(tool).args(&args).output();
                }
            }
        }
        for (tool, table, name) in &new {
            let _ = Command::new(tool)
                .args(["-w", "-t", table, "-F", name])
                .output();
        }
        for (tool, table, name) in &new {
            let _ = Command::new(tool)
                .args(["-w", "-t", table, "-X", name])
                .output();
        }
    }
}
