"""A cluster restored from a snapshot, as `etcdops restore` leaves it: a new single member from
etcdutl's restore under a new cluster token (a new cluster ID, at the snapshot's revision), or
under the old member's name, peer URL and token (the same cluster ID)."""

from __future__ import annotations

import secrets
from pathlib import Path

from etcdops.backup.manifest import etcd_id
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalEtcd
from etcdops.etcd.session import EtcdSession
from etcdops.report import LogReporter
from etcdops.restore.staging import restore_into, save_checked


def plain_snapshot(member: LocalEtcd, out: Path) -> int:
    """A checked plain snapshot of a running member into out; the revision it holds (nothing
    may write meanwhile)."""
    with EtcdSession(member.etcd_config()) as session:
        revision = session.status(member.client_url).revision
        save_checked(session.snapshot_stream(member.client_url), out, "the test's snapshot")
    return revision


def restored(snapshot: Path, scratch: Path, *, like: LocalEtcd | None = None) -> LocalEtcd:
    """A started member restored from snapshot under scratch: a cluster of a new token, or
    with like's name, peer URL and token (like stopped first: its peer port is reused)."""
    if like is None:
        member = LocalEtcd("restored", scratch / "data",
                           cluster_token=f"restored-{secrets.token_hex(4)}")
    else:
        member = LocalEtcd(like.name, scratch / "data", peer_port=like.peer_port,
                           initial_cluster=like.initial_cluster, cluster_token=like.cluster_token)
    restore_into(find_binary("etcdutl"), snapshot, "the test's snapshot", member, LogReporter())
    member.start()
    return member


def cluster_id_of(member: LocalEtcd) -> str:
    """The cluster ID a member answers with, as a manifest records it."""
    with EtcdSession(member.etcd_config()) as session:
        return etcd_id(session.history().cluster_id)
