"""The example application's frontend: a wasi:http handler (componentize-py) that calls the
backend by its Service's short name, `http://backend/` (resolved by the cell through the
pod's resolv.conf, the cluster DNS and its search list), and answers with what it said.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
)


# The backend Service: its name in the pod's namespace (port 80).
BACKEND = "backend"


def fetch(authority: str, path: str) -> str:
    """GET http://<authority><path>: the body, or why there is none."""
    request = OutgoingRequest(Fields())
    request.set_scheme(Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(path)
    future = outgoing_handler.handle(request, None)
    while (result := future.get()) is None:
        future.subscribe().block()
    if isinstance(result, Err) or isinstance(result.value, Err):
        error = result.value if isinstance(result, Err) else result.value.value
        return f"the backend did not answer: {error}"
    response = result.value.value
    body = response.consume()
    text = b""
    with body.stream() as stream:
        while True:
            try:
                text += stream.blocking_read(65536)
            except Err:
                break
    return text.decode(errors="replace")


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        text = f"frontend -> {BACKEND}: {fetch(BACKEND, '/')}"
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(body, None)
