//! Task events, in order, to containerd.
//!
//! Every event goes through one [`EventSender`] (the task core's seam). This sender hands events to a single
//! forwarding thread, so events reach containerd in the order they were sent, and the RPC that
//! sent them never waits on containerd. That thread makes the ttrpc calls itself
//! ([`crate::rpc::client`]). An event containerd cannot take (it is restarting, say) is sent
//! again, connecting anew each time, with growing pauses, for up to [`RETRY_FOR`]; the events
//! after it wait their turn, so a TaskExit never overtakes the TaskOOM before it.
//!
//! The envelope is built here rather than by the framework's `RemotePublisher`, which names the
//! event's type through protobuf reflection: the first use of reflection in a process parses the
//! descriptors of the whole `.proto` file, comments included, and a daemon serving one short task
//! would pay that every time. The type names of the task events are fixed by containerd's API, so
//! [`type_url`] names them from the topic (a unit test checks them against reflection).

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedOutputStream, Message, MessageDyn};
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::topics;

use crate::rpc::client::Client;
use crate::rpc::outstanding::Outstanding;
use crate::sync::lock;
use crate::task::events::{timestamp, EventSender};

/// containerd's events service, as its ttrpc API names it.
const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

/// How long containerd may take to accept one event.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an event is offered to containerd before it is given up (a containerd restart
/// takes seconds; the kubelet waits for the exit of every container it stops).
const RETRY_FOR: Duration = Duration::from_secs(120);

/// The first pause between two attempts; each pause doubles, up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Forwards events to containerd's ttrpc events service from one thread, in order.
pub struct RemoteEvents {
    tx: Mutex<mpsc::Sender<Queued>>,
    /// Events queued and not yet handed to containerd.
    pending: Arc<Outstanding>,
}

/// An event waiting to be published: its topic, the event, and when it was raised.
type Queued = (&'static str, Box<dyn MessageDyn + Send>, Instant);

impl RemoteEvents {
    /// Connects to containerd's ttrpc address (`TTRPC_ADDRESS`) and starts the forwarding thread.
    pub fn connect(ttrpc_address: &str, namespace: String) -> std::io::Result<RemoteEvents> {
        let address = ttrpc_address.to_owned();
        let mut client = Some(Client::connect(&address, FORWARD_TIMEOUT)?);
        let (tx, rx) = mpsc::channel::<Queued>();
        let pending = Arc::new(Outstanding::default());
        let delivered = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for (topic, event, raised) in rx {
                    let request = match request(&namespace, topic, &*event) {
                        Ok(r) => r,
                        Err(e) => {
                            log::error!("cannot publish {topic}: {e}");
                            delivered.done();
                            continue;
                        }
                    };
                    let first = Instant::now();
                    let mut pause = RETRY_PAUSE;
                    for attempt in 1.. {
                        let connected = match client.take() {
                            Some(c) => Ok(c),
                            None => Client::connect(&address, FORWARD_TIMEOUT)
                                .map_err(|e| format!("connect to {address}: {e}")),
                        };
                        let sent = connected.and_then(|mut c| {
                            c.call(EVENTS_SERVICE, "Forward", request.clone())?;
                            client = Some(c);
                            Ok(())
                        });
                        match sent {
                            Ok(()) => {
                                // Said when containerd was away (this event's retries, or an
                                // earlier event's ahead of it in the queue).
                                let waited = raised.elapsed();
                                if attempt > 1 || waited >= RETRY_PAUSE {
                                    log::info!(
                                        "published {topic}{} at attempt {attempt}, \
                                         {waited:.1?} after it was raised",
                                        subject(&*event)
                                    );
                                }
                                break;
                            }
                            Err(e) if first.elapsed() >= RETRY_FOR => {
                                log::error!(
                                    "failed to publish {topic}{} ({attempt} attempts in {:?}): {e}",
                                    subject(&*event),
                                    first.elapsed()
                                );
                                break;
                            }
                            Err(e) => {
                                if attempt == 1 {
                                    log::warn!(
                                        "failed to publish {topic}{}, retrying: {e}",
                                        subject(&*event)
                                    );
                                }
                                std::thread::sleep(pause);
                                pause = (pause * 2).min(RETRY_PAUSE_MAX);
                            }
                        }
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

/// ` for <container id>` when the event names a container, for the log. Through reflection,
/// which costs its first use a parse of the whole `.proto` file (see the module documentation):
/// only the log lines of an event that could not be published at once call it.
fn subject(event: &dyn MessageDyn) -> String {
    let descriptor = event.descriptor_dyn();
    descriptor
        .field_by_name("container_id")
        .map(|field| field.get_singular_field_or_default(event).to_string())
        .filter(|id| !id.is_empty())
        .map(|id| format!(" for {id}"))
        .unwrap_or_default()
}

/// The `Forward` request of one event, stamped now, as the framework's publisher builds it.
fn request(namespace: &str, topic: &str, event: &dyn MessageDyn) -> Result<Vec<u8>, String> {
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
    // The answer is `google.protobuf.Empty`: nothing to read in it.
    req.write_to_bytes().map_err(|e| format!("encode: {e}"))
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
        let tx = lock(&self.tx);
        self.pending.add();
        if tx.send((topic, event, Instant::now())).is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::events::task::{
        TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart,
    };

    #[test]
    fn the_log_names_the_container_an_event_is_about() {
        let mut exit = TaskExit::new();
        exit.container_id = "c1".into();
        assert_eq!(subject(&exit), " for c1");
        assert_eq!(subject(&TaskExit::new()), "");
    }

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

    /// Records the topics of the events forwarded to it.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl containerd_shim::protos::ttrpc::MethodHandler for Recorder {
        fn handler(
            &self,
            ctx: containerd_shim::protos::ttrpc::TtrpcContext,
            req: containerd_shim::protos::ttrpc::Request,
        ) -> containerd_shim::protos::ttrpc::Result<()> {
            let forward = ForwardRequest::parse_from_bytes(&req.payload).expect("forward");
            let topic = forward.envelope.topic.clone();
            self.0.lock().expect("lock").push(topic);
            let mut res = containerd_shim::protos::ttrpc::Response::new();
            res.set_status(containerd_shim::protos::ttrpc::get_status(
                containerd_shim::protos::ttrpc::Code::OK,
                String::new(),
            ));
            containerd_shim::protos::ttrpc::response_to_channel(ctx.mh.stream_id, res, ctx.res_tx)
        }
    }

    fn events_service(
        socket: &std::path::Path,
        seen: &Arc<Mutex<Vec<String>>>,
    ) -> crate::rpc::server::Server {
        let _ = std::fs::remove_file(socket);
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind");
        let mut methods: crate::rpc::server::Methods = std::collections::HashMap::new();
        methods.insert(
            format!("/{EVENTS_SERVICE}/Forward"),
            Box::new(Recorder(Arc::clone(seen))),
        );
        crate::rpc::server::Server::start(listener, methods, &[]).expect("serve")
    }

    #[test]
    fn events_sent_while_containerd_is_away_arrive_in_order_once_it_is_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("containerd.sock");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = events_service(&socket, &seen);
        let events = RemoteEvents::connect(socket.to_str().expect("utf-8"), "default".into())
            .expect("connect");
        events.send(topics::TASK_START_EVENT_TOPIC, Box::new(TaskStart::new()));
        events.flush(Duration::from_secs(10));
        // containerd goes away (its socket too, as at a restart); the task is OOM-killed.
        server.shutdown(Duration::from_secs(5));
        let _ = std::fs::remove_file(&socket);
        events.send(topics::TASK_OOM_EVENT_TOPIC, Box::new(TaskOOM::new()));
        events.send(topics::TASK_EXIT_EVENT_TOPIC, Box::new(TaskExit::new()));
        std::thread::sleep(Duration::from_millis(1500));
        let back = events_service(&socket, &seen);
        events.flush(Duration::from_secs(20));
        assert_eq!(
            *seen.lock().expect("lock"),
            [
                topics::TASK_START_EVENT_TOPIC,
                topics::TASK_OOM_EVENT_TOPIC,
                topics::TASK_EXIT_EVENT_TOPIC
            ]
        );
        back.shutdown(Duration::from_secs(5));
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
