//! Task events, in order.
//!
//! Every event goes through one [`EventSender`]. The production sender hands events to a single
//! forwarding thread, so events reach containerd in the order they were sent, and the RPC that
//! sent them never waits on containerd. That thread makes the ttrpc calls itself
//! ([`crate::rpc::client`]); if a call fails, the next event connects anew.
//!
//! The envelope is built here rather than by the framework's `RemotePublisher`, which names the
//! event's type through protobuf reflection: the first use of reflection in a process parses the
//! descriptors of the whole `.proto` file, comments included, and a daemon serving one short task
//! paid that every time. The type names of the task events are fixed by containerd's API, so
//! [`type_url`] names them from the topic (a unit test checks them against reflection).

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedOutputStream, Message, MessageDyn};
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::topics;

use crate::outstanding::Outstanding;
use crate::rpc::client::Client;

/// containerd's events service, as its ttrpc API names it.
const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

/// How long containerd may take to accept one event.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

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
    pending: Arc<Outstanding>,
}

impl RemoteEvents {
    /// Connects to containerd's ttrpc address (`TTRPC_ADDRESS`) and starts the forwarding thread.
    pub fn connect(ttrpc_address: &str, namespace: String) -> std::io::Result<RemoteEvents> {
        let address = ttrpc_address.to_owned();
        let mut client = Some(Client::connect(&address, FORWARD_TIMEOUT)?);
        let (tx, rx) = mpsc::channel::<(&'static str, Box<dyn MessageDyn + Send>)>();
        let pending = Arc::new(Outstanding::default());
        let delivered = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for (topic, event) in rx {
                    let connected = match client.take() {
                        Some(c) => Ok(c),
                        None => Client::connect(&address, FORWARD_TIMEOUT)
                            .map_err(|e| format!("connect to {address}: {e}")),
                    };
                    let sent = connected.and_then(|mut c| {
                        forward(&mut c, &namespace, topic, &*event)?;
                        client = Some(c);
                        Ok(())
                    });
                    if let Err(e) = sent {
                        log::error!("failed to publish {topic}: {e}");
                    }
                    delivered.done();
                }
            })?;
        Ok(RemoteEvents {
            tx: Mutex::new(tx),
            pending,
        })
    }
}

/// Sends one event to containerd's events service, as the framework's publisher would.
fn forward(
    client: &mut Client,
    namespace: &str,
    topic: &str,
    event: &dyn MessageDyn,
) -> Result<(), String> {
    let mut any = Any::new();
    any.type_url = match type_url(topic) {
        Some(name) => name.to_owned(),
        None => event.descriptor_dyn().full_name().to_owned(),
    };
    any.value = encode(event).map_err(|e| format!("encode: {e}"))?;
    let mut envelope = Envelope::new();
    envelope.set_topic(topic.to_owned());
    envelope.set_namespace(namespace.to_owned());
    envelope.set_timestamp(timestamp(std::time::SystemTime::now()));
    envelope.set_event(any);
    let mut req = ForwardRequest::new();
    req.set_envelope(envelope);
    let bytes = req.write_to_bytes().map_err(|e| format!("encode: {e}"))?;
    // The answer is `google.protobuf.Empty`: nothing to read in it.
    client.call(EVENTS_SERVICE, "Forward", bytes).map(drop)
}

/// The bytes of `event`. `MessageDyn::write_to_vec_dyn` would look up the message's descriptor
/// (for the text of an error it seldom gives), which is the reflection this module avoids; this
/// runs only the message's generated code.
fn encode(event: &dyn MessageDyn) -> containerd_shim::protos::protobuf::Result<Vec<u8>> {
    let size = event.compute_size_dyn();
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    {
        let mut os = CodedOutputStream::vec(&mut bytes);
        event.write_to_with_cached_sizes_dyn(&mut os)?;
        os.flush()?;
    }
    Ok(bytes)
}

/// The protobuf type of the events of `topic`, as containerd's API defines it.
fn type_url(topic: &str) -> Option<&'static str> {
    Some(match topic {
        topics::TASK_CREATE_EVENT_TOPIC => "containerd.events.TaskCreate",
        topics::TASK_START_EVENT_TOPIC => "containerd.events.TaskStart",
        topics::TASK_EXIT_EVENT_TOPIC => "containerd.events.TaskExit",
        topics::TASK_DELETE_EVENT_TOPIC => "containerd.events.TaskDelete",
        topics::TASK_OOM_EVENT_TOPIC => "containerd.events.TaskOOM",
        topics::TASK_PAUSED_EVENT_TOPIC => "containerd.events.TaskPaused",
        topics::TASK_RESUMED_EVENT_TOPIC => "containerd.events.TaskResumed",
        _ => return None,
    })
}

impl EventSender for RemoteEvents {
    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn + Send>) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        self.pending.add();
        if tx.send((topic, event)).is_err() {
            self.pending.done();
            log::error!("events thread is gone: dropping {topic}");
        }
    }

    fn flush(&self, timeout: Duration) {
        let undelivered = self.pending.wait_all(timeout);
        if undelivered > 0 {
            log::warn!("{undelivered} events not delivered before exit");
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

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::events::task::{
        TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart,
    };

    #[test]
    fn type_names_match_the_protobuf_descriptors() {
        let events: [(&str, Box<dyn MessageDyn>); 7] = [
            (topics::TASK_CREATE_EVENT_TOPIC, Box::new(TaskCreate::new())),
            (topics::TASK_START_EVENT_TOPIC, Box::new(TaskStart::new())),
            (topics::TASK_EXIT_EVENT_TOPIC, Box::new(TaskExit::new())),
            (topics::TASK_DELETE_EVENT_TOPIC, Box::new(TaskDelete::new())),
            (topics::TASK_OOM_EVENT_TOPIC, Box::new(TaskOOM::new())),
            (topics::TASK_PAUSED_EVENT_TOPIC, Box::new(TaskPaused::new())),
            (
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed::new()),
            ),
        ];
        for (topic, event) in events {
            assert_eq!(
                type_url(topic),
                Some(event.descriptor_dyn().full_name()),
                "{topic}"
            );
        }
        assert_eq!(type_url("/tasks/exec-added"), None);
    }

    #[test]
    fn encodes_as_the_framework_does() {
        let mut exit = TaskExit::new();
        exit.container_id = "c1".into();
        exit.pid = 42;
        exit.exit_status = 137;
        exit.exited_at = Some(timestamp(std::time::SystemTime::now())).into();
        assert_eq!(
            encode(&exit).unwrap(),
            (&exit as &dyn MessageDyn).write_to_bytes_dyn().unwrap()
        );
    }
}
