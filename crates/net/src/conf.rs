//! The container's `/etc/resolv.conf`, read as the GNU C library reads it (resolv.conf(5)).
//!
//! - `nameserver`: at most [`MAX_NAMESERVERS`], the first ones; none at all means the server on
//!   the container's own loopback, `127.0.0.1` and `::1`, as libc assumes.
//! - `search` / `domain`: the last of the two lines wins, as in libc.
//! - `options`: `ndots` (capped at 15), `timeout` (seconds, capped at 30), `attempts` (capped at
//!   5), `rotate`, `edns0`; others are read and have no effect. A line that does not parse is
//!   skipped, as libc skips it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// libc's `MAXNS`: nameservers past the third are ignored.
pub const MAX_NAMESERVERS: usize = 3;
/// libc's `RES_MAXNDOTS`.
const MAX_NDOTS: u32 = 15;
/// libc's `RES_MAXRETRANS`, in seconds.
const MAX_TIMEOUT_SECS: u32 = 30;
/// libc's `RES_MAXRETRY`.
const MAX_ATTEMPTS: u32 = 5;

/// What the resolver takes from resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// The nameservers, in the file's order.
    pub nameservers: Vec<IpAddr>,
    /// The search list, in the file's order.
    pub search: Vec<String>,
    /// A name with at least this many dots is tried as it is before the search list.
    pub ndots: u32,
    /// How long one query waits for one nameserver.
    pub timeout: Duration,
    /// How many rounds over the nameservers a query makes.
    pub attempts: u32,
    /// Spread queries over the nameservers instead of asking the first one first.
    pub rotate: bool,
    /// Advertise a larger UDP payload (EDNS0).
    pub edns0: bool,
}

impl Default for ResolvConf {
    /// What libc uses when there is no resolv.conf at all.
    fn default() -> Self {
        ResolvConf::parse(b"")
    }
}

impl ResolvConf {
    /// Parses `bytes` leniently, as libc does: what cannot be read is left out.
    pub fn parse(bytes: &[u8]) -> ResolvConf {
        let (parsed, _skipped) = ::resolv_conf::Config::parse_with_errors(bytes);
        let mut nameservers: Vec<IpAddr> = parsed
            .nameservers
            .iter()
            .map(IpAddr::from)
            .take(MAX_NAMESERVERS)
            .collect();
        if nameservers.is_empty() {
            nameservers = vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
        }
        let search = parsed
            .get_last_search_or_domain()
            .filter(|d| !d.is_empty() && *d != "--" && *d != ".")
            .map(|d| d.trim_end_matches('.').to_owned())
            .collect();
        ResolvConf {
            nameservers,
            search,
            ndots: parsed.ndots.min(MAX_NDOTS),
            timeout: Duration::from_secs(u64::from(parsed.timeout.clamp(1, MAX_TIMEOUT_SECS))),
            attempts: parsed.attempts.clamp(1, MAX_ATTEMPTS),
            rotate: parsed.rotate,
            edns0: parsed.edns0,
        }
    }

    /// The longest a lookup may take before it fails as timed out: each attempt asks each
    /// nameserver once and waits `timeout` for it, as libc's does (libc then stops, whatever
    /// is left of the search list).
    pub fn lookup_bound(&self) -> Duration {
        let rounds = self
            .attempts
            .saturating_mul(self.nameservers.len().max(1) as u32);
        self.timeout.saturating_mul(rounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_s_file_is_read_whole() {
        let conf = ResolvConf::parse(
            b"search ns.svc.cluster.local svc.cluster.local cluster.local\n\
              nameserver 10.96.0.10\n\
              options ndots:5 timeout:2 attempts:3 rotate edns0\n",
        );
        assert_eq!(
            conf.nameservers,
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            conf.search,
            vec!["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]
        );
        assert_eq!(conf.ndots, 5);
        assert_eq!(conf.timeout, Duration::from_secs(2));
        assert_eq!(conf.attempts, 3);
        assert!(conf.rotate && conf.edns0);
        assert_eq!(conf.lookup_bound(), Duration::from_secs(6));
    }

    #[test]
    fn libc_s_defaults_and_caps() {
        let empty = ResolvConf::default();
        assert_eq!(empty.nameservers.len(), 2, "the loopback, both families");
        assert_eq!((empty.ndots, empty.attempts), (1, 2));
        assert_eq!(empty.timeout, Duration::from_secs(5));
        let wild = ResolvConf::parse(
            b"nameserver 198.18.0.1\nnameserver 198.18.0.2\nnameserver ::1\nnameserver 198.18.0.4\n\
              options ndots:99 timeout:3600 attempts:1000\n\
              garbage line\nnameserver not-an-address\n",
        );
        assert_eq!(wild.nameservers.len(), MAX_NAMESERVERS);
        assert_eq!(wild.nameservers[2], "::1".parse::<IpAddr>().unwrap());
        assert_eq!((wild.ndots, wild.attempts), (15, 5));
        assert_eq!(wild.timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_last_of_search_and_domain_wins() {
        let conf = ResolvConf::parse(b"search a.example b.example\ndomain c.example\n");
        assert_eq!(conf.search, vec!["c.example"]);
        let conf = ResolvConf::parse(b"domain c.example\nsearch a.example. b.example\n");
        assert_eq!(conf.search, vec!["a.example", "b.example"]);
    }
}
