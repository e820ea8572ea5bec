//! A direct D-Bus connection to systemd over its private socket (`/run/systemd/private`), for a
//! node whose system bus daemon does not answer: systemd serves that socket to root without a
//! bus, and runc's systemd driver falls back to it the same way.
//!
//! Why by hand: `busctl` always greets a bus (`Hello`), which this socket refuses, and zbus (in
//! the tree through containerd-shim) panics on systemd's replies there, whose sender is a
//! well-known name rather than a bus-given unique one. The protocol part needed is small: one
//! EXTERNAL authentication, one method call, and reading messages until its reply (systemd
//! sends its signals to every private connection too).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// systemd's socket for direct connections.
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";

/// The largest message read: systemd's answers and signals here are small.
const MAX_MESSAGE: u64 = 8 << 20;

/// A value of a unit property (a D-Bus variant).
pub enum Value<'a> {
    Str(&'a str),
    Bool(bool),
    U32s(&'a [u32]),
    U64(u64),
}

/// The arguments of a call to systemd's manager.
pub enum Args<'a> {
    /// `ss`: StopUnit's unit and mode.
    Strings2(&'a str, &'a str),
    /// `ssa(sv)a(sa(sv))`: StartTransientUnit's unit, mode, properties and (no) auxiliary units.
    Transient(&'a str, &'a str, &'a [(&'a str, Value<'a>)]),
}

/// Calls `method` of `org.freedesktop.systemd1.Manager` with `args` over systemd's private
/// socket, waiting at most `timeout` in all; an error reply is an error naming it.
pub fn call_manager(method: &str, args: &Args, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut sock = UnixStream::connect(PRIVATE_SOCKET)
        .map_err(|e| format!("connect to {PRIVATE_SOCKET}: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    authenticate(&mut sock)?;
    let (signature, body) = body(args);
    const SERIAL: u32 = 1;
    let message = method_call(SERIAL, method, &signature, &body);
    sock.write_all(&message)
        .map_err(|e| format!("send {method}: {e}"))?;
    loop {
        // systemd's signals keep coming: the deadline is for the answer, not for each read.
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{method}: no answer within {timeout:?}"))?;
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let reply = read_message(&mut sock).map_err(|e| format!("{method}: {e}"))?;
        if reply.reply_serial != Some(SERIAL) {
            continue; // a signal, or anything else that is not our answer
        }
        return match reply.kind {
            METHOD_RETURN => Ok(()),
            _ => Err(format!(
                "{}: {}",
                reply.error_name.unwrap_or_else(|| "an error".into()),
                reply.error_text.unwrap_or_default()
            )),
        };
    }
}

/// SASL EXTERNAL as root: systemd checks the socket's peer credentials against the uid.
fn authenticate(sock: &mut UnixStream) -> Result<(), String> {
    let uid = nix::unistd::getuid().as_raw().to_string();
    let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
    sock.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())
        .map_err(|e| format!("authenticate: {e}"))?;
    // Byte by byte to the line's end: nothing after it may be taken from the socket.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 512 {
        sock.read_exact(&mut byte)
            .map_err(|e| format!("authenticate: {e}"))?;
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line);
    if !line.starts_with("OK ") {
        return Err(format!("systemd refused authentication: {}", line.trim()));
    }
    sock.write_all(b"BEGIN\r\n")
        .map_err(|e| format!("authenticate: {e}"))
}

/// D-Bus's marshalling (little-endian), positions counted from the start of what is written.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn align(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }

    fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    fn signature(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// An array of elements aligned to `element_align`, written by `each`.
    fn array(&mut self, element_align: usize, each: impl FnOnce(&mut Writer)) {
        self.u32(0);
        let len_at = self.buf.len() - 4;
        self.align(element_align);
        let start = self.buf.len();
        each(self);
        let len = (self.buf.len() - start) as u32;
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }

    fn variant(&mut self, v: &Value) {
        match v {
            Value::Str(s) => {
                self.signature("s");
                self.string(s);
            }
            Value::Bool(b) => {
                self.signature("b");
                self.u32(u32::from(*b));
            }
            Value::U32s(list) => {
                self.signature("au");
                self.array(4, |w| list.iter().for_each(|x| w.u32(*x)));
            }
            Value::U64(v) => {
                self.signature("t");
                self.align(8);
                self.buf.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

fn body(args: &Args) -> (String, Vec<u8>) {
    let mut w = Writer::default();
    match args {
        Args::Strings2(a, b) => {
            w.string(a);
            w.string(b);
            ("ss".into(), w.buf)
        }
        Args::Transient(unit, mode, properties) => {
            w.string(unit);
            w.string(mode);
            w.array(8, |w| {
                for (name, value) in properties.iter() {
                    w.align(8);
                    w.string(name);
                    w.variant(value);
                }
            });
            w.array(8, |_| {});
            ("ssa(sv)a(sa(sv))".into(), w.buf)
        }
    }
}

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;

/// A method call to systemd's manager object.
fn method_call(serial: u32, member: &str, signature: &str, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.extend_from_slice(&[b'l', METHOD_CALL, 0, 1]);
    w.u32(body.len() as u32);
    w.u32(serial);
    let field = |w: &mut Writer, code: u8, sig: &str, put: &dyn Fn(&mut Writer)| {
        w.align(8);
        w.buf.push(code);
        w.signature(sig);
        put(w);
    };
    w.array(8, |w| {
        field(w, 1, "o", &|w| w.string("/org/freedesktop/systemd1"));
        field(w, 2, "s", &|w| w.string("org.freedesktop.systemd1.Manager"));
        field(w, 3, "s", &|w| w.string(member));
        field(w, 6, "s", &|w| w.string("org.freedesktop.systemd1"));
        field(w, 8, "g", &|w| w.signature(signature));
    });
    w.align(8);
    w.buf.extend_from_slice(body);
    w.buf
}

/// What this client reads of a message.
#[derive(Debug)]
struct Message {
    kind: u8,
    reply_serial: Option<u32>,
    error_name: Option<String>,
    error_text: Option<String>,
}

/// Reads one message; of its header fields only the reply serial, the error name and (for an
/// error with a string body) its text are kept.
fn read_message(sock: &mut UnixStream) -> Result<Message, String> {
    let mut fixed = [0u8; 16];
    sock.read_exact(&mut fixed)
        .map_err(|e| format!("read an answer: {e}"))?;
    let le = match fixed[0] {
        b'l' => true,
        b'B' => false,
        other => return Err(format!("not a D-Bus message (endianness byte {other:#x})")),
    };
    let u32_at = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    if fixed[3] != 1 {
        return Err(format!("D-Bus protocol version {}", fixed[3]));
    }
    // The header's fields, padded to 8, then the body.
    let body_len = u64::from(u32_at(&fixed, 4));
    let fields_len = u64::from(u32_at(&fixed, 12));
    let rest_len = fields_len.div_ceil(8) * 8 + body_len;
    if rest_len > MAX_MESSAGE {
        return Err(format!("a message of {rest_len} bytes"));
    }
    let (fields_len, rest_len) = (fields_len as usize, rest_len as usize);
    let mut rest = Vec::with_capacity(rest_len.min(64 << 10));
    sock.take(rest_len as u64)
        .read_to_end(&mut rest)
        .map_err(|e| format!("read an answer: {e}"))?;
    if rest.len() != rest_len {
        return Err("the connection ended inside a message".into());
    }
    // Positions in `rest` are 16 past the message's start, which keeps 8-byte alignment.
    let mut m = Message {
        kind: fixed[1],
        reply_serial: None,
        error_name: None,
        error_text: None,
    };
    let mut at = 0;
    let mut signature = String::new();
    while at < fields_len {
        at = at.div_ceil(8) * 8;
        let code = *rest.get(at).ok_or("a truncated header")?;
        let sig_len = *rest.get(at + 1).ok_or("a truncated header")? as usize;
        let sig = rest
            .get(at + 2..at + 2 + sig_len)
            .ok_or("a truncated header")?
            .to_vec();
        at += 3 + sig_len;
        match sig.as_slice() {
            b"s" | b"o" => {
                at = at.div_ceil(4) * 4;
                let len = u32_at(rest.get(at..at + 4).ok_or("a truncated header")?, 0) as usize;
                let text = rest
                    .get(at + 4..at + 4 + len)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .ok_or("a truncated header")?;
                if code == 4 {
                    m.error_name = Some(text);
                }
                at += 5 + len;
            }
            b"u" => {
                at = at.div_ceil(4) * 4;
                let v = u32_at(rest.get(at..at + 4).ok_or("a truncated header")?, 0);
                if code == 5 {
                    m.reply_serial = Some(v);
                }
                at += 4;
            }
            b"g" => {
                let len = *rest.get(at).ok_or("a truncated header")? as usize;
                signature = rest
                    .get(at + 1..at + 1 + len)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .ok_or("a truncated header")?;
                at += 2 + len;
            }
            // A field of another type: unknown fields are to be ignored, and its size is not
            // known, so the rest of the header is left unread.
            _ => break,
        }
    }
    if m.error_name.is_some() && signature.starts_with('s') {
        let body = &rest[fields_len.div_ceil(8) * 8..];
        if body.len() >= 4 {
            let len = u32_at(body, 0) as usize;
            m.error_text = body
                .get(4..4 + len)
                .map(|b| String::from_utf8_lossy(b).into_owned());
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_u64_property_is_a_t_at_a_multiple_of_8() {
        let mut w = Writer::default();
        w.string("T");
        w.variant(&Value::U64(0x0102_0304_0506_0708));
        let mut want = Vec::new();
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"T\0");
        // The signature `t`, then padding to 8.
        want.extend_from_slice(&[1, b't', 0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(w.buf, want);
    }

    #[test]
    fn a_transient_unit_call_is_marshalled_as_d_bus_lays_it_out() {
        let (sig, body) = body(&Args::Transient(
            "a.scope",
            "fail",
            &[("Delegate", Value::Bool(true)), ("PIDs", Value::U32s(&[7]))],
        ));
        assert_eq!(sig, "ssa(sv)a(sa(sv))");
        let mut want = Vec::new();
        want.extend_from_slice(&7u32.to_le_bytes());
        want.extend_from_slice(b"a.scope\0");
        want.extend_from_slice(&4u32.to_le_bytes());
        want.extend_from_slice(b"fail\0\0\0\0");
        // a(sv): length, padding to 8, then each struct at a multiple of 8.
        let props_len_at = want.len();
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&[0; 4]); // to 32
        want.extend_from_slice(&8u32.to_le_bytes());
        want.extend_from_slice(b"Delegate\0");
        want.extend_from_slice(&[1, b'b', 0]); // the variant's signature
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&[0; 4]); // to 8
        want.extend_from_slice(&4u32.to_le_bytes());
        want.extend_from_slice(b"PIDs\0");
        want.extend_from_slice(&[2, b'a', b'u', 0]);
        want.extend_from_slice(&[0; 3]); // to 4
        want.extend_from_slice(&4u32.to_le_bytes());
        want.extend_from_slice(&7u32.to_le_bytes());
        let props_len = (want.len() - 32) as u32;
        want[props_len_at..props_len_at + 4].copy_from_slice(&props_len.to_le_bytes());
        // An empty a(sa(sv)): its length, then padding to 8.
        want.extend_from_slice(&0u32.to_le_bytes());
        while want.len() % 8 != 0 {
            want.push(0);
        }
        assert_eq!(body, want);
    }

    #[test]
    fn a_big_endian_answer_is_read_and_garbage_or_a_huge_length_is_an_error() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A method return to serial 1, big-endian: the reply serial is field 5, of type u.
        let mut be = vec![b'B', METHOD_RETURN, 0, 1];
        be.extend_from_slice(&0u32.to_be_bytes()); // body length
        be.extend_from_slice(&7u32.to_be_bytes()); // serial
        be.extend_from_slice(&8u32.to_be_bytes()); // fields' length
        be.extend_from_slice(&[5, 1, b'u', 0]);
        be.extend_from_slice(&1u32.to_be_bytes());
        theirs.write_all(&be).unwrap();
        let m = read_message(&mut ours).unwrap();
        assert_eq!((m.kind, m.reply_serial), (METHOD_RETURN, Some(1)));
        theirs.write_all(b"GARBAGE!GARBAGE!").unwrap();
        assert!(read_message(&mut ours)
            .unwrap_err()
            .contains("not a D-Bus message"));
        let mut huge = vec![b'l', METHOD_RETURN, 0, 1];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        theirs.write_all(&huge).unwrap();
        assert!(read_message(&mut ours).unwrap_err().contains("bytes"));
    }

    #[test]
    fn a_refused_authentication_is_an_error_naming_the_answer() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        theirs.write_all(b"REJECTED EXTERNAL\r\n").unwrap();
        let err = authenticate(&mut ours).unwrap_err();
        assert!(err.contains("REJECTED EXTERNAL"), "{err}");
    }

    #[test]
    fn an_answer_is_read_past_signals_and_an_error_names_itself() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A signal, then an error reply to serial 1 from a sender that is a well-known name.
        let message = |kind: u8, fields: &dyn Fn(&mut Writer), body: &[u8]| {
            let mut w = Writer::default();
            w.buf.extend_from_slice(&[b'l', kind, 0, 1]);
            w.u32(body.len() as u32);
            w.u32(9);
            w.array(8, fields);
            w.align(8);
            w.buf.extend_from_slice(body);
            w.buf
        };
        // Its second header field has a type this client does not read.
        let signal = message(
            4,
            &|w| {
                w.align(8);
                w.buf.push(3);
                w.signature("s");
                w.string("JobNew");
                w.align(8);
                w.buf.push(10);
                w.signature("y");
                w.buf.push(1);
            },
            &[],
        );
        let mut text = Writer::default();
        text.string("Unit x.scope not loaded.");
        let error = message(
            3,
            &|w| {
                w.align(8);
                w.buf.push(4);
                w.signature("s");
                w.string("org.freedesktop.systemd1.NoSuchUnit");
                w.align(8);
                w.buf.push(5);
                w.signature("u");
                w.u32(1);
                w.align(8);
                w.buf.push(7);
                w.signature("s");
                w.string("org.freedesktop.systemd1");
                w.align(8);
                w.buf.push(8);
                w.signature("g");
                w.signature("s");
            },
            &text.buf,
        );
        theirs.write_all(&signal).unwrap();
        theirs.write_all(&error).unwrap();
        let first = read_message(&mut ours).unwrap();
        assert_eq!((first.kind, first.reply_serial), (4, None));
        let answer = read_message(&mut ours).unwrap();
        assert_eq!(answer.reply_serial, Some(1));
        assert_eq!(
            answer.error_name.as_deref(),
            Some("org.freedesktop.systemd1.NoSuchUnit")
        );
        assert_eq!(
            answer.error_text.as_deref(),
            Some("Unit x.scope not loaded.")
        );
    }
}
