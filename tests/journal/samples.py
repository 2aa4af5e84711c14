"""What the journal's tests share: changes of every kind, and segment manifests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from etcdops.etcd.watch import Change, ChangeKind, Revision
from etcdops.journal.manifest import SegmentManifest, segment_key

LEASE = 0x694D8F1A2B3C4D5E  # lease ids are large int64s


def put(revision, key, value=b"v", create=None, version=1, lease=0):
    created = revision if create is None else create
    return Change(ChangeKind.PUT, key, value, created, revision, version, lease)


def delete(revision, key):
    return Change(ChangeKind.DELETE, key, b"", 0, revision, 0, 0)


EVERY_KIND = [
    Revision(100, (put(100, b"/registry/pods/default/a", b"k8s\x00\n\x02v1"),)),
    # a transaction: an update with a lease, a delete and a new key in one revision
    Revision(101, (
        put(101, b"/registry/pods/default/a", b"", create=100, version=2, lease=LEASE),
        delete(101, b"/registry/pods/default/b"),
        put(101, bytes(range(256)), bytes(range(255, -1, -1))),
    )),
    Revision(102, (delete(102, b"\x00\xff"),)),
    Revision(103, (put(103, b"k", b"x" * 70_000, create=50, version=7),)),
]


BASE = "20261125T120000Z-a1b2c3"
SEEN = datetime(2026, 11, 25, 12, 0, 5, 250_000, tzinfo=UTC)


def manifest(first=101, last=110, base=BASE, **changes) -> SegmentManifest:
    """A segment manifest of revisions first to last of chain base."""
    fields = dict(
        cluster="prod", base_backup_id=base, previous_revision=first - 1,
        first_revision=first, last_revision=last, revisions=last - first + 1,
        events=2 * (last - first + 1), first_change_at=SEEN + timedelta(seconds=first),
        last_change_at=SEEN + timedelta(seconds=last), plain_size=1000, plain_sha256="ab" * 32,
        object_key=segment_key("", "prod", base, first, last), object_size=500,
        object_sha256="cd" * 32, compression={"format": "zstd", "level": 1},
        encryption={"format": "age-encryption.org/v1", "recipients": ["f" * 16]},
        created_at=SEEN + timedelta(seconds=last + 1), tool_version="0.1.0",
    )
    return SegmentManifest(**(fields | changes))
