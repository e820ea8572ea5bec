//! The container's `/etc/hosts` (hosts(5)), where the kubelet writes the pod's own name and its
//! `hostAliases`: looked at before DNS, as libc's `files` source is.
//!
//! A line is an address and its names, `#` starts a comment; a line whose address does not parse
//! is skipped. Names match without regard to case and to one trailing dot; every address of a
//! name is kept, in the file's order.

use std::collections::HashMap;
use std::net::IpAddr;

/// The most names the table keeps: a hostile image's `/etc/hosts` cannot grow the cell past it.
const MAX_NAMES: usize = 16 * 1024;

/// The hosts file, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    by_name: HashMap<String, Vec<IpAddr>>,
}

impl Hosts {
    /// Parses `bytes` leniently (what cannot be read is left out).
    pub fn parse(bytes: &[u8]) -> Hosts {
        let mut by_name: HashMap<String, Vec<IpAddr>> = HashMap::new();
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let Some(Ok(addr)) = fields.next().map(parse_addr) else {
                continue;
            };
            for name in fields {
                let key = key(name);
                if key.is_empty() || (by_name.len() >= MAX_NAMES && !by_name.contains_key(&key)) {
                    continue;
                }
                let addrs = by_name.entry(key).or_default();
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
        Hosts { by_name }
    }

    /// The addresses of `name`, if the file has it.
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.by_name.get(&key(name)).map(Vec::as_slice)
    }

    /// How many names the file gives.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the file gives no name.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// An address as hosts(5) writes it; an IPv6 address may carry a zone (`fe80::1%eth0`), which
/// a guest's address cannot, so the zone is dropped.
fn parse_addr(text: &str) -> Result<IpAddr, std::net::AddrParseError> {
    let text = text.split('%').next().unwrap_or_default();
    text.parse()
}

fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_s_file_with_host_aliases() {
        let hosts = Hosts::parse(
            b"# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n\
              198.18.0.7\tweb-0\n\n# Entries added by HostAliases.\n198.18.9.9\tfoo.local\tBar.Local\n\
              198.18.9.10 foo.local # a second address\nnot-an-ip name\n",
        );
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            hosts.lookup("localhost"),
            Some(&[v4("127.0.0.1"), v4("::1")][..])
        );
        assert_eq!(
            hosts.lookup("FOO.local."),
            Some(&[v4("198.18.9.9"), v4("198.18.9.10")][..])
        );
        assert_eq!(hosts.lookup("bar.local"), Some(&[v4("198.18.9.9")][..]));
        assert_eq!(hosts.lookup("name"), None);
        assert_eq!(hosts.lookup("web-0"), Some(&[v4("198.18.0.7")][..]));
    }

    #[test]
    fn a_huge_file_is_capped() {
        let mut text = String::new();
        for i in 0..(MAX_NAMES + 100) {
            text.push_str(&format!("198.18.0.1 n{i}\n"));
        }
        assert_eq!(Hosts::parse(text.as_bytes()).len(), MAX_NAMES);
    }
}
