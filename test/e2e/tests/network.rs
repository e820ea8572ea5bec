//! The cell is in the network namespace the spec names by path (a pod's): a guest's TCP listener
//! (WASI sockets) is reachable inside that namespace and not from the host's.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmcell_e2e::{fixtures, Containerd};

const IMG: &str = "wasmcell.test/listener:latest";

/// A named network namespace (`ip netns`) with its loopback up, deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create() -> NetNs {
        let name = format!("wasmcell-e2e-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Connects to `addr` from inside this namespace (on a thread that enters it), retrying
    /// for up to `patience`; returns what the peer wrote.
    fn fetch(&self, addr: SocketAddr, patience: Duration) -> std::io::Result<String> {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path)?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let deadline = Instant::now() + patience;
            loop {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(mut s) => {
                        let mut reply = String::new();
                        s.read_to_string(&mut reply)?;
                        return Ok(reply);
                    }
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .join()
        .expect("the connecting thread")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

#[test]
fn a_guest_listener_is_reachable_in_the_pod_netns_only() {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, fixtures::LISTENER_PORT));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "something on the host listens on {addr} already: the test cannot tell"
    );
    let c = Containerd::start();
    c.import_wasm(IMG, "listener.wasm", fixtures::LISTENER);
    let netns = NetNs::create();
    let events = c.events();
    let with_ns = format!("network:{}", netns.path());
    let r = c.run_detached(
        &["--with-ns", &with_ns],
        IMG,
        "listener",
        &["/listener.wasm"],
    );
    assert_eq!(r.code, 0, "{r:?}");

    // Inside the namespace: the guest answers (retry while it starts listening).
    let reply = netns
        .fetch(addr, Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "connect to the guest inside {}: {e}; events of the task: {:?}",
                netns.name,
                events.of_task("listener")
            )
        });
    assert_eq!(reply, fixtures::LISTENER_REPLY);
    let exit = events
        .wait_for("/tasks/exit", "listener", Duration::from_secs(10))
        .expect("the guest exits after one connection");
    assert_eq!(exit.exit_status(), 0, "{exit:?}");

    // From the host's namespace nothing listens there, before or after.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
}
