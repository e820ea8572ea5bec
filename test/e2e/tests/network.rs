//! The cell is in the network namespace the spec names by path (a pod's): a guest's TCP listener
//! (WASI sockets) is reachable inside that namespace and not from the host's.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use wasmcell_e2e::netns::NetNs;
use wasmcell_e2e::{fixtures, Containerd};

const IMG: &str = "wasmcell.test/listener:latest";

#[test]
fn a_guest_listener_is_reachable_in_the_pod_netns_only() {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, fixtures::LISTENER_PORT));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "something on the host listens on {addr} already: the test cannot tell"
    );
    let c = Containerd::start();
    c.import_wasm(IMG, "listener.wasm", fixtures::LISTENER);
    let netns = NetNs::create("listener");
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
