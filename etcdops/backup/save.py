"""Taking a backup: etcd's snapshot stream, checked, compressed and encrypted on its way to a store.

The bytes go through one pass of writers: etcd trailer check -> zstd -> age -> store, on a worker
thread so that they overlap the gRPC receive. No plaintext reaches the disk, nothing holds the
whole snapshot, and the manifest is written only after the object is complete and checked, so a
failure at any point leaves no backup that looks good.

The local copy is published (object, then manifest) as soon as it is complete, before anything
waits on S3: an S3 upload ends within its timeouts and deadline, and whatever it does then, the
backup already exists on this host. An interrupt says exactly what was kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from etcdops import __version__
from etcdops.backup.included import Archive, archive_files
from etcdops.backup.manifest import EtcdSource, Manifest, etcd_id, new_backup_id, object_key
from etcdops.backup.replicate import copy_backup
from etcdops.config import Config
from etcdops.crypto.keys import configured_recipients
from etcdops.errors import EtcdopsError, Interrupted, StorageError
from etcdops.lock import job_lock
from etcdops.metrics import JobMetrics, job_metrics
from etcdops.report import Reporter, note
from etcdops.stores.base import Store, server_side_copier
from etcdops.stores.configured import Stores, open_stores
from etcdops.stores.fanout import Fanout
from etcdops.stream.handoff import Handoff
from etcdops.stream.pipeline import SnapshotEncoder

if TYPE_CHECKING:
    from etcdops.crypto.age import Recipient


@dataclass(frozen=True)
class SaveResult:
    manifest: Manifest
    stored: tuple[str, ...]  # the stores that hold the backup, manifest included
    failures: dict[str, str]  # the stores that do not, and why
    # the manifest's stream and total, then the replica copy and the save's real total: the
    # manifest is written before the copy, which at 1 GiB is a third of the save
    durations: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        """The JSON form: the manifest, where the backup is stored and why not elsewhere."""
        return json.loads(self.manifest.to_json()) | {
            # always present here, though a manifest without included files omits it
            "files": [dataclasses.asdict(entry) for entry in self.manifest.files],
            "stored_in": list(self.stored),
            "failed": self.failures,
            "durations": self.durations,
        }


@dataclass
class _Kept:
    """What a save holds so far, so that an interrupt can say it."""

    backup_id: str = ""
    holders: list[str] = field(default_factory=list)
    fanout: Fanout | None = None

    def interrupted(self, stores: Stores) -> Interrupted:
        """The interrupt, naming the stores that hold the backup and what became of the rest."""
        if self.holders:
            plural = "s" if len(self.holders) > 1 else ""
            said = [f"backup {self.backup_id} is complete in the "
                    f"{' and '.join(self.holders)} store{plural}"]
        else:
            said = ["the backup was not complete: nothing half-written was kept"]
        for name, confirmed in (self.fanout.aborted if self.fanout else {}).items():
            if name == stores.local:
                continue  # its temporary file is gone, which the first clause says
            said.append(
                f"the {name} upload was aborted" if confirmed else
                f"the {name} upload could not be aborted (S3 did not answer): "
                "'etcdops snapshot list --all' shows what it left, and prune removes it"
            )
        lacking = [name for name in stores if name not in self.holders]
        if not self.holders:
            hint = "run 'etcdops snapshot save' again"
        elif lacking:
            hint = (f"run 'etcdops snapshot replicate --missing' to copy it to the "
                    f"{' and '.join(lacking)} store{'s' if len(lacking) > 1 else ''}")
        else:
            hint = None
        return Interrupted("interrupted; " + "; ".join(said), hint)


def save_snapshot(
    config: Config,
    reporter: Reporter,
    *,
    stores: Stores | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SaveResult:
    """Take one verified, encrypted backup into every store of the topology (default: every
    store config names), replica included.

    A store that fails does not cost the others their copy: the result says which stores hold
    the backup and why the rest do not. Only when no store holds it is that an exception; an
    interrupt is an Interrupted that says what was kept.
    """
    configured = open_stores(config)  # opens nothing yet
    stores = stores or configured
    with job_metrics(config, "snapshot", stores=stores, configured=configured) as metrics:
        # what the backup-age alert measures against, known even while every save fails
        metrics.set("period_seconds", config.schedule.snapshot_every)
        recipients = configured_recipients(config.encryption)
        # read before etcd is asked for anything: a file the restore needs that is missing fails
        # the save here, with nothing stored
        archive = archive_files(config.backup.include_files)
        stores.open()
        kept = _Kept()
        try:
            result = _save(config, reporter, stores, recipients, archive, clock, kept)
        except KeyboardInterrupt as exc:
            if kept.fanout is not None:
                kept.fanout.abort()  # what the interrupt found waiting, an S3 commit
            raise kept.interrupted(stores) from exc
        _record(metrics, result)
        return result


def _record(metrics: JobMetrics, result: SaveResult) -> None:
    """The save in the snapshot job's metrics: what each store now holds, and which failed."""
    for store in result.failures:
        metrics.failed(store=store)
    for store in result.stored:
        metrics.set("last_success_size_bytes", result.manifest.object_size, store=store)
        metrics.set("last_success_revision", result.manifest.etcd.revision, store=store)


def _save(
    config: Config, reporter: Reporter, stores: Stores, recipients: list[Recipient],
    archive: Archive, clock: Callable[[], datetime], kept: _Kept,
) -> SaveResult:
    """save_snapshot() under the host lock, noting in kept what is stored as it goes."""
    from etcdops.etcd.session import EtcdSession

    with job_lock(config, "snapshot save"):
        with EtcdSession(config.etcd) as etcd:
            started = time.monotonic()
            created = clock()
            backup_id = kept.backup_id = new_backup_id(created)
            note(backup_id=backup_id)  # every later log line of the run names the backup
            key = object_key("", config.cluster, backup_id, created)
            stream = etcd.snapshot_stream()
            endpoint, member = stream.source.endpoint, stream.source.status
            reporter.event(f"streaming snapshot from {endpoint} (revision {member.revision})")
            fanout = kept.fanout = _open_writers(stores, key, member.db_size, reporter)
            handoff: Handoff | None = None
            try:
                if archive.files:
                    reporter.event(f"including {len(archive.files)} files ([backup] include_files)")
                encoder = SnapshotEncoder(
                    fanout, recipients, config.local.compression_level, f"snapshot from {endpoint}",
                    preamble=archive.frame,
                )
                handoff = Handoff(encoder)
                with reporter.progress("snapshot", total=member.db_size) as bar:
                    for chunk in stream:
                        handoff.write(chunk)
                        bar.advance(len(chunk))
                handoff.close()
                db_sha256 = encoder.close()
                # counted after the stream so that the count's reply never queues behind it,
                # and before the commit so that a failure here leaves no object without a
                # manifest
                keys = etcd.count_keys(member.revision)
            except BaseException:
                # an S3 writer waiting in the pipeline's thread stops now, not at its deadline
                fanout.cancel()
                if handoff is not None:
                    handoff.abandon()
                stream.close()
                fanout.abort()
                raise
        streamed = time.monotonic() - started
        manifest = Manifest(
            id=backup_id,
            cluster=config.cluster,
            created_at=created,
            etcd=EtcdSource(
                endpoint=endpoint,
                cluster_id=etcd_id(member.cluster_id),
                member_id=etcd_id(member.member_id),
                version=member.version,
                revision=member.revision,
                raft_index=member.raft_index,
                db_size=member.db_size,
                keys=keys,
            ),
            snapshot_size=encoder.plain.size,
            snapshot_db_sha256=db_sha256,
            object_key=key,
            object_size=encoder.stored.size,
            object_sha256=encoder.stored.hexdigest(),
            compression={"format": "zstd", "level": config.local.compression_level},
            encryption={
                "format": "age-encryption.org/v1",
                "recipients": [r.fingerprint() for r in recipients],
            },
            tool_version=__version__,
            durations={"stream": round(streamed, 3), "total": round(time.monotonic() - started, 3)},
            files=archive.files,
        )
        published: dict[str, str] = {}  # manifest failures
        # local first, and published before the primary's commit waits on S3
        for name in stores.streamed:
            if fanout.commit(name) and _write_manifest(stores[name], manifest, published):
                kept.holders.append(name)
                reporter.event(f"backup {backup_id} stored in {stores[name].describe(key)}")
    holders = kept.holders
    failures = {name: str(exc) for name, exc in fanout.failures.items()} | published
    if not holders:
        local_failure = fanout.failures.get(stores.local) if stores.local else None
        raise local_failure or StorageError(
            f"backup {backup_id} could not be stored anywhere: "
            + "; ".join(f"{name}: {why}" for name, why in failures.items()),
            "fix the stores named and run 'etcdops snapshot save' again",
        )
    durations = dict(manifest.durations)
    for name in stores.copied:
        target = stores[name]
        # a holder the target copies from server-side, so that no bytes pass this host
        source = next(
            (h for h in holders if server_side_copier(stores[h], target)), holders[0]
        )
        copy_started = time.monotonic()
        try:
            copy_backup(manifest, stores[source], target, reporter)
            holders.append(name)
            reporter.event(f"backup {backup_id} stored in {target.describe(key)}")
        except EtcdopsError as exc:
            failures[name] = str(exc)
        durations[f"{name}_copy"] = round(time.monotonic() - copy_started, 3)
    durations["total"] = round(time.monotonic() - started, 3)
    return SaveResult(manifest, tuple(holders), failures, durations)


def _open_writers(stores: Stores, key: str, expected_size: int, reporter: Reporter) -> Fanout:
    # The replica is filled by a server-side copy afterwards, not from this stream.
    writers, failures = {}, {}
    try:
        for name in stores.streamed:
            try:
                # an upload that holds the stream or the save says what it waits for
                writers[name] = stores[name].open_writer(
                    key, expected_size=expected_size, waiting=reporter.event
                )
            except EtcdopsError as exc:
                if name == stores.local:
                    raise  # the local copy is the one this host can always vouch for
                failures[name] = exc
    except BaseException:
        # the local store's error, or an interrupt while the next store opens (its client is
        # built on first use, which takes a while): no writer opened so far stays behind
        for writer in writers.values():
            writer.abort()
        raise
    fanout = Fanout(writers)
    fanout.failures.update(failures)
    return fanout


def _write_manifest(store: Store, manifest: Manifest, failures: dict[str, str]) -> bool:
    """Publish the backup in one store: its manifest, then the record that its bytes were
    hashed as they were written (what makes the copy count as verified)."""
    from etcdops.backup.checks import AS_WRITTEN, try_record

    try:
        store.put_bytes(manifest.manifest_key, manifest.to_json())
        try_record(store, manifest, manifest.check_key, AS_WRITTEN)
        return True
    except EtcdopsError as exc:
        failures[store.name] = str(exc)
        # an object without a manifest is not a backup: do not leave it behind
        with contextlib.suppress(EtcdopsError):
            store.delete(manifest.object_key)
        return False
