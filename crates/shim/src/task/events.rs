//! The events the task core sends, through a sender it is given: containerd's events service
//! in the shim (`crate::service::events`), a recorder in unit tests.

use std::time::Duration;

use containerd_shim::protos::protobuf::MessageDyn;

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
