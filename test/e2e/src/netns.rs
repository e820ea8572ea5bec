//! Network namespaces the tests make (`ip netns`), and code run inside them: a pod's network
//! without a CNI, for a guest's sockets and the test servers it talks to.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A named network namespace with its loopback up, deleted on drop.
pub struct NetNs {
    /// Its name under /var/run/netns.
    pub name: String,
}

impl NetNs {
    /// A new namespace named after this process and `what`.
    pub fn create(what: &str) -> NetNs {
        let name = format!("wasmcell-e2e-{}-{what}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Its path, for a spec's (or `ctr run --with-ns`'s) network namespace.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `f` on a thread of its own inside this namespace (sockets it opens are the
    /// namespace's, and stay so whichever thread uses them later).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("the thread in the netns")
    }

    /// Connects to `addr` from inside this namespace, retrying for up to `patience`; returns
    /// what the peer wrote.
    pub fn fetch(&self, addr: SocketAddr, patience: Duration) -> std::io::Result<String> {
        self.enter(move || {
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
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
