"""The unattended jobs, what each runs and how often: the same as the systemd timers'.

Each job calls the services that its command calls (`snapshot save` then `snapshot prune`,
`maintain`, `snapshot verify latest --drill`) and returns what the daemon logs when it ends. A
job that would make its command exit non-zero raises an EtcdopsError: a backup missing from a
store, a prune that failed, a drill that read a copy only after another failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from etcdops.config import Config
from etcdops.config.settings import ScheduleConfig
from etcdops.errors import IntegrityError, StorageError
from etcdops.report import Reporter

log = logging.getLogger("etcdops.unattended.jobs")


@dataclass(frozen=True)
class Outcome:
    """What a job did, for its end line: a summary and fields (a backup id) for JSON logs."""

    summary: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    name: str
    period_setting: str  # the [schedule] setting of its period
    run: Callable[[Config, Reporter], Outcome]

    def period(self, schedule: ScheduleConfig) -> float:
        """Seconds between two runs."""
        return float(getattr(schedule, self.period_setting))


def snapshot(config: Config, reporter: Reporter) -> Outcome:
    """The period's backup into every configured store (unless another node took the period),
    then retention applied to each store, as the timer's save and prune do."""
    from etcdops.backup.period import save_once_per_period
    from etcdops.backup.prune import prune
    from etcdops.stores.configured import open_stores

    stores = open_stores(config)
    outcome = save_once_per_period(config, reporter, stores=stores)
    for warning in outcome.warnings:
        log.warning("%s", warning)
    # pruned even when a store missed the backup or the period was another node's: retention
    # must not stall behind an outage, and each node's local store is its own to prune
    pruned = prune(stores, config.cluster, config.retention, datetime.now(UTC), reporter,
                   metrics=config)
    problems = [f"pruning the {name} store failed: {why}" for name, why in pruned.failures.items()]
    deleted = sum(len(r.deleted) for r in pruned.stores)
    result = outcome.result
    if result is None:
        summary, backup_id = outcome.summary(), None
    else:
        backup_id = result.manifest.id
        summary = f"backup {backup_id} stored in {', '.join(result.stored)}"
        problems[:0] = [f"backup {backup_id} is not in the {name} store: {why}"
                        for name, why in result.failures.items()]
    if problems:
        raise StorageError("; ".join(problems), "fix the stores named; the next run retries")
    return Outcome(f"{summary}; pruned {deleted}", {"backup_id": backup_id} if backup_id else {})


def maintain(config: Config, reporter: Reporter) -> Outcome:
    """Compaction, then defragmentation in its window: `etcdops maintain`'s service."""
    from etcdops.maintenance.maintain import maintain as maintain_cluster

    result = maintain_cluster(config, reporter)
    compaction, defrag = result.compaction, result.defrag
    # compaction logged its reason already
    compacted = (f"compacted to revision {compaction.target_revision}" if compaction.compacted
                 else "not compacted")
    defragmented = defrag.skipped or f"{len(defrag.done)} members defragmented"
    return Outcome(f"{compacted}; {defragmented}")


def drill(config: Config, reporter: Reporter) -> Outcome:
    """The newest backup restored into a throwaway etcd and its keys counted."""
    from etcdops.restore.drill import verify_backup

    result = verify_backup(config, "latest", reporter, drill=True)
    backup_id = result.status.backup_id
    if not result.verified:
        problems = "; ".join(result.drill.problems if result.drill else ())
        raise IntegrityError(
            f"backup {backup_id} is NOT VERIFIED: {problems}",
            f"run 'etcdops snapshot verify {backup_id} --drill' and take a new backup",
        )
    if result.status.fallbacks:
        raise StorageError(
            f"backup {backup_id} verified only after: " + "; ".join(result.status.fallbacks),
            "fix the copies named ('etcdops snapshot replicate --missing')",
        )
    return Outcome(f"backup {backup_id} verified by the restore drill", {"backup_id": backup_id})


# in the order they run when due together: the drill then checks the backup just taken
JOBS: tuple[Job, ...] = (
    Job("snapshot", "snapshot_every", snapshot),
    Job("maintain", "maintain_every", maintain),
    Job("drill", "drill_every", drill),
)
