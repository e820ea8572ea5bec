//! ttrpc's framing: a 10-byte header (payload length and stream id, big-endian `u32`s, then a
//! message type and flags byte) followed by the payload, a protobuf `Request` or `Response`.

use std::io::{self, Read, Write};

/// The header's length in bytes.
pub const HEADER_LEN: usize = 10;
/// The largest payload ttrpc accepts (4 MiB, as in containerd's implementation).
pub const MAX_PAYLOAD: usize = 4 << 20;
/// Message type of a request.
pub const REQUEST: u8 = 1;
/// Message type of a response.
pub const RESPONSE: u8 = 2;

/// One frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Length of the payload that follows.
    pub length: u32,
    /// The call this frame belongs to: the client picks odd numbers, the response repeats it.
    pub stream_id: u32,
    /// [`REQUEST`], [`RESPONSE`] or a type this implementation does not use (streams).
    pub kind: u8,
    /// Stream flags, unused by unary calls.
    pub flags: u8,
}

/// A frame as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A frame and its payload.
    Message(Header, Vec<u8>),
    /// A frame whose payload was longer than [`MAX_PAYLOAD`]; the payload was read and dropped,
    /// so the stream stays in step and the sender can be told.
    Oversized(Header),
}

/// Reads one frame; `None` when the stream ends cleanly between frames.
pub fn read(from: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut raw = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match from.read(&mut raw[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let header = Header {
        length: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
        stream_id: u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]),
        kind: raw[8],
        flags: raw[9],
    };
    let length = header.length as usize;
    if length > MAX_PAYLOAD {
        let skipped = io::copy(&mut from.take(length as u64), &mut io::sink())?;
        if skipped < length as u64 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(Some(Frame::Oversized(header)));
    }
    let mut payload = vec![0u8; length];
    from.read_exact(&mut payload)?;
    Ok(Some(Frame::Message(header, payload)))
}

/// Writes one frame with a single `write` where the socket takes it whole, so frames written
/// by different threads under one lock never interleave and a response costs one system call.
pub fn write(
    to: &mut impl Write,
    stream_id: u32,
    kind: u8,
    flags: u8,
    payload: &[u8],
) -> io::Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ttrpc message of {} bytes, more than the {MAX_PAYLOAD} allowed",
                payload.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend((payload.len() as u32).to_be_bytes());
    bytes.extend(stream_id.to_be_bytes());
    bytes.extend([kind, flags]);
    bytes.extend(payload);
    to.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_as_written() {
        let mut wire = Vec::new();
        write(&mut wire, 7, REQUEST, 0, b"hello").expect("write");
        write(&mut wire, 9, RESPONSE, 2, b"").expect("write");
        assert_eq!(&wire[..HEADER_LEN], &[0, 0, 0, 5, 0, 0, 0, 7, 1, 0]);
        let mut from = &wire[..];
        let header = |length, stream_id, kind, flags| Header {
            length,
            stream_id,
            kind,
            flags,
        };
        assert_eq!(
            read(&mut from).expect("read"),
            Some(Frame::Message(header(5, 7, REQUEST, 0), b"hello".to_vec()))
        );
        assert_eq!(
            read(&mut from).expect("read"),
            Some(Frame::Message(header(0, 9, RESPONSE, 2), vec![]))
        );
        assert_eq!(read(&mut from).expect("end"), None);
    }

    #[test]
    fn an_oversized_payload_is_skipped_and_the_next_frame_still_reads() {
        let mut wire = Vec::new();
        let length = (MAX_PAYLOAD + 1) as u32;
        wire.extend(length.to_be_bytes());
        wire.extend(3u32.to_be_bytes());
        wire.extend([REQUEST, 0]);
        wire.resize(wire.len() + MAX_PAYLOAD + 1, 0xaa);
        write(&mut wire, 5, REQUEST, 0, b"next").expect("write");
        let mut from = &wire[..];
        match read(&mut from).expect("read") {
            Some(Frame::Oversized(h)) => assert_eq!((h.stream_id, h.length), (3, length)),
            other => panic!("expected an oversized frame, got {other:?}"),
        }
        match read(&mut from).expect("read") {
            Some(Frame::Message(h, payload)) => {
                assert_eq!((h.stream_id, &payload[..]), (5, &b"next"[..]))
            }
            other => panic!("expected the next frame, got {other:?}"),
        }
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_an_error() {
        let mut wire = Vec::new();
        write(&mut wire, 1, REQUEST, 0, b"hello").expect("write");
        for cut in [3, HEADER_LEN + 2] {
            let mut from = &wire[..cut];
            let error = read(&mut from).expect_err("cut");
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn writing_more_than_the_limit_is_refused() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let mut wire = Vec::new();
        let error = write(&mut wire, 1, REQUEST, 0, &big).expect_err("too big");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(wire.is_empty());
    }
}
