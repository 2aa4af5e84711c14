"""A recorded history for the point-in-time tests: writes of every kind on a real etcd, a base
snapshot in the middle, the journal's revisions read from etcd's watch, and etcd's own state at
any revision (a Range at that revision, before any compaction) to compare a replay with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import etcd3
import pytest

from etcdops.backup.manifest import Manifest
from etcdops.backup.save import save_snapshot
from etcdops.config import Config, EtcdConfig
from etcdops.etcd.maintenance import MaintenanceCalls
from etcdops.etcd.session import EtcdSession
from etcdops.etcd.watch import Revision
from etcdops.report import LogReporter
from etcdops.restore.staging import save_checked

# key -> (value, create revision, mod revision, version, lease)
State = dict[bytes, tuple[bytes, int, int, int, int]]
POD = "/registry/pods/default/"
EVENT = "/registry/events/default/"


@dataclass(frozen=True)
class History:
    base_revision: int  # the snapshot's
    marks: dict[str, int]  # points of interest in the history: name -> revision
    last_revision: int
    late_lease: int  # a lease granted after the base, bound to keys


def state_at(client: etcd3.Etcd3Client, revision: int | None = None) -> State:
    """Every key with its value, revisions, version and lease, as etcd serves it at revision."""
    from etcd3 import etcdrpc

    request = etcdrpc.RangeRequest(key=b"\0", range_end=b"\0", revision=revision or 0)
    response = client.kvstub.Range(request, timeout=10)
    return {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in response.kvs}


def txn(client: etcd3.Etcd3Client, puts: Iterable[tuple[str, str]], deletes: Iterable[str] = (),
        lease: int = 0) -> int:
    """One transaction of several puts and deletes: one revision; its number."""
    from etcd3 import etcdrpc

    ops = [etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(
        key=key.encode(), value=value.encode(), lease=lease)) for key, value in puts]
    ops += [etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key.encode()))
            for key in deletes]
    return int(client.kvstub.Txn(etcdrpc.TxnRequest(success=ops), timeout=10).header.revision)


def state_header(client: etcd3.Etcd3Client) -> int:
    from etcd3 import etcdrpc

    request = etcdrpc.RangeRequest(key=b"\0", count_only=True)
    return int(client.kvstub.Range(request, timeout=10).header.revision)


def write_before(client: etcd3.Etcd3Client) -> None:
    """What the base snapshot holds: pods, and an event on a lease."""
    for index in range(20):
        client.put(f"{POD}p{index}", f"v0-{index}")
    early = client.lease(600)
    client.put(f"{EVENT}early", "e0", lease=early)


def write_after(client: etcd3.Etcd3Client) -> tuple[dict[str, int], int]:
    """The journal's part: overwrites, deletes, transactions of several keys, a lease granted
    after the base with keys bound to it, a revoked lease, a key deleted and created again."""
    marks = {}
    for index in range(0, 20, 2):
        client.put(f"{POD}p{index}", f"v1-{index}")
    marks["overwrites"] = state_header(client)
    client.delete(f"{POD}p1")
    client.delete(f"{EVENT}early")
    marks["deletes"] = state_header(client)
    marks["txn"] = txn(client, [(f"{POD}t1", "a"), (f"{POD}p3", "b"), (f"{POD}t2", "c")],
                       deletes=[f"{POD}p5", f"{POD}p7"])
    late = client.lease(600)
    client.put(f"{EVENT}late-1", "l1", lease=late)
    txn(client, [(f"{EVENT}late-2", "l2"), (f"{EVENT}late-3", "l3")], lease=late.id)
    marks["late_lease"] = state_header(client)
    revoked = client.lease(600)
    client.put(f"{EVENT}revoked", "r", lease=revoked)
    revoked.revoke()
    client.put(f"{POD}p1", "born again")  # version 1 again, a new create revision
    for round_ in range(3):
        txn(client, [(f"{POD}p{index}", f"v{round_ + 2}-{index}") for index in range(8, 14)])
    marks["end"] = state_header(client)
    return marks, late.id


def record(session: EtcdSession, first: int, last: int) -> list[Revision]:
    """The revisions first to last, as the journal reads them from etcd's watch."""
    revisions = []
    with session.changes(first) as stream:
        for item in stream:
            if isinstance(item, Revision):
                revisions.append(item)
                if item.revision == last:
                    return revisions
    raise AssertionError("the watch ended early")


def history(client: etcd3.Etcd3Client, url: str, snapshot: Path) -> History:
    """Write the history on a fresh etcd, the base snapshot (checked, plain) in the middle."""
    write_before(client)
    with EtcdSession(etcd_config(url)) as session:
        base = session.status(url).revision  # nothing writes until the snapshot is taken
        save_checked(session.snapshot_stream(url), snapshot, "the base")
    marks, late = write_after(client)
    return History(base, marks, marks["end"], late)


def etcd_config(url: str) -> EtcdConfig:
    return EtcdConfig(endpoints=(url,), dial_timeout=2.0, command_timeout=10.0)


def save_with_writes(
    config: Config, client: etcd3.Etcd3Client, writes: int, **save: Any
) -> Manifest:
    """A backup's manifest, that many puts landing between the status its save records its
    revision from and the snapshot it streams, as writes do under load."""
    status = MaintenanceCalls.status

    def status_then_writes(self, endpoint):
        answer = status(self, endpoint)
        for number in range(writes):
            client.put(f"/registry/configmaps/default/during-save-{number}", "x")
        return answer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MaintenanceCalls, "status", status_then_writes)
        return save_snapshot(config, LogReporter(), **save).manifest
