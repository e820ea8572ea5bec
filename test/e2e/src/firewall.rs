//! The host's iptables chains that a test's kubelet and kube-proxy (`KUBE-*`: the kubelet's
//! canaries and `KUBE-IPTABLES-HINT` whatever its settings say) or CNI plugins (`CNI-*`: portmap's
//! and the firewall plugin's) make and leave: those that were not there when the snapshot was
//! taken are removed with the rules that jump to them, for IPv4 and IPv6.

use std::collections::BTreeSet;
use std::process::Command;

/// A chain: the tool (`iptables`, `ip6tables`), its table and its name.
type Chain = (&'static str, &'static str, String);

/// The chains of a prefix there were when it was taken.
pub struct Chains {
    prefix: &'static str,
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

fn chains(prefix: &str) -> BTreeSet<Chain> {
    let mut chains = BTreeSet::new();
    for tool in TOOLS {
        for table in TABLES {
            for line in rules(tool, table).lines() {
                if let Some(name) = line.strip_prefix("-N ").filter(|n| n.starts_with(prefix)) {
                    chains.insert((tool, table, name.to_owned()));
                }
            }
        }
    }
    chains
}

impl Chains {
    /// The chains named `prefix…` there are now.
    pub fn snapshot(prefix: &'static str) -> Chains {
        Chains {
            prefix,
            before: chains(prefix),
        }
    }

    /// Removes the chains made since the snapshot and every rule that jumps to one of them.
    /// The rules go back through `iptables-restore --noflush`, which reads them as `-S` printed
    /// them (quoted comments and all).
    pub fn remove_new(&self) {
        let new: Vec<Chain> = chains(self.prefix)
            .difference(&self.before)
            .cloned()
            .collect();
        for tool in TOOLS {
            for table in TABLES {
                let mine: Vec<&str> = new
                    .iter()
                    .filter(|(t, tb, _)| *t == tool && *tb == table)
                    .map(|(_, _, name)| name.as_str())
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let mut script = format!("*{table}\n");
                for rule in rules(tool, table).lines() {
                    let Some(spec) = rule.strip_prefix("-A ") else {
                        continue;
                    };
                    let in_or_to_new = mine.iter().any(|name| {
                        spec.starts_with(&format!("{name} "))
                            || spec.ends_with(&format!("-j {name}"))
                    });
                    if in_or_to_new {
                        script.push_str(&format!("-D {spec}\n"));
                    }
                }
                for name in &mine {
                    script.push_str(&format!("-X {name}\n"));
                }
                script.push_str("COMMIT\n");
                let restored = Command::new(format!("{tool}-restore"))
                    .args(["-w", "--noflush"])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .and_then(|mut child| {
                        use std::io::Write;
                        child
                            .stdin
                            .take()
                            .map(|mut stdin| stdin.write_all(script.as_bytes()))
                            .transpose()?;
                        child.wait()
                    });
                if !restored.is_ok_and(|s| s.success()) {
                    eprintln!("{tool}-restore could not remove chains {mine:?} of {table}");
                }
            }
        }
    }
}
