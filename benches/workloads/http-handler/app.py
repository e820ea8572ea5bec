"""The Python HTTP handler: a `wasi:http/proxy` component made by componentize-py (CPython in
wasm, about 18 MiB).

- Any path but `/echo` gets a short text, so the benchmark's requests measure instantiating the
  interpreter's snapshot and one call into Python, not Python work.
- `/echo` (the end-to-end tests) streams the request body back, with the path and query in
  `x-path`, the request's `x-test` headers back as `x-echo`, and `x-served` counting the
  requests this instance has seen (always 1: every request gets a fresh instance).
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# A stream write takes at most this many bytes (wasi:io's blocking-write-and-flush).
WRITE_MAX = 4096
served = 0


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        global served
        served += 1
        path = request.path_with_query() or "/"
        if path.split("?")[0] != "/echo":
            respond(response_out, [("content-type", b"text/plain")], b"hello from python\n")
            return
        headers = [
            ("content-type", b"application/octet-stream"),
            ("x-path", path.encode()),
            ("x-served", str(served).encode()),
        ]
        headers += [("x-echo", value) for value in request.headers().get("x-test")]
        response = OutgoingResponse(Fields.from_list(headers))
        out_body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        in_body = request.consume()
        with in_body.stream() as source, out_body.write() as sink:
            while True:
                try:
                    chunk = source.blocking_read(65536)
                except Err:
                    break  # the body's end (or the client went away)
                for at in range(0, len(chunk), WRITE_MAX):
                    sink.blocking_write_and_flush(chunk[at : at + WRITE_MAX])
        IncomingBody.finish(in_body)
        OutgoingBody.finish(out_body, None)


def respond(response_out: ResponseOutparam, headers, text: bytes) -> None:
    response = OutgoingResponse(Fields.from_list(headers))
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with body.write() as stream:
        stream.blocking_write_and_flush(text)
    OutgoingBody.finish(body, None)
