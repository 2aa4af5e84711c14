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
from typing import TYPE_CHECKING, Any

from etcdops.config import Config
from etcdops.config.settings import ScheduleConfig
from etcdops.errors import IntegrityError, StorageError
from etcdops.report import Reporter
from etcdops.units import format_duration

if TYPE_CHECKING:
    from etcdops.stores.configured import Stores

log = logging.getLogger("etcdops.unattended.jobs")


@dataclass(frozen=True)
class Outcome:
    """What a job did, for its end line: a summary and fields (a backup id) for JSON logs;
    again_in asks for the next run that many seconds after this one rather than on its period."""

    summary: str
    fields: dict[str, Any] = field(default_factory=dict)
    again_in: float | None = None


def _fits_any_host(config: Config) -> str | None:
    return None


@dataclass(frozen=True)
class Job:
    name: str
    period_setting: str  # the [schedule] setting of its period
    run: Callable[[Config, Reporter], Outcome]
    # True: runs at the start of each period of the epoch (the election's periods, what
    # OnCalendar= does); False: a period after its last run ended
    aligned: bool = False
    # why this host cannot run the job (None: it can)
    unfit: Callable[[Config], str | None] = _fits_any_host

    def period(self, schedule: ScheduleConfig) -> float:
        """Seconds between two runs."""
        return float(getattr(schedule, self.period_setting))


def snapshot(config: Config, reporter: Reporter) -> Outcome:
    """The period's backup into every configured store (unless another node took the period),
    then retention applied to each store, as the timer's save and prune@ do.

    The save does not wait for another node's: while it runs, this daemon's other jobs (the
    compaction every minute) must go on. A period held by a save still running asks for a look
    again after [schedule] election_ttl instead, so that the period of a winner that died or
    gave up is still taken by this node; the prune waits for that last look.
    """
    from etcdops.backup.period import save_once_per_period
    from etcdops.stores.configured import open_stores

    stores = open_stores(config)
    try:
        outcome = save_once_per_period(config, reporter, stores=stores, wait=False)
    except Exception:
        # pruned all the same, as the timer's OnFailure=prune@ does: retention must not stall
        # behind an etcd outage; the save's error stays the job's
        try:
            problems = _prune(config, stores, reporter)[0]
        except Exception as exc:
            problems = [f"pruning failed: {type(exc).__name__}: {exc}"]
        if problems:
            log.error("%s (after the failed save)", "; ".join(problems))
        raise
    for warning in outcome.warnings:
        log.warning("%s", warning)
    held = outcome.holder is not None and not outcome.holder.backup_id
    if outcome.result is None and outcome.existing is None and held:
        again = config.schedule.election_ttl
        return Outcome(f"{outcome.summary()} for now; looking again in {format_duration(again)}, "
                       "in case that save fails", again_in=again)
    # pruned even when a store missed the backup or the period was another node's: retention
    # must not stall behind an outage, and each node's local store is its own to prune
    problems, deleted = _prune(config, stores, reporter)
    result, backup_id = outcome.result, outcome.backup_id
    if result is None:
        summary = outcome.summary()
    else:
        summary = f"backup {backup_id} stored in {', '.join(result.stored)}"
        problems[:0] = [f"backup {backup_id} is not in the {name} store: {why}"
                        for name, why in result.failures.items()]
    if problems:
        raise StorageError("; ".join(problems), "fix the stores named; the next run retries")
    # the period's backup in the log line whether this run took it or found it taken, so that
    # a log search for a backup finds every run that relied on it
    return Outcome(f"{summary}; pruned {deleted}", {"backup_id": backup_id} if backup_id else {})


def _prune(config: Config, stores: Stores, reporter: Reporter) -> tuple[list[str], str]:
    """Retention applied to every store, backups and journal chains: what failed, one line a
    store, and what was deleted (the number of backups, and of chains when any)."""
    from etcdops.journal.prune import prune

    pruned = prune(stores, config.cluster, config.retention, datetime.now(UTC), reporter,
                   metrics=config)
    problems = [f"pruning the {name} store failed: {why}" for name, why in pruned.failures.items()]
    deleted = f"{sum(len(r.deleted) for r in pruned.stores)}"
    if chains := sum(len(r.deleted_chains) for r in pruned.stores):
        segments = sum(r.deleted_segments for r in pruned.stores)
        deleted += f" and {chains} journal chains ({segments} segments)"
    return problems, deleted


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


def _without_identity(config: Config) -> str | None:
    # backup hosts hold only the recipients: only the drill host can decrypt
    if config.encryption.identity_file is None:
        return "no [encryption] identity_file on this host"
    return None


# in the order they run when due together: the drill then checks the backup just taken
JOBS: tuple[Job, ...] = (
    Job("snapshot", "snapshot_every", snapshot, aligned=True),
    Job("maintain", "maintain_every", maintain),
    Job("drill", "drill_every", drill, unfit=_without_identity),
)
