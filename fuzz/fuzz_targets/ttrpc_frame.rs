//! The shim's ttrpc frame reader (`crates/shim/src/rpc/frame.rs`, compiled in here as it is)
//! on any bytes a client may send: it never panics, never returns a payload longer than the
//! limit or than its header says, and reads a stream frame by frame until it ends or breaks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/shim/src/rpc/frame.rs"]
#[allow(dead_code)]
mod frame;

use frame::{Frame, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let mut stream = std::io::Cursor::new(data);
    // Each frame consumes at least its header, so the loop ends.
    loop {
        match frame::read(&mut stream) {
            Ok(None) | Err(_) => break,
            Ok(Some(Frame::Message(header, payload))) => {
                assert_eq!(payload.len(), header.length as usize);
                assert!(payload.len() <= MAX_PAYLOAD);
            }
            Ok(Some(Frame::Oversized(header))) => {
                assert!(header.length as usize > MAX_PAYLOAD);
            }
        }
    }
});
