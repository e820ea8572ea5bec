//! The image reader's gRPC client (`wasmcell_image::grpc`) on any bytes a server may answer
//! with, after its own preface: frames of every type, broken HPACK, padding, resets, messages
//! split anywhere. It never panics and never hands on a message above its limit.
#![no_main]

use std::io::{Read, Write};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wasmcell_image::grpc::Connection;

/// A server that answers with the fuzzer's bytes and takes whatever the client writes.
struct Scripted<'a> {
    answer: &'a [u8],
}

impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.answer.read(buf)
    }
}

impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The client catches the panics of its HPACK decoder (on some malformed header blocks) and
/// fails the call; libFuzzer's panic hook would abort before the catch. A panic that escapes
/// the client still fails the run: the fuzz target's own catch aborts on it.
fn let_the_client_catch_its_decoders_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

fuzz_target!(|data: &[u8]| {
    let_the_client_catch_its_decoders_panics();
    let Ok(mut connection) = Connection::over(Scripted { answer: data }) else {
        return;
    };
    // Two calls on one connection: the second reads what the first left.
    for _ in 0..2 {
        let mut total = 0usize;
        let result = connection.call_each(
            "/containerd.services.content.v1.Content/Read",
            &[("containerd-namespace", "fuzz")],
            Duration::from_secs(1),
            b"request",
            &mut |message| {
                assert!(message.len() <= 16 << 20);
                total += message.len();
                Ok(())
            },
        );
        if result.is_err() {
            break;
        }
    }
});
