//! Task events, in order.
//!
//! Every event goes through one [`EventSender`]. The production sender hands events to a single
//! forwarding thread, so events reach containerd in the order they were sent, and the RPC that
//! sent them never waits on containerd. Tests use a sender that records them.

use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;

/// Something that delivers task events to containerd.
pub trait EventSender: Send + Sync {
    /// Queues `event` under `topic` (for example `/tasks/exit`).
    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn + Send>);

    /// Waits, at most `timeout`, until every queued event has been delivered (or failed), so a
    /// shim about to exit does not drop its last events.
    fn flush(&self, timeout: Duration) {
        let _ = timeout;
    }
}

/// Forwards events to containerd's ttrpc events service from one thread, in order.
pub struct RemoteEvents {
    tx: Mutex<mpsc::Sender<(&'static str, Box<dyn MessageDyn + Send>)>>,
    /// Events queued and not yet handed to containerd.
    pending: Arc<(Mutex<usize>, Condvar)>,
}

impl RemoteEvents {
    /// Starts the forwarding thread.
    pub fn new(publisher: RemotePublisher, namespace: String) -> RemoteEvents {
        let (tx, rx) = mpsc::channel::<(&'static str, Box<dyn MessageDyn + Send>)>();
        let pending = Arc::new((Mutex::new(0usize), Condvar::new()));
        let done = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for (topic, event) in rx {
                    if let Err(e) = publisher.publish(Context::default(), topic, &namespace, event)
                    {
                        log::error!("failed to publish {topic}: {e}");
                    }
                    let (count, cv) = &*done;
                    let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
                    *n = n.saturating_sub(1);
                    cv.notify_all();
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| log::error!("cannot start the events thread: {e}"));
        RemoteEvents {
            tx: Mutex::new(tx),
            pending,
        }
    }
}

impl EventSender for RemoteEvents {
    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn + Send>) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        *self.pending.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        if tx.send((topic, event)).is_err() {
            *self.pending.0.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
            log::error!("events thread is gone: dropping {topic}");
        }
    }

    fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (count, cv) = &*self.pending;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("{} events not delivered before exit", *n);
                return;
            }
            n = cv
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
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
