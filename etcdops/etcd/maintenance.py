"""etcd's Maintenance service: member status, alarms, defragmentation and the snapshot stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from etcdops.errors import EtcdopsError, EtcdUnavailableError, IntegrityError
from etcdops.etcd.connection import ENDPOINT_HINT, Connections, Unreachable, rpc_error
from etcdops.etcd.rpc import import_etcdrpc, import_grpc, last, newer_fields

# etcd 3.5 sends these, but the stubs of python3-etcd3 predate them (numbers as in rpc.proto)
_STATUS_V35 = {"raftAppliedIndex": 7, "errors": 8, "dbSizeInUse": 9, "isLearner": 10}
_ALARMS_V35 = {"CORRUPT": 2}  # the stubs' AlarmType knows NONE and NOSPACE


@dataclass(frozen=True)
class MemberStatus:
    """What one member says about itself (Maintenance.Status)."""

    endpoint: str
    member_id: int
    cluster_id: int
    leader_id: int
    version: str
    db_size: int
    db_size_in_use: int
    revision: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: tuple[str, ...]
    is_learner: bool

    @property
    def is_leader(self) -> bool:
        """Whether this member is the raft leader (defrag does the leader last)."""
        return self.leader_id != 0 and self.member_id == self.leader_id


# the alarm a full quota raises: etcd then refuses every write
NOSPACE = "NOSPACE"


@dataclass(frozen=True)
class Alarm:
    """A raised alarm: NOSPACE (quota reached, writes refused) or CORRUPT."""

    member_id: int
    kind: str

    @property
    def nospace(self) -> bool:
        return self.kind == NOSPACE


@dataclass(frozen=True)
class SnapshotSource:
    """The member a snapshot came from, and its status just before streaming began."""

    endpoint: str
    status: MemberStatus


class SnapshotStream(Iterator[bytes]):
    """The raw snapshot as it arrives, checked to be complete when the stream ends."""

    def __init__(
        self, source: SnapshotSource, call: Any, on_error: Callable[[Any], EtcdopsError]
    ) -> None:
        self.source = source
        self.bytes_received = 0
        self._call = call
        self._on_error = on_error
        self._remaining: int | None = None
        self._finished = False

    def __next__(self) -> bytes:
        grpc = import_grpc()
        if self._finished:
            raise StopIteration
        try:
            response = next(self._call)
        except StopIteration:
            self._finished = True
            self._check_complete()
            raise
        except grpc.RpcError as exc:
            self._finished = True
            raise self._on_error(exc) from exc
        self._remaining = response.remaining_bytes
        self.bytes_received += len(response.blob)
        return response.blob

    def close(self) -> None:
        """Stop the stream early (the server stops sending)."""
        self._finished = True
        self._call.cancel()

    def _check_complete(self) -> None:
        # etcd says on every message how much is still to come: a stream that ends without the
        # last message saying 0 lost data, even though grpc reported a clean end
        if self._remaining is None:
            missing = "no data at all"
        elif self._remaining != 0:
            missing = f"{self._remaining} bytes missing"
        else:
            return
        raise IntegrityError(
            f"snapshot stream from {self.source.endpoint} ended early: {missing}",
            "take the snapshot again; if it keeps failing, check that member's log and disk",
        )


class MaintenanceCalls(Connections):
    """The Maintenance calls etcdops makes: on one named member, or on the first that answers."""

    def status(self, endpoint: str) -> MemberStatus:
        """Status of one member: leader, revision, raft indexes, db size and size in use."""
        etcdrpc = import_etcdrpc()
        url = self._url(endpoint)
        response = self._unary(url, "Maintenance", "Status", etcdrpc.StatusRequest(), "Status")
        v35 = newer_fields(response, _STATUS_V35)
        return MemberStatus(
            endpoint=url,
            member_id=response.header.member_id,
            cluster_id=response.header.cluster_id,
            leader_id=response.leader,
            version=response.version,
            db_size=response.dbSize,
            db_size_in_use=last(v35["dbSizeInUse"]),
            revision=response.header.revision,
            raft_index=response.raftIndex,
            raft_term=response.raftTerm,
            raft_applied_index=last(v35["raftAppliedIndex"]),
            errors=tuple(e.decode("utf-8", "replace") for e in v35["errors"]),
            is_learner=bool(last(v35["isLearner"])),
        )

    def statuses(self) -> list[MemberStatus]:
        """Status of every configured endpoint, asked in parallel; any unreachable one fails it."""
        with ThreadPoolExecutor(max_workers=len(self.endpoints)) as pool:
            futures = [pool.submit(self.status, endpoint) for endpoint in self.endpoints]
        results: list[MemberStatus] = []
        unreachable: list[EtcdUnavailableError] = []
        for future in futures:
            try:
                results.append(future.result())
            except Unreachable as exc:
                unreachable.append(exc)
        if unreachable:
            raise EtcdUnavailableError(
                f"{len(unreachable)} of {len(self.endpoints)} etcd endpoints did not answer: "
                + "; ".join(exc.message for exc in unreachable),
                ENDPOINT_HINT,
            )
        return results

    def alarms(self) -> list[Alarm]:
        """Every alarm raised in the cluster (etcd keeps them cluster-wide)."""
        etcdrpc = import_etcdrpc()

        def call(url: str) -> Any:
            request = etcdrpc.AlarmRequest(
                action=etcdrpc.AlarmRequest.GET, memberID=0, alarm=etcdrpc.NONE
            )
            return self._unary(url, "Maintenance", "Alarm", request, "Alarm list")

        response = self._first_answer("Alarm list", call)
        names = {code: name for name, code in _alarm_codes().items()}
        return [
            Alarm(member_id=a.memberID, kind=names.get(a.alarm, f"UNKNOWN({a.alarm})"))
            for a in response.alarms
        ]

    def disarm(self, alarm: Alarm) -> None:
        """Clear a raised alarm once its cause is gone, so the cluster accepts writes again."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.AlarmRequest(
            action=etcdrpc.AlarmRequest.DEACTIVATE,
            memberID=alarm.member_id,
            alarm=_alarm_codes()[alarm.kind],
        )

        def call(url: str) -> Any:
            return self._unary(url, "Maintenance", "Alarm", request, f"disarming {alarm.kind}")

        self._first_answer("Alarm disarm", call)

    def defragment(self, endpoint: str, timeout: float) -> None:
        """Defragment one member's backend; it blocks that member (and only it) while it runs."""
        etcdrpc = import_etcdrpc()
        url = self._url(endpoint)
        request = etcdrpc.DefragmentRequest()
        self._unary(url, "Maintenance", "Defragment", request, "defragmentation", timeout=timeout)

    def snapshot_stream(self, endpoint: str | None = None) -> SnapshotStream:
        """Stream a snapshot from one member (the first that answers), without buffering it."""
        etcdrpc = import_etcdrpc()

        def open_stream(url: str) -> SnapshotStream:
            status = self.status(url)
            connection = self._connection(url)
            call = connection.stub("Maintenance").Snapshot(
                etcdrpc.SnapshotRequest(),
                timeout=self.config.snapshot_timeout,
                metadata=connection.metadata,
            )
            timeout, user = self.config.snapshot_timeout, self.config.user
            return SnapshotStream(
                SnapshotSource(url, status),
                call,
                lambda exc: rpc_error(exc, url, "the snapshot", timeout, user),
            )

        if endpoint is not None:
            return open_stream(self._url(endpoint))
        return self._first_answer("Snapshot", open_stream)


def _alarm_codes() -> dict[str, int]:
    """Alarm kinds by name: the stubs' own, and the ones etcd added since."""
    etcdrpc = import_etcdrpc()
    return {**dict(etcdrpc.AlarmType.items()), **_ALARMS_V35}
