"""Every metric etcdops writes, declared once: its name, type, help and labels.

Each job writes its own file, and every metric a job writes is named after it
(etcdops_<job>_...), so that no two files carry the same series: node_exporter fails the whole
textfile collection on a duplicate. There is no `job` label (Prometheus' own target label would
rename it exported_job) and no host label: node_exporter's `instance` says which node wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER, GAUGE = "counter", "gauge"


@dataclass(frozen=True)
class Metric:
    name: str  # the sample's name: a counter's ends in _total
    kind: str
    help: str
    labels: tuple[str, ...] = ()  # besides cluster
    zeroed: bool = False  # written as 0 before the first time it happens


# the jobs whose runs count per store: every store the job works on succeeds or fails apart
STORE_JOBS = ("snapshot", "prune", "journal")
# the journal runs for good: its file is written once a minute, each minute counted as a run
# per store (a failure: the store failed at least once that minute)
JOBS = ("snapshot", "prune", "compaction", "defrag", "drill", "recovery", "journal")


def _common(job: str) -> tuple[Metric, ...]:
    """What every job's file holds: its runs, failures, and when the last one of each ended."""
    labels = ("store",) if job in STORE_JOBS else ()
    per = " per store" if labels else ""
    prefix = f"etcdops_{job}_"
    return (
        Metric(prefix + "attempts_total", COUNTER, f"Runs of {job}{per}.", labels, True),
        Metric(prefix + "failures_total", COUNTER, f"Failed runs of {job}{per}.", labels, True),
        Metric(prefix + "last_success_timestamp_seconds", GAUGE,
               f"When the last successful {job} ended{per} (0: never).", labels, True),
        Metric(prefix + "last_failure_timestamp_seconds", GAUGE,
               f"When the last failed {job} ended{per} (0: never).", labels, True),
        Metric(prefix + "last_success_duration_seconds", GAUGE,
               f"How long the last successful {job} took{per}.", labels),
    )


_SPECIFIC = (
    Metric("etcdops_snapshot_last_success_size_bytes", GAUGE,
           "Stored (compressed, encrypted) size of the last successful snapshot per store.",
           ("store",)),
    Metric("etcdops_snapshot_last_success_revision", GAUGE,
           "etcd revision of the last successful snapshot per store.", ("store",)),
    Metric("etcdops_snapshot_period_seconds", GAUGE,
           "The configured snapshot period ([schedule] snapshot_every)."),
    Metric("etcdops_prune_deletions_total", COUNTER, "Backups deleted by retention per store.",
           ("store",), True),
    Metric("etcdops_compaction_revision", GAUGE,
           "The oldest revision etcd keeps after the last successful compaction run."),
    Metric("etcdops_compaction_nospace_alarms", GAUGE,
           "NOSPACE alarms raised in etcd, as the last compaction run saw them."),
    Metric("etcdops_defrag_reclaimed_bytes_total", COUNTER,
           "Bytes of database file given back by defragmentation.", (), True),
    Metric("etcdops_drill_verified", GAUGE,
           "1 when the last restore drill verified its backup, 0 when it did not."),
    Metric("etcdops_recovery_step_duration_seconds", GAUGE,
           "How long each step of the last dr run took.", ("step",)),
    Metric("etcdops_journal_lag_seconds", GAUGE,
           "How old the oldest change the journal may not have sealed into a segment yet is."),
    Metric("etcdops_journal_rpo_target_seconds", GAUGE,
           "The data-loss window the journal is held to ([journal] rpo_target)."),
    Metric("etcdops_journal_segments_total", COUNTER, "Journal segments stored per store.",
           ("store",), True),
    Metric("etcdops_journal_written_bytes_total", COUNTER,
           "Stored (compressed, encrypted) bytes of journal segments per store.", ("store",), True),
    Metric("etcdops_journal_last_revision", GAUGE,
           "The newest etcd revision the journal has stored per store.", ("store",)),
    Metric("etcdops_journal_last_segment_timestamp_seconds", GAUGE,
           "When the journal last stored a segment per store (0: never; a quiet cluster "
           "stores none).", ("store",), True),
    Metric("etcdops_journal_chains_total", COUNTER,
           "Chains the journal started, by why (resumed, base, no-backup, compacted, lag, "
           "new-backup).", ("reason",)),
)

METRICS: dict[str, Metric] = {
    metric.name: metric for job in JOBS for metric in (*_common(job), *_SPECIFIC)
    if metric.name.startswith(f"etcdops_{job}_")
}


def job_metrics_of(job: str) -> list[Metric]:
    """The metrics one job's file holds, in the order they are written."""
    if job not in JOBS:
        raise ValueError(f"no metrics are declared for the job {job!r}")
    return [m for m in METRICS.values() if m.name.startswith(f"etcdops_{job}_")]
