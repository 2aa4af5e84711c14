"""etcd's Lease service: listing leases and keeping them alive.

A member booted from a snapshot runs its lessor: every lease gets its full TTL back when the
member becomes leader and counts down from there, and one that expires takes its keys with it.
A throwaway etcd that runs longer than the shortest TTL (a restore's staging etcd) keeps every
lease alive, as the clients that owned them would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from etcdops.etcd.connection import Connections, rpc_error
from etcdops.etcd.rpc import import_etcdrpc, import_grpc, newer_fields

# LeaseLeases (etcd 3.3+) is not in python3-etcd3's stubs. Its request is empty; its response
# is {header = 1, repeated LeaseStatus leases = 2}, LeaseStatus being {int64 ID = 1}: read as a
# LeaseRevokeResponse (header = 1) with field 2 unknown, and each entry as a LeaseRevokeRequest
# ({int64 ID = 1}, the same wire shape)
_LEASE_LEASES = "/etcdserverpb.Lease/LeaseLeases"
_LEASES_FIELD = {"leases": 2}


class LeaseCalls(Connections):
    """The Lease calls etcdops makes, on one named member."""

    def lease_ids(self, endpoint: str) -> list[int]:
        """Every lease the member holds, by id."""
        grpc, etcdrpc = import_grpc(), import_etcdrpc()
        url = self._url(endpoint)
        connection = self._connection(url)
        call = connection.channel.unary_unary(
            _LEASE_LEASES,
            request_serializer=lambda _request: b"",
            response_deserializer=etcdrpc.LeaseRevokeResponse.FromString,
        )
        timeout = self.config.command_timeout
        try:
            response = call(None, timeout=timeout, metadata=connection.metadata)
        except grpc.RpcError as exc:
            raise rpc_error(exc, url, "the lease list", timeout, self.config.user) from exc
        entries = newer_fields(response, _LEASES_FIELD)["leases"]
        return [etcdrpc.LeaseRevokeRequest.FromString(entry).ID for entry in entries]

    def keep_alive(
        self, endpoint: str, lease_ids: Sequence[int], timeout: float | None = None
    ) -> dict[int, int]:
        """Refresh each lease once, in one stream; each lease's TTL afterwards, in seconds (0
        or less: the lease no longer exists). timeout (default: command_timeout) bounds the
        whole stream: a renewal that outlasts its lease is worth nothing."""
        grpc, etcdrpc = import_grpc(), import_etcdrpc()
        url = self._url(endpoint)
        connection = self._connection(url)
        requests = (etcdrpc.LeaseKeepAliveRequest(ID=lease) for lease in lease_ids)
        timeout = timeout or self.config.command_timeout
        ttls: dict[int, int] = {}
        try:
            # etcd answers each request in turn and ends the stream when the requests end
            responses: Any = connection.stub("Lease").LeaseKeepAlive(
                requests, timeout=timeout, metadata=connection.metadata
            )
            for response in responses:
                ttls[response.ID] = response.TTL
        except grpc.RpcError as exc:
            raise rpc_error(exc, url, "a lease keep-alive", timeout, self.config.user) from exc
        return ttls
