//! Looking a name up the way the container's own libc would, without NSS: the container's
//! `/etc/hosts` first, then DNS to the nameservers of its `/etc/resolv.conf`, with its search
//! list and `ndots`, from the network namespace the cell is in.
//!
//! DNS is hickory's client (UDP, TCP when an answer is truncated, A and AAAA in parallel, a cache
//! that honours TTLs); it is made on the first lookup, so a guest that never resolves a name
//! pays nothing for it. hickory checks each answer's id and question, refuses what does not
//! decode (a compression loop included) and bounds what it reads. On top of it every lookup
//! has the bound libc's has ([`ResolvConf::lookup_bound`]): a dead nameserver is a timeout
//! error, never a hang.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::TokioResolver;

use crate::conf::ResolvConf;
use crate::hosts::Hosts;

/// The longest name DNS can carry, in its text form.
const MAX_NAME_LEN: usize = 253;

/// Why a name did not resolve, as libc's `getaddrinfo` would tell it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Not a name DNS can carry (empty, too long, a label over 63 bytes, …).
    #[error("{name:?} is not a valid host name: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The hosts file does not have it and DNS says no such name (NXDOMAIN), or no address of
    /// it, for every name of the search list.
    #[error("{name}: no such host")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// No nameserver answered within the bound.
    #[error("{name}: no answer from {servers} within {after:?}")]
    Timeout {
        /// The name asked for.
        name: String,
        /// The nameservers asked.
        servers: String,
        /// How long the lookup waited.
        after: Duration,
    },
    /// A nameserver answered with a failure that may pass (SERVFAIL, REFUSED), or could not
    /// be reached.
    #[error("{name}: temporary failure in name resolution: {reason}")]
    Temporary {
        /// The name asked for.
        name: String,
        /// What the resolver saw.
        reason: String,
    },
    /// Anything else.
    #[error("{name}: name resolution failed: {reason}")]
    Failed {
        /// The name asked for.
        name: String,
        /// What the resolver saw.
        reason: String,
    },
}

/// The container's resolver; one per cell, shared by every lookup (and its cache with them).
pub struct Resolver {
    conf: ResolvConf,
    hosts: Hosts,
    dns: OnceLock<Result<TokioResolver, String>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("conf", &self.conf)
            .field("hosts", &self.hosts.len())
            .finish()
    }
}

impl Default for Resolver {
    /// The resolver of a container with neither file: libc's defaults, a nameserver on the
    /// container's loopback.
    fn default() -> Self {
        Resolver::new(None, None)
    }
}

impl Resolver {
    /// The resolver of a container whose `/etc/resolv.conf` and `/etc/hosts` hold these bytes
    /// (`None`: it has no such file).
    pub fn new(resolv_conf: Option<&[u8]>, hosts: Option<&[u8]>) -> Resolver {
        Resolver {
            conf: resolv_conf.map(ResolvConf::parse).unwrap_or_default(),
            hosts: hosts.map(Hosts::parse).unwrap_or_default(),
            dns: OnceLock::new(),
        }
    }

    /// What it read of resolv.conf.
    pub fn conf(&self) -> &ResolvConf {
        &self.conf
    }

    /// The addresses of `name` (an address literal is its own answer). Must be called inside a
    /// tokio runtime with I/O and time enabled.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        if let Some(addr) = literal(name) {
            return Ok(vec![addr]);
        }
        let invalid = |reason: String| LookupError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN + 1 {
            return Err(invalid(format!("{} bytes long", name.len())));
        }
        let dns_name = Name::from_utf8(name).map_err(|e| invalid(e.to_string()))?;
        if let Some(addrs) = self.hosts.lookup(name) {
            return Ok(addrs.to_vec());
        }
        let dns = self
            .dns
            .get_or_init(|| build(&self.conf))
            .as_ref()
            .map_err(|reason| LookupError::Failed {
                name: name.to_owned(),
                reason: reason.clone(),
            })?;
        let bound = self.conf.lookup_bound();
        match tokio::time::timeout(bound, dns.lookup_ip(dns_name)).await {
            Err(_) => Err(self.timeout(name, bound)),
            Ok(Ok(found)) => {
                let addrs: Vec<IpAddr> = found.iter().collect();
                if addrs.is_empty() {
                    Err(LookupError::NotFound {
                        name: name.to_owned(),
                    })
                } else {
                    Ok(addrs)
                }
            }
            Ok(Err(e)) => Err(self.error(name, bound, e)),
        }
    }

    fn timeout(&self, name: &str, after: Duration) -> LookupError {
        let servers: Vec<String> = self
            .conf
            .nameservers
            .iter()
            .map(ToString::to_string)
            .collect();
        LookupError::Timeout {
            name: name.to_owned(),
            servers: servers.join(", "),
            after,
        }
    }

    fn error(&self, name: &str, bound: Duration, e: NetError) -> LookupError {
        let name = name.to_owned();
        match e {
            NetError::Dns(DnsError::NoRecordsFound(_)) => LookupError::NotFound { name },
            NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => {
                LookupError::NotFound { name }
            }
            NetError::Dns(DnsError::ResponseCode(
                code @ (ResponseCode::ServFail | ResponseCode::Refused),
            )) => LookupError::Temporary {
                name,
                reason: format!("the nameserver answered {code}"),
            },
            NetError::Timeout => self.timeout(&name, bound),
            NetError::Io(e) => LookupError::Temporary {
                name,
                reason: e.to_string(),
            },
            NetError::NoConnections => LookupError::Temporary {
                name,
                reason: "no nameserver could be reached".into(),
            },
            other => LookupError::Failed {
                name,
                reason: other.to_string(),
            },
        }
    }
}

/// `name` as an address: dotted IPv4, IPv6 with or without brackets.
fn literal(name: &str) -> Option<IpAddr> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse().ok()
}

/// hickory's resolver for `conf`: its search list and options; the hosts file is ours.
fn build(conf: &ResolvConf) -> Result<TokioResolver, String> {
    let search = conf
        .search
        .iter()
        .filter_map(|d| Name::from_str_relaxed(d).ok())
        .collect();
    let servers = conf
        .nameservers
        .iter()
        .map(|ip| NameServerConfig::udp_and_tcp(*ip))
        .collect();
    let mut opts = ResolverOpts::default();
    opts.ndots = conf.ndots as usize;
    opts.timeout = conf.timeout;
    // hickory's `attempts` are retries after the first try.
    opts.attempts = conf.attempts.saturating_sub(1) as usize;
    opts.edns0 = conf.edns0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.server_ordering_strategy = if conf.rotate {
        ServerOrderingStrategy::RoundRobin
    } else {
        ServerOrderingStrategy::UserProvidedOrder
    };
    // Ask one nameserver at a time, in order, as libc does.
    opts.num_concurrent_reqs = 1;
    TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, search, servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .map_err(|e| format!("cannot make the resolver: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn literals_and_the_hosts_file_need_no_nameserver() {
        let r = Resolver::new(
            Some(b"nameserver 198.18.255.254\noptions timeout:1 attempts:1\n"),
            Some(b"198.18.3.4 backend backend.ns\n"),
        );
        let rt = runtime();
        assert_eq!(
            rt.block_on(r.lookup("198.18.0.1")),
            Ok(vec!["198.18.0.1".parse().unwrap()])
        );
        assert_eq!(
            rt.block_on(r.lookup("[::1]")),
            Ok(vec!["::1".parse().unwrap()])
        );
        assert_eq!(
            rt.block_on(r.lookup("Backend")),
            Ok(vec!["198.18.3.4".parse().unwrap()])
        );
    }

    #[test]
    fn bad_names_are_refused_before_any_query() {
        let r = Resolver::new(Some(b"nameserver 198.18.255.254\n"), None);
        let rt = runtime();
        for bad in ["", &"a".repeat(300), &format!("{}.example", "b".repeat(64))] {
            assert!(
                matches!(
                    rt.block_on(r.lookup(bad)),
                    Err(LookupError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
