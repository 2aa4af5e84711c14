"""Applying retention to one store's backups: the policy decides, this module deletes (the
journal's prune, etcdops.journal.prune, runs it in every store with the chains extending them).

What is deleted are the files under the backup's own id and location as listed (manifest,
check record, object), never the paths a manifest names: a manifest edited or copied to point
at another backup's object is damaged, not a way to delete that backup. Each backup's manifest
is deleted before its object, so that a prune interrupted halfway leaves an incomplete object
(cleaned up next time) and never a manifest that lists a missing object.
Writes that never finished (a save killed mid-upload: S3 parts, a local temporary file) are
weighed like incomplete objects and aborted once they are older than keep_within: no save runs
that long, so nothing in progress is touched. A store that cannot list them (an S3-compatible
server without ListMultipartUploads, or credentials without s3:ListBucketMultipartUploads) is
still pruned of everything else, with one note saying so: retention must never stall on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from etcdops.backup.catalog import Catalog, CatalogEntry
from etcdops.backup.checks import confirm, record_check
from etcdops.backup.manifest import BackupKeys, backup_id_of
from etcdops.backup.retention import (
    Candidate,
    Condition,
    Decision,
    Reaches,
    decide,
    worth_confirming,
)
from etcdops.config import RetentionConfig
from etcdops.errors import FeatureUnavailable
from etcdops.report import Reporter
from etcdops.stores.base import Store


@dataclass
class StorePrune:
    store: str
    decisions: list[Decision] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # what the operator should know: backups that failed their check here, and optional parts
    # of the prune the store could not do (unfinished writes it cannot list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the store could not be listed or a deletion failed

    def as_dict(self) -> dict[str, object]:
        """One store's part of the JSON form."""
        return {
            "decisions": [
                {"id": d.candidate.id, "condition": d.candidate.condition.value,
                 "action": "keep" if d.keep else "delete", "reasons": list(d.reasons)}
                for d in self.decisions
            ],
            "deleted": self.deleted,
            "notes": self.notes,
            "error": self.error,
        }


@dataclass(frozen=True)
class Dependents:
    """What extends a store's backups and goes with each (the journal's chains, a layer above):
    until when each backup's extension reaches, which retention weighs, and the deletion of
    what depends on a backup, done before the backup's own files go."""

    reaches: Reaches
    delete: Callable[[str], None]  # given the backup's id


def prune_store(
    catalog: Catalog,
    policy: RetentionConfig,
    now: datetime,
    reporter: Reporter,
    result: StorePrune,
    *,
    dry_run: bool,
    entries: Sequence[CatalogEntry] | None = None,
    dependents: Dependents | None = None,
) -> None:
    """Decide and (unless dry_run) delete in one store, filling result as it goes (a failure
    leaves what was done in it). entries: the catalogue's, when the caller listed it already.

    Before anything is deleted, the backups kept as the newest verified ones (and the base of
    the chain covering the window's start) are checked again: one that fails is damaged, and
    retention decides again, keeping older ones in its place. A dry run checks as well (it
    shows what would be done) but writes no check record.
    """
    listed = {e.id: e for e in (catalog.entries() if entries is None else entries)}
    actions, candidates = _candidates(catalog, listed.values(), dependents)
    for warning in catalog.warnings:
        _unavailable(result, warning)
    reaches = dependents.reaches if dependents else None

    def decided() -> list[Decision]:
        return decide(
            list(candidates.values()), keep_within=policy.keep_within, keep_min=policy.keep_min,
            now=now, reaches=reaches,
        )

    result.decisions = decided()
    if any(not d.keep for d in result.decisions):
        window_start = now - timedelta(seconds=policy.keep_within)
        _confirm_kept(catalog.store, listed, candidates, policy.keep_min, result, reporter,
                      write=not dry_run, reaches=reaches, window_start=window_start)
        result.decisions = decided()
    if dry_run:
        return
    for decision in result.decisions:
        if decision.keep:
            continue
        try:
            for action in actions[decision.candidate.id]:
                action()
        except FeatureUnavailable as exc:
            # an unfinished write S3 refuses to abort stays (a lifecycle rule removes it); the
            # other deletions go on
            _unavailable(result, str(exc))
            continue
        result.deleted.append(decision.candidate.id)
        reporter.event(f"deleted backup {decision.candidate.id} from {catalog.store.name} store")


def _unavailable(result: StorePrune, warning: str) -> None:
    """Note an optional part of the prune the store could not do, once however often it came
    up: in the result only, which the CLI prints as warnings."""
    note = f"{warning}; retention still applies to the complete backups"
    if note not in result.notes:
        result.notes.append(note)


def _confirm_kept(
    store: Store,
    entries: dict[str, CatalogEntry],
    candidates: dict[str, Candidate],
    keep_min: int,
    result: StorePrune,
    reporter: Reporter,
    *,
    write: bool,
    reaches: Reaches | None,
    window_start: datetime,
) -> None:
    """Check the bytes of every backup retention would keep as one of the newest verified ones,
    until all it would keep have passed: each that fails makes room for the next older one."""
    confirmed: set[str] = set()
    while pending := [
        c for c in worth_confirming(list(candidates.values()), keep_min, reaches=reaches,
                                    window_start=window_start)
        if c.id not in confirmed
    ]:
        for candidate in pending:
            entry = entries[candidate.id]
            assert entry.manifest is not None  # only complete copies are worth confirming
            how, info, problem = confirm(store, entry.manifest, entry.keys.object, entry.check)
            if write:
                record_check(store, entry.manifest, entry.keys.check, how, info, problem)
            if problem is None:
                confirmed.add(candidate.id)
                candidates[candidate.id] = dataclasses.replace(
                    candidate, condition=Condition.VERIFIED, detail=f"{how} just now"
                )
                continue
            candidates[candidate.id] = dataclasses.replace(
                candidate, condition=Condition.DAMAGED, detail=problem
            )
            note = (
                f"backup {candidate.id} in the {store.name} store failed its check ({problem}): "
                "it no longer counts as verified, and older backups are kept instead"
            )
            result.notes.append(note)
            reporter.event(note)


def _candidates(
    catalog: Catalog, entries: Iterable[CatalogEntry], dependents: Dependents | None
) -> tuple[dict[str, list[Callable[[], None]]], dict[str, Candidate]]:
    """What retention weighs, and for each, what deleting it takes: what depends on it first
    (its chain), then the files under its own id and location, never those its manifest
    names; its manifest first, the object last."""
    store = catalog.store
    actions: dict[str, list[Callable[[], None]]] = {}
    candidates: dict[str, Candidate] = {}

    def files(keys: BackupKeys) -> list[Callable[[], None]]:
        return [partial(store.delete, key) for key in (keys.manifest, keys.check, keys.object)]

    for entry in entries:
        first = [partial(dependents.delete, entry.id)] if dependents else []
        actions[entry.id] = first + files(entry.keys)
        candidates[entry.id] = Candidate(entry.id, entry.created_at, entry.condition, entry.problem)
    for info in catalog.incomplete():
        backup_id = backup_id_of(info.key)
        actions[backup_id] = files(BackupKeys.of(info.key))[1:]
        candidates[backup_id] = Candidate(backup_id, info.modified, Condition.INCOMPLETE)
    for info in catalog.unfinished():
        # told apart from a finished object of the same backup, which may exist beside it
        name = f"{backup_id_of(info.key)} (unfinished write)"
        actions[name] = [partial(store.abort_unfinished, info.key)]
        candidates[name] = Candidate(name, info.modified, Condition.UNFINISHED)
    return actions, candidates
