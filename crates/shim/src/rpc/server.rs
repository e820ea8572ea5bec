//! The daemon's ttrpc server: one thread that accepts connections and reads their requests. It
//! answers itself only the methods named when it starts, those that never wait; every other
//! request gets a thread of its own, so that a call that takes long (Create compiling a
//! program, Wait lasting as long as the task, a runc that hangs) holds up nothing else.
//!
//! Requests are handed to the generated method handlers of `containerd-shim-protos`, which
//! decode the request, call the service and pass the encoded response back on a channel, as
//! with the `ttrpc` crate's server. A request that cannot be served (not a protobuf `Request`,
//! an unknown method, more than 4 MiB) is answered with an error status and the connection
//! stays open; the `ttrpc` crate closes it instead.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::{self, Code, MethodHandler, TtrpcContext};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::frame::{self, Frame, Header, REQUEST, RESPONSE};
use crate::rpc::outstanding::Outstanding;
use crate::rpc::workers::Workers;
use crate::sync::lock;

/// Method handlers by path (`/containerd.task.v2.Task/Create`), as `create_task` returns them.
pub type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// How long reading a whole frame (it begins once the connection is readable) or writing a
/// response may take before the connection is given up: containerd writes and reads whole
/// frames at once. The one serving thread is never held longer by a client that trickles.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one read inside a frame may wait; reads are retried within [`IO_TIMEOUT`].
const STALL: Duration = Duration::from_secs(1);

/// A connection's reads for one frame, all within one deadline.
struct FrameReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
    /// The socket's read timeout was shortened to the time left (restored on drop).
    shortened: bool,
}

impl<'a> FrameReader<'a> {
    fn new(stream: &'a UnixStream) -> FrameReader<'a> {
        FrameReader {
            stream,
            deadline: Instant::now() + IO_TIMEOUT,
            shortened: false,
        }
    }
}

impl Read for FrameReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("a frame not read whole within {IO_TIMEOUT:?}"),
            ));
        }
        if left < STALL {
            self.stream.set_read_timeout(Some(left))?;
            self.shortened = true;
        }
        match (&mut &*self.stream).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("a frame stalled for {STALL:?}"),
            )),
            r => r,
        }
    }
}

impl Drop for FrameReader<'_> {
    fn drop(&mut self) {
        if self.shortened {
            let _ = self.stream.set_read_timeout(Some(STALL));
        }
    }
}

/// A running server; [`Server::shutdown`] stops it.
pub struct Server {
    wake: UnixStream,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    methods: Methods,
    /// Methods the serving thread answers itself.
    inline: Vec<String>,
    /// Requests read and not yet answered.
    in_flight: Outstanding,
    /// The threads of the requests not answered inline.
    workers: Workers,
}

/// One client connection, as the calls answering on it see it.
struct Connection {
    writer: Mutex<UnixStream>,
    fd: RawFd,
    /// Disconnected when the connection closes, for handlers that watch for cancellation.
    cancelled: crossbeam_channel::Receiver<()>,
}

/// A connection as the serving thread holds it.
struct Open {
    reader: UnixStream,
    connection: Arc<Connection>,
    /// Dropped with the connection, which disconnects `Connection::cancelled`.
    _cancel: crossbeam_channel::Sender<()>,
}

impl Server {
    /// Starts serving `methods` on `listener`; `inline` names the methods (by path) that the
    /// serving thread answers itself, those that never wait. Every other request is answered
    /// on a thread of its own.
    pub fn start(listener: UnixListener, methods: Methods, inline: &[&str]) -> io::Result<Server> {
        let (wake, woken) = UnixStream::pair()?;
        let shared = Arc::new(Shared {
            methods,
            inline: inline.iter().map(|m| (*m).to_owned()).collect(),
            in_flight: Outstanding::default(),
            workers: Workers::default(),
        });
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ttrpc".into())
            .spawn(move || serve(&listener, &woken, &serving))?;
        Ok(Server {
            wake,
            shared,
            thread: Some(thread),
        })
    }

    /// Waits, at most `timeout`, until every request read has been answered (the Shutdown
    /// request that ended the daemon among them), then stops accepting and reading.
    pub fn shutdown(mut self, timeout: Duration) {
        let unanswered = self.shared.in_flight.wait_all(timeout);
        if unanswered > 0 {
            log::warn!("{unanswered} ttrpc requests still unanswered at shutdown");
        }
        self.stop();
    }

    fn stop(&mut self) {
        let _ = io::Write::write_all(&mut self.wake, b"x");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The serving thread: waits for the listener, the connections and the wake-up socket at once.
fn serve(listener: &UnixListener, woken: &UnixStream, shared: &Arc<Shared>) {
    let mut open: Vec<Open> = Vec::new();
    loop {
        let ready: Vec<bool> = {
            let readable = PollFlags::POLLIN;
            let mut fds = vec![
                PollFd::new(woken.as_fd(), readable),
                PollFd::new(listener.as_fd(), readable),
            ];
            fds.extend(open.iter().map(|o| PollFd::new(o.reader.as_fd(), readable)));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("ttrpc server: poll: {e}; no longer serving");
                    return;
                }
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        if ready[0] {
            return;
        }
        // Backwards, so that closing one keeps the indices of those still to look at.
        for i in (0..open.len()).rev() {
            if ready[2 + i] && !serve_frame(&mut open[i], shared) {
                open.swap_remove(i);
            }
        }
        if ready[1] {
            match accept(listener) {
                Ok(o) => open.push(o),
                Err(e) => {
                    log::error!("ttrpc server: accept: {e}");
                    // Out of fds or memory: give the condition time to pass rather than spin.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

fn accept(listener: &UnixListener) -> io::Result<Open> {
    let (reader, _) = listener.accept()?;
    reader.set_read_timeout(Some(STALL))?;
    let writer = reader.try_clone()?;
    writer.set_write_timeout(Some(IO_TIMEOUT))?;
    let (cancel, cancelled) = crossbeam_channel::unbounded();
    Ok(Open {
        connection: Arc::new(Connection {
            fd: reader.as_raw_fd(),
            writer: Mutex::new(writer),
            cancelled,
        }),
        reader,
        _cancel: cancel,
    })
}

/// Reads and answers one frame; false when the connection is over.
fn serve_frame(open: &mut Open, shared: &Arc<Shared>) -> bool {
    let read = frame::read(&mut FrameReader::new(&open.reader));
    match read {
        Ok(None) => false,
        Err(e) => {
            log::debug!("ttrpc connection closed: {e}");
            false
        }
        Ok(Some(Frame::Oversized(header))) => {
            let why = format!(
                "ttrpc message of {} bytes, more than the {} allowed",
                header.length,
                frame::MAX_PAYLOAD
            );
            answer(
                &open.connection,
                header.stream_id,
                status(Code::RESOURCE_EXHAUSTED, why),
            );
            true
        }
        Ok(Some(Frame::Message(header, payload))) => {
            dispatch(shared, &open.connection, header, &payload);
            true
        }
    }
}

/// Counts a request in flight until it is answered.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> InFlight {
        shared.in_flight.add();
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.done();
    }
}

fn dispatch(shared: &Arc<Shared>, connection: &Arc<Connection>, header: Header, payload: &[u8]) {
    if header.kind != REQUEST {
        log::warn!(
            "ttrpc: ignoring a message of type {} on stream {}",
            header.kind,
            header.stream_id
        );
        return;
    }
    let in_flight = InFlight::new(shared);
    let request = match ttrpc::Request::parse_from_bytes(payload) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("malformed ttrpc request: {e}");
            answer(
                connection,
                header.stream_id,
                status(Code::INVALID_ARGUMENT, why),
            );
            return;
        }
    };
    let path = format!("/{}/{}", request.service, request.method);
    if shared.inline.contains(&path) {
        call(shared, connection, header, &path, request);
        drop(in_flight);
        return;
    }
    let (serving, on_thread) = (Arc::clone(shared), Arc::clone(connection));
    let spawned = shared.workers.run(Box::new(move || {
        call(&serving, &on_thread, header, &path, request);
        drop(in_flight);
    }));
    if let Err(e) = spawned {
        let why = format!("cannot start a thread for the request: {e}");
        answer(connection, header.stream_id, status(Code::UNAVAILABLE, why));
    }
}

/// Runs the method handler of `path` and writes what it answers (an unknown method is answered
/// `UNIMPLEMENTED`).
fn call(
    shared: &Shared,
    connection: &Connection,
    header: Header,
    path: &str,
    request: ttrpc::Request,
) {
    let Some(method) = shared.methods.get(path) else {
        let why = format!("{path}: no such method");
        answer(
            connection,
            header.stream_id,
            status(Code::UNIMPLEMENTED, why),
        );
        return;
    };
    let (responses, answered) = mpsc::channel();
    let context = TtrpcContext {
        fd: connection.fd,
        cancel_rx: connection.cancelled.clone(),
        mh: ttrpc::MessageHeader {
            length: header.length,
            stream_id: header.stream_id,
            type_: header.kind,
            flags: header.flags,
        },
        res_tx: responses,
        metadata: ttrpc::context::from_pb(&request.metadata),
        timeout_nano: request.timeout_nano,
    };
    // The generated handlers fail only when the request's payload does not decode.
    if let Err(e) = method.handler(context, request) {
        let s = match e {
            ttrpc::Error::RpcStatus(s) => s,
            other => status(Code::INVALID_ARGUMENT, format!("{path}: {other}")),
        };
        answer(connection, header.stream_id, s);
    }
    for (response_header, bytes) in answered.try_iter() {
        write(
            connection,
            response_header.stream_id,
            response_header.type_,
            response_header.flags,
            &bytes,
        );
    }
}

fn status(code: Code, message: String) -> ttrpc::Status {
    ttrpc::get_status(code, message)
}

/// Answers stream `stream_id` with an error status.
fn answer(connection: &Connection, stream_id: u32, status: ttrpc::Status) {
    let mut response = ttrpc::Response::new();
    response.set_status(status);
    match response.write_to_bytes() {
        Ok(bytes) => write(connection, stream_id, RESPONSE, 0, &bytes),
        Err(e) => log::error!("ttrpc: encode an error response: {e}"),
    }
}

fn write(connection: &Connection, stream_id: u32, kind: u8, flags: u8, bytes: &[u8]) {
    let mut writer = lock(&connection.writer);
    if let Err(e) = frame::write(&mut *writer, stream_id, kind, flags, bytes) {
        // The client went away; the serving thread notices when it next reads.
        log::debug!("ttrpc: write the response to stream {stream_id}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::client::Client;
    use std::io::Write;

    /// Answers with the request's payload.
    struct Echo;

    impl MethodHandler for Echo {
        fn handler(&self, ctx: TtrpcContext, req: ttrpc::Request) -> ttrpc::Result<()> {
            let mut res = ttrpc::Response::new();
            res.set_status(status(Code::OK, String::new()));
            res.payload = req.payload;
            ttrpc::response_to_channel(ctx.mh.stream_id, res, ctx.res_tx)
        }
    }

    /// Echoes once released.
    struct Held(Mutex<mpsc::Receiver<()>>);

    impl MethodHandler for Held {
        fn handler(&self, ctx: TtrpcContext, req: ttrpc::Request) -> ttrpc::Result<()> {
            let _ = lock(&self.0).recv();
            Echo.handler(ctx, req)
        }
    }

    /// Fails as a generated handler does on a payload that does not decode.
    struct Undecodable;

    impl MethodHandler for Undecodable {
        fn handler(&self, _: TtrpcContext, _: ttrpc::Request) -> ttrpc::Result<()> {
            Err(ttrpc::Error::Others("cannot decode".into()))
        }
    }

    struct Running {
        _dir: tempfile::TempDir,
        socket: std::path::PathBuf,
        server: Server,
        release: mpsc::Sender<()>,
    }

    fn running() -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("s");
        let listener = UnixListener::bind(&socket).expect("bind");
        let (release, held) = mpsc::channel();
        let mut methods: Methods = HashMap::new();
        methods.insert("/t.S/Echo".into(), Box::new(Echo));
        methods.insert("/t.S/Held".into(), Box::new(Held(Mutex::new(held))));
        methods.insert("/t.S/Undecodable".into(), Box::new(Undecodable));
        let inline = ["/t.S/Echo", "/t.S/Undecodable"];
        let server = Server::start(listener, methods, &inline).expect("start");
        Running {
            _dir: dir,
            socket,
            server,
            release,
        }
    }

    fn client(r: &Running) -> Client {
        Client::connect(r.socket.to_str().expect("utf-8"), Duration::from_secs(10))
            .expect("connect")
    }

    /// Sends a request on `stream_id` without waiting for the answer.
    fn send(stream: &mut UnixStream, stream_id: u32, method: &str, payload: &[u8]) {
        let mut request = ttrpc::Request::new();
        request.service = "t.S".into();
        request.method = method.into();
        request.payload = payload.to_vec();
        let bytes = request.write_to_bytes().expect("encode");
        frame::write(stream, stream_id, REQUEST, 0, &bytes).expect("send");
    }

    /// The stream id and payload of the next answer.
    fn answer_on(stream: &mut UnixStream) -> (u32, Vec<u8>) {
        match frame::read(stream).expect("read") {
            Some(Frame::Message(h, bytes)) => {
                let response = ttrpc::Response::parse_from_bytes(&bytes).expect("response");
                (h.stream_id, response.payload)
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn answers_calls_and_keeps_the_connection_after_calls_it_cannot_serve() {
        let r = running();
        let mut c = client(&r);
        assert_eq!(c.call("t.S", "Echo", b"one".to_vec()), Ok(b"one".to_vec()));
        let unknown = c.call("t.S", "Nope", vec![]).expect_err("unknown method");
        assert!(
            unknown.contains("UNIMPLEMENTED") && unknown.contains("/t.S/Nope"),
            "{unknown}"
        );
        let undecodable = c
            .call("t.S", "Undecodable", vec![])
            .expect_err("handler error");
        assert!(undecodable.contains("INVALID_ARGUMENT"), "{undecodable}");
        assert_eq!(c.call("t.S", "Echo", b"two".to_vec()), Ok(b"two".to_vec()));

        let mut raw = UnixStream::connect(&r.socket).expect("connect");
        frame::write(&mut raw, 1, REQUEST, 0, b"\xff\xff not protobuf").expect("send");
        let malformed = match frame::read(&mut raw).expect("read") {
            Some(Frame::Message(h, bytes)) => {
                assert_eq!(h.stream_id, 1);
                ttrpc::Response::parse_from_bytes(&bytes).expect("response")
            }
            other => panic!("expected an answer, got {other:?}"),
        };
        assert_eq!(malformed.status.code.value(), Code::INVALID_ARGUMENT as i32);
        send(&mut raw, 3, "Echo", b"three");
        assert_eq!(answer_on(&mut raw), (3, b"three".to_vec()));
    }

    #[test]
    fn a_method_on_its_own_thread_holds_up_nothing_else() {
        let r = running();
        let mut raw = UnixStream::connect(&r.socket).expect("connect");
        send(&mut raw, 1, "Held", b"held");
        send(&mut raw, 3, "Echo", b"echo");
        assert_eq!(answer_on(&mut raw), (3, b"echo".to_vec()));
        let mut other = client(&r);
        assert_eq!(other.call("t.S", "Echo", b"x".to_vec()), Ok(b"x".to_vec()));
        r.release.send(()).expect("release");
        assert_eq!(answer_on(&mut raw), (1, b"held".to_vec()));
    }

    #[test]
    fn a_client_that_trickles_a_frame_is_cut_off_and_others_are_served() {
        let r = running();
        let mut trickler = UnixStream::connect(&r.socket).expect("connect");
        // A header announcing 100 bytes, then one byte every half second for 12 s.
        let mut header = 100u32.to_be_bytes().to_vec();
        header.extend(1u32.to_be_bytes());
        header.extend([REQUEST, 0]);
        trickler.write_all(&header).expect("header");
        let mut writer = trickler.try_clone().expect("clone");
        let started = Instant::now();
        let dripping = std::thread::spawn(move || {
            for _ in 0..24 {
                std::thread::sleep(Duration::from_millis(500));
                if writer.write_all(b"x").is_err() {
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut other = client(&r);
        assert_eq!(other.call("t.S", "Echo", b"y".to_vec()), Ok(b"y".to_vec()));
        let answered = started.elapsed();
        assert!(
            answered < Duration::from_secs(8),
            "another client waited {answered:?}"
        );
        // The trickler's connection was closed.
        trickler
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut rest = Vec::new();
        let _ = trickler.read_to_end(&mut rest);
        assert!(started.elapsed() < Duration::from_secs(11));
        let _ = dripping.join();
    }

    #[test]
    fn shutdown_waits_for_the_answers_in_flight_then_stops_serving() {
        let r = running();
        let mut raw = UnixStream::connect(&r.socket).expect("connect");
        send(&mut raw, 1, "Held", b"last");
        // Until the server has read it, the request is not in flight.
        let mut probe = client(&r);
        assert_eq!(probe.call("t.S", "Echo", vec![]), Ok(vec![]));
        let (stopped, stop) = mpsc::channel();
        let server = r.server;
        let stopping = std::thread::spawn(move || {
            server.shutdown(Duration::from_secs(30));
            stopped.send(()).expect("report");
        });
        assert!(
            stop.recv_timeout(Duration::from_millis(200)).is_err(),
            "did not wait"
        );
        r.release.send(()).expect("release");
        assert_eq!(answer_on(&mut raw), (1, b"last".to_vec()));
        stop.recv_timeout(Duration::from_secs(10)).expect("stopped");
        stopping.join().expect("join");
        // Connections and the listener are closed.
        assert_eq!(frame::read(&mut raw).expect("end of stream"), None);
        assert!(UnixStream::connect(&r.socket).is_err());
    }
}
