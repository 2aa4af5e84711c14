"""Taking a backup: etcd's snapshot stream, checked, compressed and encrypted on its way to a store.

The bytes go through one pass of writers: etcd trailer check -> zstd -> age -> store, on a worker
thread so that they overlap the gRPC receive. No plaintext reaches the disk, nothing holds the
whole snapshot, and the manifest is written only after the object is complete and checked, so a
failure at any point leaves no backup that looks good.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from etcdops import __version__
from etcdops.config import Config
from etcdops.keys import configured_recipients
from etcdops.lock import HostLock
from etcdops.manifest import EtcdSource, Manifest, new_backup_id, object_key
from etcdops.report import Reporter
from etcdops.stores.local import LocalStore
from etcdops.stream.handoff import Handoff
from etcdops.stream.writers import AgeEncrypt, Digest, SnapshotTrailerCheck, ZstdCompress

LOCK_NAME = ".etcdops-snapshot.lock"


def save_snapshot(
    config: Config,
    reporter: Reporter,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Manifest:
    """Take one verified, encrypted backup into the local store and return its manifest."""
    from etcdops.etcd.client import EtcdSession

    recipients = configured_recipients(config.encryption)
    store = LocalStore(config.local.dir)
    with HostLock(config.local.dir / LOCK_NAME, "snapshot save"), EtcdSession(config.etcd) as etcd:
        started = time.monotonic()
        created = clock()
        backup_id = new_backup_id(created)
        key = object_key("", config.cluster, backup_id, created)
        stream = etcd.snapshot_stream()
        endpoint, member = stream.source.endpoint, stream.source.status
        reporter.event(f"streaming snapshot from {endpoint} (revision {member.revision})")
        writer = store.open_writer(key)
        handoff: Handoff | None = None
        try:
            stored = Digest(writer)
            encrypt = AgeEncrypt(stored, recipients)
            compress = ZstdCompress(encrypt, config.local.compression_level)
            plain = SnapshotTrailerCheck(compress)
            handoff = Handoff(plain)
            with reporter.progress("snapshot", total=member.db_size) as bar:
                for chunk in stream:
                    handoff.write(chunk)
                    bar.advance(len(chunk))
            handoff.close()
            db_sha256 = plain.verify(f"snapshot from {endpoint}")
            compress.close()
            encrypt.close()
            # counted after the stream so that the count's reply never queues behind it, and
            # before the commit so that a failure here leaves no object without a manifest
            keys = etcd.count_keys(member.revision)
            writer.commit()
        except BaseException:
            if handoff is not None:
                handoff.abandon()
            stream.close()
            writer.abort()
            raise
        streamed = time.monotonic() - started
    manifest = Manifest(
        id=backup_id,
        cluster=config.cluster,
        created_at=created,
        etcd=EtcdSource(
            endpoint=endpoint,
            cluster_id=f"{member.cluster_id:x}",
            member_id=f"{member.member_id:x}",
            version=member.version,
            revision=member.revision,
            raft_index=member.raft_index,
            db_size=member.db_size,
            keys=keys,
        ),
        snapshot_size=plain.size,
        snapshot_db_sha256=db_sha256,
        object_key=key,
        object_size=stored.size,
        object_sha256=stored.hexdigest(),
        compression={"format": "zstd", "level": config.local.compression_level},
        encryption={
            "format": "age-encryption.org/v1",
            "recipients": [r.fingerprint() for r in recipients],
        },
        tool_version=__version__,
        durations={"stream": round(streamed, 3), "total": round(time.monotonic() - started, 3)},
    )
    try:
        store.put_bytes(manifest.manifest_key, manifest.to_json())
    except BaseException:
        store.delete(key)  # an object without a manifest is not a backup: do not leave it behind
        raise
    reporter.event(f"backup {backup_id} written to {store.describe(key)}")
    return manifest
