"""Applying retention to every store: the policy decides, this module deletes.

Each backup's manifest is deleted before its object, so that a prune interrupted halfway leaves
an incomplete object (cleaned up next time) and never a manifest that lists a missing object.
Writes that never finished (a save killed mid-upload: S3 parts, a local temporary file) are
weighed like incomplete objects and aborted once they are older than keep_within: no save runs
that long, so nothing in progress is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from etcdops.catalog import Catalog
from etcdops.config import RetentionConfig
from etcdops.errors import EtcdopsError
from etcdops.manifest import backup_id_of
from etcdops.report import Reporter
from etcdops.retention import Candidate, Condition, Decision, decide
from etcdops.stores.base import Store


@dataclass
class StorePrune:
    store: str
    decisions: list[Decision] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    error: str | None = None  # the store could not be listed or a deletion failed


def prune(
    stores: dict[str, Store],
    cluster: str,
    policy: RetentionConfig,
    now: datetime,
    reporter: Reporter,
    *,
    dry_run: bool = False,
) -> list[StorePrune]:
    """Decide and (unless dry_run) delete in each store on its own; one failing spares the rest."""
    results = []
    for name, store in stores.items():
        result = StorePrune(name)
        results.append(result)
        try:
            catalog = Catalog(store, cluster)
            actions, candidates = _candidates(catalog)
            result.decisions = decide(
                candidates, keep_within=policy.keep_within, keep_min=policy.keep_min, now=now
            )
            if dry_run:
                continue
            for decision in result.decisions:
                if decision.keep:
                    continue
                for action in actions[decision.candidate.id]:
                    action()
                result.deleted.append(decision.candidate.id)
                reporter.event(f"deleted backup {decision.candidate.id} from {name} store")
        except EtcdopsError as exc:
            result.error = str(exc)
    return results


def _candidates(
    catalog: Catalog,
) -> tuple[dict[str, list[Callable[[], None]]], list[Candidate]]:
    """What retention weighs, and for each, what deleting it takes: its manifest first."""
    store = catalog.store
    actions: dict[str, list[Callable[[], None]]] = {}
    candidates = []
    for entry in catalog.entries():
        manifest = entry.manifest
        actions[manifest.id] = [
            partial(store.delete, manifest.manifest_key), partial(store.delete, manifest.object_key)
        ]
        condition = Condition.VERIFIED if entry.good else Condition.DAMAGED
        candidates.append(Candidate(manifest.id, manifest.created_at, condition))
    for info in catalog.incomplete():
        backup_id = backup_id_of(info.key)
        actions[backup_id] = [partial(store.delete, info.key)]
        candidates.append(Candidate(backup_id, info.modified, Condition.INCOMPLETE))
    for info in catalog.unfinished():
        # told apart from a finished object of the same backup, which may exist beside it
        name = f"{backup_id_of(info.key)} (unfinished write)"
        actions[name] = [partial(store.abort_unfinished, info.key)]
        candidates.append(Candidate(name, info.modified, Condition.UNFINISHED))
    return actions, candidates
