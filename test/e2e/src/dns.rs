//! A nameserver for the tests, on port 53 of an address inside a network namespace the test made:
//! it answers A and AAAA queries from a small zone, NXDOMAIN for anything else, and misbehaves
//! on purpose for a few names. Written on the wire format directly (RFC 1035), so it shares no
//! code with the resolver under test.
//!
//! | name | over UDP | over TCP |
//! |---|---|---|
//! | a name of the zone | its records (none of a type: an empty answer) | the same |
//! | `wrongid.test` | an answer whose id is not the query's | the same |
//! | `loop.test` | an answer whose name is a compression pointer to itself | the same |
//! | `truncated.test` | TC set, no answer | A 198.18.6.6 |
//! | `huge.test` | TC set, no answer | a 64 KiB message of A records |
//! | anything else | NXDOMAIN | NXDOMAIN |
//!
//! A negative answer (NXDOMAIN, or a name of the zone without records of the type asked for)
//! carries an SOA record whose TTL is 5 s, as an authoritative server's does (RFC 2308): a
//! resolver may cache it that long.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::netns::NetNs;

/// The address `truncated.test` has, over TCP.
pub const TRUNCATED_ANSWER: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 6);

/// Records of the zone: the addresses of each name.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    names: HashMap<String, (Vec<Ipv4Addr>, Vec<Ipv6Addr>)>,
}

impl Zone {
    /// Adds `addr` to `name`'s records.
    pub fn with(mut self, name: &str, addr: IpAddr) -> Zone {
        let entry = self
            .names
            .entry(name.trim_end_matches('.').to_ascii_lowercase())
            .or_default();
        match addr {
            IpAddr::V4(a) => entry.0.push(a),
            IpAddr::V6(a) => entry.1.push(a),
        }
        self
    }
}

/// A running test nameserver; stopped on drop.
pub struct TestDns {
    queries: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TestDns {
    /// Serves `zone` on `addr`:53 (UDP and TCP) inside `netns`.
    pub fn start(netns: &NetNs, addr: IpAddr, zone: Zone) -> TestDns {
        Self::serve(Some(netns), addr, Some(zone))
    }

    /// Serves `zone` on `addr`:53 of this process's network namespace (a loopback address
    /// nothing else uses, such as 127.0.0.53).
    pub fn start_here(addr: IpAddr, zone: Zone) -> TestDns {
        Self::serve(None, addr, Some(zone))
    }

    /// Takes UDP queries on `addr`:53 inside `netns` and never answers: a dead nameserver.
    pub fn silent(netns: &NetNs, addr: IpAddr) -> TestDns {
        Self::serve(Some(netns), addr, None)
    }

    fn serve(netns: Option<&NetNs>, addr: IpAddr, zone: Option<Zone>) -> TestDns {
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let at = SocketAddr::new(addr, 53);
        let bind = move || {
            let udp = UdpSocket::bind(at).expect("bind the test nameserver's UDP port");
            let tcp = TcpListener::bind(at).expect("bind the test nameserver's TCP port");
            (udp, tcp)
        };
        let (udp, tcp) = match netns {
            Some(netns) => netns.enter(bind),
            None => bind(),
        };
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        tcp.set_nonblocking(true).expect("nonblocking");
        let zone = zone.map(Arc::new);
        {
            let (queries, stop, zone) = (queries.clone(), stop.clone(), zone.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some(zone) = &zone else { continue };
                    if let Some(reply) = answer(&buf[..n], zone, false, &queries) {
                        let _ = udp.send_to(&reply, from);
                    }
                }
            });
        }
        {
            let (queries, stop) = (queries.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut conn, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let Some(zone) = zone.clone() else { continue };
                    let queries = queries.clone();
                    // A connection of its own thread: a resolver keeps its connections open.
                    std::thread::spawn(move || {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut len = [0u8; 2];
                        while conn.read_exact(&mut len).is_ok() {
                            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            if conn.read_exact(&mut query).is_err() {
                                break;
                            }
                            let Some(reply) = answer(&query, &zone, true, &queries) else {
                                break;
                            };
                            let size =
                                u16::try_from(reply.len()).expect("a reply fits TCP framing");
                            let _ = conn.write_all(&size.to_be_bytes());
                            let _ = conn.write_all(&reply);
                        }
                    });
                }
            });
        }
        TestDns { queries, stop }
    }

    /// The queries seen so far, as `<type> <name>` (`A backend.ns.svc.cluster.local`), with
    /// `tcp ` in front of those that came over TCP.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().expect("queries").clone()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The question of a query: its name, type, and where the question ends.
fn question(query: &[u8]) -> Option<(String, u16, usize)> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// The reply to `query`, or `None` for one not worth answering.
fn answer(query: &[u8], zone: &Zone, tcp: bool, log: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(query)?;
    let kind = match qtype {
        TYPE_A => "A",
        TYPE_AAAA => "AAAA",
        _ => "other",
    };
    log.lock()
        .expect("queries")
        .push(format!("{}{kind} {name}", if tcp { "tcp " } else { "" }));
    // Header: the query's id and question, QR and RD/RA set.
    let mut reply = query[..end].to_vec();
    reply[2] = 0x81;
    reply[3] = 0x80;
    reply[6..12].fill(0);
    let set_answers = |reply: &mut Vec<u8>, n: u16| reply[6..8].copy_from_slice(&n.to_be_bytes());
    // An answer record for the question's name (a pointer to offset 12).
    let record = |reply: &mut Vec<u8>, data: &[u8], rtype: u16| {
        reply.extend_from_slice(&[0xc0, 12]);
        reply.extend_from_slice(&rtype.to_be_bytes());
        reply.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
        reply.extend_from_slice(&u16::try_from(data.len()).unwrap_or(0).to_be_bytes());
        reply.extend_from_slice(data);
    };
    match name.as_str() {
        "wrongid.test" => {
            reply[0] ^= 0xff;
            record(&mut reply, &[198, 18, 9, 1], TYPE_A);
            set_answers(&mut reply, 1);
        }
        "loop.test" => {
            // The answer's name points at itself.
            let here = u16::try_from(reply.len()).unwrap_or(0) | 0xc000;
            reply.extend_from_slice(&here.to_be_bytes());
            reply.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 198, 18, 9, 2]);
            set_answers(&mut reply, 1);
        }
        "truncated.test" | "huge.test" if !tcp => reply[2] |= 0x02,
        "truncated.test" => {
            if qtype == TYPE_A {
                record(&mut reply, &TRUNCATED_ANSWER.octets(), TYPE_A);
                set_answers(&mut reply, 1);
            }
        }
        "huge.test" => {
            let mut n: u16 = 0;
            while reply.len() + 16 <= usize::from(u16::MAX) {
                let [hi, lo] = n.to_be_bytes();
                record(&mut reply, &[198, 19, hi, lo], TYPE_A);
                n += 1;
            }
            set_answers(&mut reply, n);
        }
        _ => match zone.names.get(&name) {
            None => {
                reply[3] = 0x83;
                negative(&mut reply);
            }
            Some((v4, v6)) => {
                let mut n = 0;
                if qtype == TYPE_A {
                    for a in v4 {
                        record(&mut reply, &a.octets(), TYPE_A);
                        n += 1;
                    }
                } else if qtype == TYPE_AAAA {
                    for a in v6 {
                        record(&mut reply, &a.octets(), TYPE_AAAA);
                        n += 1;
                    }
                }
                set_answers(&mut reply, n);
                if n == 0 {
                    negative(&mut reply);
                }
            }
        },
    }
    Some(reply)
}

/// Adds the SOA of a negative answer to `reply`'s authority section: owned by the question's
/// name, TTL 5 s, root names for the server and the mailbox, minimum 5 s.
fn negative(reply: &mut Vec<u8>) {
    reply.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 5, 0, 22, 0, 0]);
    for value in [1u32, 3600, 600, 86400, 5] {
        reply.extend_from_slice(&value.to_be_bytes());
    }
    reply[8..10].copy_from_slice(&1u16.to_be_bytes());
}
