"""Backups and journal chains at chosen times in real stores, for retention's and the listing's
tests: real backups of a real etcd (save_snapshot with a clock), real sealed segments
published in every store (etcdops.journal.store), at the revisions and change times a test
names; and the Timeline of tests/journal/conftest.py's fixture."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import etcd3

from etcdops.backup.manifest import Manifest
from etcdops.backup.save import save_snapshot
from etcdops.config import Config, EncryptionConfig, LocalConfig
from etcdops.crypto.x25519 import Recipient
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.watch import Revision
from etcdops.journal.manifest import SegmentManifest
from etcdops.journal.segment import SegmentBuffer
from etcdops.journal.store import publish, seal
from etcdops.report import LogReporter
from etcdops.stores.base import Store
from etcdops.stores.configured import open_stores
from tests.fixtures.backups import AgeIdentity
from tests.journal.samples import put


def chains_config(cluster: LocalCluster, identity: AgeIdentity, directory: Path) -> Config:
    """A local-only config of cluster (add S3 with tests.backup.two_regions.with_s3)."""
    return Config(
        cluster="chains",
        etcd=cluster.etcd_config(),
        encryption=EncryptionConfig(recipients=(identity.recipient,),
                                    identity_file=identity.path),
        local=LocalConfig(dir=directory / "backups"),
    )


def backup_at(config: Config, client: etcd3.Etcd3Client, moment: datetime,
              writes: int = 10) -> Manifest:
    """A verified backup in every store, created at moment, after `writes` more revisions."""
    for number in range(writes):
        client.put(f"/registry/configmaps/chains/cm-{number}", moment.isoformat())
    return save_snapshot(config, LogReporter(), clock=lambda: moment).manifest


@dataclass(frozen=True)
class Span:
    """A run of segments: revisions first to last, `per` revisions a segment, the changes seen
    from `since`, one revision every `step`."""

    first: int
    last: int
    since: datetime
    step: timedelta
    per: int = 5


def write_chain(
    stores: Mapping[str, Store], cluster: str, base_id: str, span: Span, recipient: str,
) -> list[SegmentManifest]:
    """Seal span's segments into base_id's chain and publish each in every store given."""
    published = []
    moments = (span.since + span.step * n for n in range(span.last - span.first + 1))
    for first in range(span.first, span.last + 1, span.per):
        buffer = SegmentBuffer(clock=lambda: next(moments))
        for revision in range(first, min(first + span.per, span.last + 1)):
            buffer.add(_revision(revision))
        sealed = seal(buffer, cluster=cluster, base_backup_id=base_id, follows=first - 1,
                      recipients=[Recipient.parse(recipient)], level=1)
        for store in stores.values():
            publish(store, sealed)
        published.append(sealed.manifest)
    return published


def _revision(revision: int) -> Revision:
    return Revision(revision, (put(revision, f"/registry/pods/j/p-{revision}".encode()),))


def chain_keys(store: Store, cluster: str, base_id: str) -> list[str]:
    """Every file of base_id's chain folder in a store."""
    return [info.key for info in store.list(f"{cluster}/journal/{base_id}/")]


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


@dataclass
class Timeline:
    config: Config
    toml: Path
    a: Manifest  # 50 h old, its chain ends before b: deleted with it
    b: Manifest  # 30 h old, its chain reaches 23 h 15 min ago: the window's start
    c: Manifest  # 23 h old
    d: Manifest  # the newest
    old_orphan: str  # a chain without its base, its newest change 39 h ago
    new_orphan: str  # 2 h ago

    def stores(self) -> dict[str, Store]:
        return dict(open_stores(self.config))
