"""The demo's point-in-time restore: a namespace deleted by mistake, and the cluster read back
as it was the moment before.

The journal (`etcdops journal run`'s service, on a thread) follows the demo's cluster from a
fresh full backup into every store; a workload writes Kubernetes objects for a couple of
seconds (objects created and deployments rolled out in several namespaces, each with its Event,
bound to an etcd lease as kube-apiserver binds events); once the journal has stored it, every
object of one namespace is deleted, the Namespace last, as the namespace controller does after
`kubectl delete namespace`. Once the journal has stored the delete in every store,
`etcdops restore --at` the moment the delete began (the same service: the journal replayed on a
staging etcd, then etcdutl) builds a member in a scratch data dir, which is booted on loopback
and read: every object must be back with the value it had, and nothing else.

The workload pauses before the delete on purpose: `--at` restores to the last journal segment
that ended by then, so the quiet moment makes "the moment before" one exact revision to check.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdops.backup.manifest import Manifest, manifest_time
from etcdops.backup.save import save_snapshot
from etcdops.config import Config
from etcdops.demo.sample import (
    MAX_TXN_OPS,
    REGISTRY,
    compact_json,
    event,
    new_object,
    rolled_out,
    sample_nodes,
    workload_namespaces,
)
from etcdops.errors import IntegrityError, StorageError
from etcdops.etcd.local import LocalEtcd
from etcdops.etcd.session import EtcdSession
from etcdops.journal.chain import window
from etcdops.journal.report import JournalReport
from etcdops.journal.run import run_journal
from etcdops.journal.store import chain_manifests
from etcdops.report import Reporter
from etcdops.restore.inventory import Inventory, classify
from etcdops.restore.member import RestoreResult
from etcdops.restore.replay import Replayed
from etcdops.stores.configured import open_stores
from etcdops.units import format_duration

# the namespace someone deletes (with too few sample objects to hold it, their last namespace)
DOOMED = "production"
# [journal] interval for the demo (5 s by default): a point to restore to every quarter second
SEGMENT_INTERVAL = 0.25
WRITE_SECONDS = 2.0
TICKS_PER_SECOND = 50  # each an object written and its Event: about a busy small cluster's rate
EVENT_TTL = 3600  # kube-apiserver's --event-ttl default
# the journal stores a segment an interval after its first change; a minute means it is stuck
STORED_TIMEOUT = 60.0
_POLL = 0.1
_KINDS = ("pods", "pods", "configmaps", "services", "secrets", "deployments")


@dataclass
class RewindReport:
    """The scene's result, as `etcdops demo --output json` prints it under `rewind`."""

    namespace: str
    base_backup_id: str | None = None
    base_revision: int | None = None
    workload: dict[str, object] = field(default_factory=dict)
    deleted_at: str | None = None
    deleted_keys: int = 0
    delete_revisions: tuple[int, int] | None = None
    target: str | None = None  # the --at given to the restore
    journal: JournalReport | None = None
    restore: RestoreResult | None = None
    replay: Replayed | None = None
    check: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The JSON form of the scene."""
        return {
            "namespace": self.namespace,
            "base_backup_id": self.base_backup_id,
            "base_revision": self.base_revision,
            "workload": self.workload,
            "deleted_at": self.deleted_at,
            "deleted_keys": self.deleted_keys,
            "delete_revisions": list(self.delete_revisions or ()) or None,
            "target": self.target,
            "journal": None if self.journal is None else self.journal.as_dict(),
            "restore": None if self.restore is None else self.restore.as_dict(),
            "replay": None if self.replay is None else self.replay.as_dict(),
            "check": self.check,
        }


class Rewind:
    """The scene on the cluster and stores of config: its steps, in order, each giving its
    detail and facts for the demo's table; its result in `report`."""

    def __init__(
        self, scratch: Path, config: Config, objects: int, reporter: Reporter,
        cleanup: ExitStack, *, seconds: float = WRITE_SECONDS,
    ) -> None:
        self.scratch, self.objects, self.reporter = scratch, objects, reporter
        self.cleanup, self.seconds = cleanup, seconds
        self.config = dataclasses.replace(
            config, journal=dataclasses.replace(config.journal, interval=SEGMENT_INTERVAL))
        namespaces = workload_namespaces(objects)
        self.report = RewindReport(DOOMED if DOOMED in namespaces else namespaces[-1])
        self.base: Manifest | None = None
        self.journal: _Journal | None = None
        self.workload: _Workload | None = None
        self.before: dict[bytes, bytes] = {}
        self.member: LocalEtcd | None = None

    def steps(self) -> list[tuple[str, Callable[[], tuple[str, dict[str, object]]]]]:
        """The scene's steps, named for the demo's table, in order."""
        return [("journal run", self.follow), ("workload", self.write),
                ("namespace deleted", self.delete_namespace), ("restore --at", self.restore),
                ("namespace back", self.check)]

    def follow(self) -> tuple[str, dict[str, object]]:
        """A full backup of the cluster, then the journal following it in every store."""
        saved = save_snapshot(self.config, self.reporter)
        self.base = saved.manifest
        self.report.base_backup_id = self.base.id
        self.report.base_revision = self.base.etcd.revision
        self.journal = _Journal(self.config, self.reporter)
        self.cleanup.callback(self.journal.halt)
        return (
            f"backup {self.base.id} at revision {self.base.etcd.revision} in "
            f"{', '.join(saved.stored)}; `journal run` follows etcd from revision "
            f"{self.base.etcd.revision + 1} into {', '.join(open_stores(self.config))}, a "
            f"segment every {format_duration(SEGMENT_INTERVAL)}",
            {"base_backup_id": self.base.id, "base_revision": self.base.etcd.revision},
        )

    def write(self) -> tuple[str, dict[str, object]]:
        """The workload for a few seconds; done once the journal stored it everywhere."""
        with EtcdSession(self.config.etcd) as session:
            self.workload = _Workload(session, self.objects)
            self.reporter.event(f"a workload writes for {format_duration(self.seconds)}")
            took = self.workload.run(self.seconds)
            revision = _current_revision(session)
        self._wait_stored(revision, "the workload's writes")
        stats = self.report.workload = self.workload.as_dict() | {"seconds": round(took, 3)}
        return (
            f"{stats['writes']} writes in {format_duration(took)}: {stats['created']} "
            f"objects created and {stats['rolled_out']} deployments rolled out in "
            f"{len(stats['namespaces'])} namespaces, {stats['events']} Events under one lease; "
            f"the journal stored them to revision {revision} in every store",
            stats | {"journaled_to": revision},
        )

    def delete_namespace(self) -> tuple[str, dict[str, object]]:
        """Every object of the namespace deleted, the Namespace last; done once the journal
        stored the delete everywhere, and stopped."""
        namespace = self.report.namespace
        with EtcdSession(self.config.etcd) as session:
            self.before = _registry(session)
            # its objects first, the Namespace last
            doomed = sorted(_of(namespace, self.before), key=lambda key: classify(key).namespace
                            is None)
            deleted_at = datetime.now(UTC)
            revisions = [session.delete_keys(doomed[start:start + MAX_TXN_OPS])
                         for start in range(0, len(doomed), MAX_TXN_OPS)]
        self._wait_stored(revisions[-1], "the delete")
        assert self.journal is not None
        journal = self.report.journal = self.journal.stop()
        self.report.deleted_at = manifest_time(deleted_at)
        self.report.deleted_keys = len(doomed)
        self.report.delete_revisions = (revisions[0], revisions[-1])
        types = _listing(Inventory(Counter(classify(key) for key in doomed)).by_type())
        span = (f"revision {revisions[0]}" if len(revisions) == 1
                else f"revisions {revisions[0]}-{revisions[-1]}")
        return (
            f"someone deleted namespace {namespace} at {deleted_at:%H:%M:%S} UTC: its "
            f"{len(doomed)} objects ({types}) gone at {span}; "
            f"the journal stored the delete in every store and stopped ({journal.segments} "
            f"segments, {journal.events} changes)",
            {"namespace": namespace, "deleted_at": self.report.deleted_at,
             "deleted_keys": len(doomed), "delete_revisions": [revisions[0], revisions[-1]],
             "segments": journal.segments},
        )

    def restore(self) -> tuple[str, dict[str, object]]:
        """`etcdops restore latest --at <the moment the delete began>` into a scratch data dir."""
        from etcdops.restore.member import (
            RestoreRequest,
            bump_flags_for,
            check_request,
            prepared_snapshot,
            restore_prepared,
        )
        from etcdops.restore.point_plan import PointTarget
        from etcdops.restore.staging import throwaway_member

        assert self.report.deleted_at is not None
        self.scratch.mkdir(parents=True)
        member = self.member = throwaway_member(self.scratch, self.config, "rewound")
        target = self.report.target = self.report.deleted_at  # to the millisecond, as typed
        request = RestoreRequest(
            ref="latest", data_dir=member.data_dir, name=member.name,
            initial_cluster=member.initial_cluster, peer_urls=member.peer_url,
            token=member.cluster_token, point=PointTarget(at=datetime.fromisoformat(target)),
        )
        _, _, etcdutl = check_request(self.config, request)
        with prepared_snapshot(
            self.config, request.ref, self.reporter, under=self.scratch,
            bump_flags=bump_flags_for(etcdutl, None), point=request.point,
        ) as prepared:
            result = self.report.restore = restore_prepared(
                self.config, prepared, request, self.reporter)
            replayed = self.report.replay = prepared.replayed
        if replayed is None:
            raise IntegrityError(
                f"restore --at {target} replayed no journal: it restored backup "
                f"{result.backup_id} as it is", f"run the demo with --keep and look at "
                f"{self.scratch}")
        return (
            f"restore latest --at {target} into {member.data_dir}: {result.source}; "
            f"{replayed.events} changes in {replayed.revisions} revisions replayed, revision "
            f"{result.revision} reached; {len(result.warnings)} warning(s), below",
            {"target": target, "backup_id": result.backup_id, "revision": result.revision,
             "replayed_events": replayed.events, "replayed_revisions": replayed.revisions,
             "warnings": list(result.warnings)},
        )

    def check(self) -> tuple[str, dict[str, object]]:
        """The restored member booted and read: the namespace back as it was, and every other
        object as it was the moment before the delete."""
        from etcdops.restore.staging import start_throwaway

        assert self.member is not None and self.report.delete_revisions is not None
        member, namespace = self.member, self.report.namespace
        try:
            start_throwaway(member)
            with EtcdSession(member.etcd_config()) as session:
                after = _registry(session)
                revision = _current_revision(session)
        finally:
            member.stop()
        # the objects as they were the moment before the delete, at a revision past every one
        # the cluster reached (the watch caches of its clients go on from theirs)
        first_delete, last_delete = self.report.delete_revisions
        restored_from = self.report.restore
        assert restored_from is not None
        hint = f"run the demo with --keep and look at {self.scratch}"
        differ = {key for key in after.keys() | self.before.keys()
                  if after.get(key) != self.before.get(key)}
        if differ or restored_from.revision != first_delete - 1:
            raise IntegrityError(
                f"the member was restored from revision {restored_from.revision} (the moment "
                f"before the delete is {first_delete - 1}), and {len(differ)} Kubernetes "
                "objects differ from what etcd held then", hint,
            )
        if revision <= last_delete:
            plan = restored_from.revision_plan
            raise IntegrityError(
                f"the restored member is at revision {revision}, not past the delete's "
                f"{last_delete}: revision plan {plan.method}"
                + (f" ({plan.warning})" if plan.warning else ""), hint,
            )
        assert self.workload is not None
        restored = {key: after[key] for key in _of(namespace, after)}
        created = _of(namespace, self.workload.created)
        events = _of(namespace, self.workload.event_keys)
        changed = _of(namespace, self.workload.rolled_out)
        facts: dict[str, object] = {
            "namespace": namespace, "restored_keys": len(restored),
            "deleted_keys": self.report.deleted_keys,
            "same_values": restored == {key: self.before[key] for key in _of(namespace,
                                                                             self.before)},
            "registry_keys": len(after), "revision": revision,
            "since_backup": {"created": len(created), "rolled_out": len(changed),
                             "events": len(events)},
            "namespaces": Inventory(Counter(classify(key) for key in after)).by_namespace(),
        }
        self.report.check = facts
        return (
            f"the restored member, booted on {member.client_url}: {namespace}'s "
            f"{len(restored)} objects back with the values they had before the delete "
            f"({len(created)} created, {len(changed)} rolled out and {len(events)} Events since "
            f"the backup), and all {len(after)} objects as they were then, at revision "
            f"{revision} (past the delete's {last_delete})",
            facts,
        )

    def _wait_stored(self, revision: int, what: str) -> None:
        """Until every store's chain of the base reaches revision (the journal committed it);
        the journal's own error if it stopped, StorageError after STORED_TIMEOUT."""
        assert self.base is not None and self.journal is not None
        base, stores = self.base, open_stores(self.config)
        deadline = time.monotonic() + STORED_TIMEOUT
        for name in stores:
            while True:
                self.journal.raise_failure()
                manifests, _ = chain_manifests(stores[name], self.config.cluster, base.id)
                if window(base.id, base.etcd.revision, manifests).last_revision >= revision:
                    break
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"the journal did not store {what} (revision {revision}) in the {name} "
                        f"store within {format_duration(STORED_TIMEOUT)}",
                        "run the demo with -v to see the journal's log",
                    )
                time.sleep(_POLL)


class _Journal:
    """run_journal on a thread, stopped as SIGTERM stops `etcdops journal run` (its stop
    event): the open segment is stored first."""

    def __init__(self, config: Config, reporter: Reporter) -> None:
        self._stop = threading.Event()
        self._report: JournalReport | None = None
        self._error: Exception | None = None
        # its stop stores the open segment, waiting up to stop_timeout for the stores
        self._stop_timeout = config.schedule.stop_timeout + STORED_TIMEOUT
        self._thread = threading.Thread(target=self._run, args=(config, reporter),
                                        name="demo-journal", daemon=True)
        self._thread.start()

    def _run(self, config: Config, reporter: Reporter) -> None:
        try:
            self._report = run_journal(config, reporter, stop=self._stop)
        except Exception as exc:  # raised where the demo waits on the journal
            self._error = exc

    def raise_failure(self) -> None:
        """The journal's error, once it ended by one."""
        if self._error is not None and not self._thread.is_alive():
            raise self._error

    def halt(self) -> None:
        """Stop it, and wait until it stored its open segment: on every way out of the demo."""
        self._stop.set()
        self._thread.join(self._stop_timeout)

    def stop(self) -> JournalReport:
        """Stop it; its report, or its error."""
        self.halt()
        self.raise_failure()
        if self._report is None:
            raise StorageError("the demo's journal did not stop",
                               "run the demo with -v to see the journal's log")
        return self._report


class _Workload:
    """Controllers and users at work in every workload namespace in turn: a visit creates an
    object, the next one rolls out one of the namespace's deployments (one transaction each),
    and each records its Event under one lease, as kube-apiserver does."""

    def __init__(self, session: EtcdSession, objects: int) -> None:
        self.session = session
        self.rng = random.Random(f"rewind-{objects}")
        self.namespaces = workload_namespaces(objects)
        self.nodes = len(sample_nodes(objects))
        self.next_index = objects  # past every loaded object's index: new names
        self.deployments: dict[str, dict[bytes, bytes]] = {}  # the loaded ones, by namespace
        for page in session.prefix_pages(REGISTRY + b"deployments/"):
            for kv in page:
                namespace = classify(kv.key).namespace or ""
                self.deployments.setdefault(namespace, {})[kv.key] = kv.value
        self.created: set[bytes] = set()  # objects, not their Events
        self.rolled_out: set[bytes] = set()  # loaded deployments given a new image
        self.event_keys: set[bytes] = set()
        self.writes = 0
        self.lease, _ = session.grant_lease(EVENT_TTL)

    def run(self, seconds: float) -> float:
        """Write for `seconds`, and until every namespace had a create and a rollout however
        slow etcd is; the seconds it took."""
        started = time.monotonic()
        tick, rounds = 0, len(self.namespaces)
        while (now := time.monotonic()) < started + seconds or tick < 2 * rounds:
            due = started + tick / TICKS_PER_SECOND  # the pace, whatever each write took
            if due > now:
                time.sleep(due - now)
            namespace = self.namespaces[tick % rounds]
            rollout = (tick // rounds) % 2 == 1 and self.deployments.get(namespace)
            key, body = self._rollout(namespace) if rollout else self._create(namespace)
            self.session.put_many([(key, compact_json(body))])
            # an Event is created once: kube-apiserver's create is this compare-and-put
            event_key, event_value = event(self.rng, body, datetime.now(UTC))
            self.session.put_if_absent(event_key, event_value, self.lease)
            self.writes += 2
            self.event_keys.add(event_key)
            tick += 1
        return time.monotonic() - started

    def _create(self, namespace: str) -> tuple[bytes, dict[str, Any]]:
        kind = self.rng.choice(_KINDS)
        key, value = new_object(self.rng, kind, namespace, self.next_index, self.nodes)
        self.next_index += 1
        self.created.add(key)
        body: dict[str, Any] = json.loads(value)
        return key, body

    def _rollout(self, namespace: str) -> tuple[bytes, dict[str, Any]]:
        deployments = self.deployments[namespace]
        key = self.rng.choice(sorted(deployments))
        body = rolled_out(json.loads(deployments[key]), f"2.{self.writes}")
        deployments[key] = compact_json(body)
        self.rolled_out.add(key)
        return key, body

    def as_dict(self) -> dict[str, object]:
        """What it wrote, for the report."""
        return {
            "writes": self.writes, "created": len(self.created),
            "rolled_out": len(self.rolled_out), "events": len(self.event_keys),
            "event_lease": self.lease,
            "namespaces": sorted({classify(key).namespace or "" for key in
                                  self.created | self.rolled_out}),
        }


def _registry(session: EtcdSession) -> dict[bytes, bytes]:
    """Every Kubernetes object's key and value, all at one revision."""
    return {kv.key: kv.value for page in session.prefix_pages(REGISTRY) for kv in page}


def _current_revision(session: EtcdSession) -> int:
    """The cluster's revision now (a linearizable read's header)."""
    _, revision = session.get_prefix(REGISTRY + b"namespaces/default")
    return revision


def _of(namespace: str, keys: Iterable[bytes]) -> list[bytes]:
    """The keys of the namespace's objects and of the Namespace itself, in key order."""
    own = REGISTRY + b"namespaces/" + namespace.encode()
    return sorted(key for key in keys if key == own or classify(key).namespace == namespace)


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())
