"""The example application's backend: a wasi:http handler (componentize-py) that counts visits
in Redis. Each request looks the Service name `redis` up with wasi:sockets/ip-name-lookup (the
pod's resolv.conf: the cluster DNS and its search list), opens a TCP connection to it with
wasi:sockets, sends `INCR visits` and answers with the count.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import instance_network, ip_name_lookup, network, tcp_create_socket
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


def lookup(net: network.Network, name: str) -> network.IpAddress:
    """The first address of `name`, waiting for the lookup as long as it takes."""
    with ip_name_lookup.resolve_addresses(net, name) as stream:
        while True:
            try:
                address = stream.resolve_next_address()
            except Err as e:
                if e.value == network.ErrorCode.WOULD_BLOCK:
                    stream.subscribe().block()
                    continue
                raise RuntimeError(f"cannot resolve {name}: {e.value.name}") from None
            if address is None:
                raise RuntimeError(f"{name} has no address")
            return address


# The Redis Service: its name in the pod's namespace, and its port.
REDIS = ("redis", 6379)


def redis_incr(key: str) -> int:
    """INCR `key` on the Redis server; its new value."""
    host, port = REDIS
    net = instance_network.instance_network()
    address = lookup(net, host)
    if isinstance(address, network.IpAddress_Ipv4):
        family = network.IpAddressFamily.IPV4
        remote = network.IpSocketAddress_Ipv4(network.Ipv4SocketAddress(port, address.value))
    else:
        family = network.IpAddressFamily.IPV6
        remote = network.IpSocketAddress_Ipv6(
            network.Ipv6SocketAddress(port, 0, address.value, 0)
        )
    sock = tcp_create_socket.create_tcp_socket(family)
    sock.start_connect(net, remote)
    while True:
        try:
            reader, writer = sock.finish_connect()
            break
        except Err as e:
            if e.value != network.ErrorCode.WOULD_BLOCK:
                raise RuntimeError(f"cannot connect to {host}:{port}: {e.value.name}") from None
            sock.subscribe().block()
    command = f"*2\r\n$4\r\nINCR\r\n${len(key)}\r\n{key}\r\n".encode()
    writer.blocking_write_and_flush(command)
    reply = b""
    while not reply.endswith(b"\r\n"):
        reply += reader.blocking_read(64)
    if not reply.startswith(b":"):
        raise RuntimeError(f"Redis answered {reply!r}")
    return int(reply[1:-2])


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        try:
            text, status = f"visits: {redis_incr('visits')}\n", 200
        except RuntimeError as e:
            text, status = f"backend: {e}\n", 503
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(status)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(body, None)
