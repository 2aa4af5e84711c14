"""grpc and etcd's protos: configured before their first import, imported only when called.

The etcd modules are the only ones of etcdops that touch etcd3 and grpc, and they import them
through this module, inside functions, so that `etcdops --help` stays instant and grpc always
starts with etcdops' settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

_GRPC_ENVIRONMENT = {
    # grpc's C core logs failed TLS handshakes to stderr; etcdops reports them itself, once
    "GRPC_VERBOSITY": "ERROR",
    # grpc's EventEngine client reads the socket on a thread of its own and wakes the caller
    # once per message; the iomgr client it replaces reads in the caller's thread. Over a
    # snapshot's 32,768 messages per GiB that is a third of the receive's CPU (measured, 5 + 5
    # alternated 1 GiB receives: 4.6 -> 3.1 s) and 7 % of a 1 GiB save to two regions (4 + 4
    # alternated: 22.2 -> 20.6 s), CPU that a control-plane host would rather give to etcd.
    "GRPC_EXPERIMENTS": "-event_engine_client",
}


def prepare_grpc_environment() -> None:
    """Give grpc etcdops' settings where the environment has none; before grpc is imported.

    grpc's C core reads them once, when grpc is first imported.
    """
    for name, value in _GRPC_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def import_grpc() -> Any:
    """The grpc module, with etcdops' settings in place before its first import."""
    prepare_grpc_environment()
    import grpc

    return grpc


def import_etcdrpc() -> Any:
    """etcd's protos and stubs, as python3-etcd3 ships them."""
    import_grpc()  # etcd3 imports grpc: the environment above must be set first
    from etcd3 import etcdrpc

    return etcdrpc


def newer_fields(message: Any, numbers: Mapping[str, int]) -> dict[str, list[Any]]:
    """Fields etcd sends that the stubs predate, by name: every value received for each.

    They arrive as unknown fields, so the caller names each with its number in etcd's
    api/etcdserverpb/rpc.proto; a name etcd did not send has no values.
    """
    from google.protobuf.unknown_fields import UnknownFieldSet

    by_number: dict[int, list[Any]] = {}
    for unknown in UnknownFieldSet(message):
        by_number.setdefault(unknown.field_number, []).append(unknown.data)
    return {name: by_number.get(number, []) for name, number in numbers.items()}


def last(values: list[Any], default: Any = 0) -> Any:
    """A scalar field's value: the last one received wins, as protobuf decodes it."""
    return values[-1] if values else default
