"""Writing recorded revisions back into an etcd, one transaction per revision: a point-in-time
restore's replay of the journal on its staging etcd (etcdops.restore.replay).

Each revision becomes one Txn holding its puts (with their lease) and deletes, guarded by one
compare per key that states what the key must be before it: a put of version v needs version
v - 1 (0: absent) and, for v > 1, its create revision; a delete needs the key to exist. A guard
that fails writes nothing, so a replay that went wrong stops before a wrong key is stored; the
caller checks the header revision. Calls go to one member, one at a time: etcd serves each
unary call on a goroutine of its own, so two in flight may be proposed in either order.
"""

from __future__ import annotations

from typing import Any

from etcdops.errors import IntegrityError
from etcdops.etcd.connection import Connections, rpc_error
from etcdops.etcd.rpc import import_etcdrpc, import_grpc
from etcdops.etcd.watch import ChangeKind, Revision


class RevisionWriter:
    """Writes revisions and grants leases on one member of a session."""

    def __init__(self, session: Connections, endpoint: str) -> None:
        self._grpc, self._rpc = import_grpc(), import_etcdrpc()
        self._session = session
        self._url = session._url(endpoint)
        self._connection = session._connection(self._url)
        self._timeout = session.config.command_timeout

    def grant(self, lease_id: int, ttl: int) -> None:
        """Create the lease with this id (etcd takes an id in LeaseGrant) and TTL in seconds."""
        request = self._rpc.LeaseGrantRequest(ID=lease_id, TTL=ttl)
        self._call("Lease", "LeaseGrant", request, f"the grant of lease {lease_id:x}")

    def write(self, revision: Revision) -> int:
        """Apply one revision's changes as one guarded transaction; the revision etcd gave it.
        IntegrityError when a guard failed: the key was not what the recorded history says."""
        rpc = self._rpc
        compares, ops = [], []
        for change in revision.changes:
            if change.kind is ChangeKind.PUT:
                compares.append(rpc.Compare(
                    key=change.key, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL,
                    version=change.version - 1,
                ))
                if change.version > 1:
                    compares.append(rpc.Compare(
                        key=change.key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                        create_revision=change.create_revision,
                    ))
                ops.append(rpc.RequestOp(request_put=rpc.PutRequest(
                    key=change.key, value=change.value, lease=change.lease,
                )))
            else:
                compares.append(rpc.Compare(
                    key=change.key, target=rpc.Compare.VERSION, result=rpc.Compare.GREATER,
                    version=0,
                ))
                ops.append(rpc.RequestOp(
                    request_delete_range=rpc.DeleteRangeRequest(key=change.key)
                ))
        request = rpc.TxnRequest(compare=compares, success=ops)
        response = self._call("KV", "Txn", request, f"the replay of revision {revision.revision}")
        if not response.succeeded:
            raise IntegrityError(
                f"revision {revision.revision} does not apply: a key it changes is not as the "
                "recorded history has it just before (version or create revision)",
                "the base backup and the journal do not fit together, or the staging etcd was "
                "written by something else; nothing of this revision was written",
            )
        return int(response.header.revision)

    def _call(self, service: str, method: str, request: Any, what: str) -> Any:
        connection = self._connection
        try:
            return getattr(connection.stub(service), method)(
                request, timeout=self._timeout, metadata=connection.metadata
            )
        except self._grpc.RpcError as exc:
            raise rpc_error(exc, self._url, what, self._timeout, self._session.config.user) from exc
