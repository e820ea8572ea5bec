//! Task events, in order.
//!
//! Every event goes through one [`EventSender`]. The production sender hands events to a single
//! forwarding thread, so events reach containerd in the order they were sent, and the RPC that
//! sent them never waits on containerd. Tests use a sender that records them.

use std::sync::mpsc;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;

/// Something that delivers task events to containerd.
pub trait EventSender: Send + Sync {
    /// Queues `event` under `topic` (for example `/tasks/exit`).
    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn + Send>);
}

/// Forwards events to containerd's ttrpc events service from one thread, in order.
pub struct RemoteEvents {
    tx: std::sync::Mutex<mpsc::Sender<(&'static str, Box<dyn MessageDyn + Send>)>>,
}

impl RemoteEvents {
    /// Starts the forwarding thread.
    pub fn new(publisher: RemotePublisher, namespace: String) -> RemoteEvents {
        let (tx, rx) = mpsc::channel::<(&'static str, Box<dyn MessageDyn + Send>)>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for (topic, event) in rx {
                    if let Err(e) = publisher.publish(Context::default(), topic, &namespace, event)
                    {
                        log::error!("failed to publish {topic}: {e}");
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| log::error!("cannot start the events thread: {e}"));
        RemoteEvents {
            tx: std::sync::Mutex::new(tx),
        }
    }
}

impl EventSender for RemoteEvents {
    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn + Send>) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.send((topic, event)).is_err() {
            log::error!("events thread is gone: dropping {topic}");
        }
    }
}

/// Converts a system time to the protobuf timestamp containerd expects.
pub fn timestamp(
    t: std::time::SystemTime,
) -> containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut ts = containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}
