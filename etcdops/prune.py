"""Applying retention to every store: the policy decides, this module deletes.

Each backup's manifest is deleted before its object, so that a prune interrupted halfway leaves
an incomplete object (cleaned up next time) and never a manifest that lists a missing object.
Writes that never finished (a save killed mid-upload: S3 parts, a local temporary file) are
weighed like incomplete objects and aborted once they are older than keep_within: no save runs
that long, so nothing in progress is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from etcdops.catalog import Catalog
from etcdops.config import RetentionConfig
from etcdops.errors import EtcdopsError
from etcdops.manifest import OBJECT_SUFFIX
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
            keys, candidates = _candidates(catalog)
            result.decisions = decide(
                candidates, keep_within=policy.keep_within, keep_min=policy.keep_min, now=now
            )
            if dry_run:
                continue
            for decision in result.decisions:
                if decision.keep:
                    continue
                for key in keys[decision.candidate.id]:
                    if decision.candidate.condition is Condition.UNFINISHED:
                        store.abort_unfinished(key)
                    else:
                        store.delete(key)
                result.deleted.append(decision.candidate.id)
                reporter.event(f"deleted backup {decision.candidate.id} from {name} store")
        except EtcdopsError as exc:
            result.error = str(exc)
    return results


def _candidates(catalog: Catalog) -> tuple[dict[str, list[str]], list[Candidate]]:
    """What retention weighs, and for each, the keys to delete: manifest first."""
    keys: dict[str, list[str]] = {}
    candidates = []
    for entry in catalog.entries():
        manifest = entry.manifest
        keys[manifest.id] = [manifest.manifest_key, manifest.object_key]
        condition = Condition.VERIFIED if entry.good else Condition.DAMAGED
        candidates.append(Candidate(manifest.id, manifest.created_at, condition))
    for info in catalog.incomplete():
        backup_id = info.key.rsplit("/", 1)[-1].removesuffix(OBJECT_SUFFIX)
        keys[backup_id] = [info.key]
        candidates.append(Candidate(backup_id, info.modified, Condition.INCOMPLETE))
    for info in catalog.unfinished():
        # told apart from a finished object of the same backup, which may exist beside it
        name = info.key.rsplit("/", 1)[-1].removesuffix(OBJECT_SUFFIX) + " (unfinished write)"
        keys[name] = [info.key]
        candidates.append(Candidate(name, info.modified, Condition.UNFINISHED))
    return keys, candidates
