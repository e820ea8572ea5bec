"""The benchmark's Python HTTP handler: a `wasi:http/proxy` component made by componentize-py
(CPython in wasm, about 18 MiB). It answers every request with a short text, so a request
measures instantiating the interpreter's snapshot and one call into Python, not Python work."""

from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from componentize_py_types import Ok


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(b"hello from python\n")
        OutgoingBody.finish(body, None)
