//! What the cell's resolver (`wasmcell_net`) reads that a hostile image or nameserver controls:
//! the container's `/etc/resolv.conf` and `/etc/hosts` (an image brings its own when nothing is
//! mounted there), and a nameserver's answer, decoded by the same hickory-proto decoder the
//! resolver's answers go through, with A and AAAA taken out as a lookup takes them. Nothing
//! panics, the configuration stays within libc's bounds, and the hosts table within its cap.
#![no_main]

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use libfuzzer_sys::fuzz_target;
use wasmcell_net::{Hosts, ResolvConf};

fuzz_target!(|data: &[u8]| {
    let conf = ResolvConf::parse(data);
    assert!(!conf.nameservers.is_empty() && conf.nameservers.len() <= 3);
    assert!(conf.ndots <= 15 && (1..=5).contains(&conf.attempts));
    assert!(conf.timeout >= Duration::from_secs(1) && conf.timeout <= Duration::from_secs(30));
    assert!(conf.lookup_bound() <= Duration::from_secs(30 * 5 * 3));

    let hosts = Hosts::parse(data);
    assert!(hosts.len() <= 16 * 1024);
    if let Some(name) = std::str::from_utf8(data).ok().and_then(|t| t.split_whitespace().nth(1)) {
        let _ = hosts.lookup(name);
    }

    if let Ok(message) = Message::from_vec(data) {
        let addrs: Vec<IpAddr> = message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        assert!(addrs.len() <= message.answers.len());
    }
});
