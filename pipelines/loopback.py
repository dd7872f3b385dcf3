"""gRPC servers of this process listen on the loopback interface only.

Beam's Python SDK opens gRPC servers on `[::]:<port>` (every interface): the LOOPBACK environment's worker pool in
the driver, and the logging and artifact servers of its local job services. None is meant for another machine, and
no option names the address. `bind_grpc_servers_to_loopback()` wraps `grpc.server` so that a server asked for a
wildcard address (`[::]`, `0.0.0.0`, `*` or no host) gets `localhost` instead, which gRPC binds on 127.0.0.1 and ::1
with one port: the clients Beam points at `localhost:<port>` still connect. An explicit address is left as given.
Prism and the Flink job server JVM are bound by what `make install` builds (launch/stack/native.py).
"""
from __future__ import annotations

import functools

import grpc

WILDCARD_HOSTS = {'', '[::]', '::', '0.0.0.0', '*'}
_MARK = '_engagement_loopback'


def loopback_address(address: str) -> str:
    """`address` (`host:port`) with a wildcard host replaced by `localhost`; any other address unchanged."""
    host, sep, port = address.rpartition(':')
    if not sep or host not in WILDCARD_HOSTS:
        return address
    return f'localhost:{port}'


def bind_grpc_servers_to_loopback() -> None:
    """Make every gRPC server created from now on in this process bind wildcard addresses to loopback (idempotent)."""
    if getattr(grpc.server, _MARK, False):
        return
    original = grpc.server

    @functools.wraps(original)
    def server(*args, **kwargs):
        created = original(*args, **kwargs)
        add_insecure_port = created.add_insecure_port
        add_secure_port = created.add_secure_port
        created.add_insecure_port = lambda address: add_insecure_port(loopback_address(address))
        created.add_secure_port = lambda address, credentials: add_secure_port(loopback_address(address), credentials)
        return created

    setattr(server, _MARK, True)
    grpc.server = server
