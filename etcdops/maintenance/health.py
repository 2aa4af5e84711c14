"""`etcdops health`: every member, the backups and the journal, checked against their targets.

One row per check, each with its value, its target and a verdict: fail, ok, info for what has
no target (the version), or warn for what an operator should look at but does not fail health
(a copy that is damaged or unchecked, a manifest that hides its backup). A check that cannot be
evaluated (a member or its /metrics page does not answer) fails: unknown is not healthy.
"""

from __future__ import annotations

from datetime import datetime

from etcdops.backup.catalog import BackupView, Survey, survey_stores
from etcdops.config import Config, HealthConfig
from etcdops.errors import EtcdopsError
from etcdops.etcd.maintenance import Alarm, MemberStatus
from etcdops.etcd.metrics_page import (
    BACKEND_COMMIT,
    COMPACTION,
    WAL_FSYNC,
    MetricsPage,
    fetch_page,
    metrics_url,
)
from etcdops.etcd.session import EtcdSession
from etcdops.maintenance.check import FAIL, INFO, OK, WARN, Check, judged
from etcdops.maintenance.journal_health import check_journal
from etcdops.maintenance.members import MemberState, survey
from etcdops.maintenance.quota import above_share, effective_quota, share_text
from etcdops.stores.configured import Stores, open_stores
from etcdops.units import format_duration, format_size

__all__ = ["FAIL", "INFO", "OK", "WARN", "Check", "check_backups", "check_cluster",
           "check_health"]


def check_health(
    config: Config, now: datetime, *, stores: Stores | None = None, journal_wait: bool = True
) -> list[Check]:
    """Every check of `etcdops health`: the cluster's, the backups' and, when it is in use, the
    journal's (in the topology given, default: the stores config names). journal_wait: a lag
    above the target is looked at again for up to the target (etcdops.maintenance.
    journal_health)."""
    stores = stores or open_stores(config)
    found = survey_stores(stores, config.cluster)
    with EtcdSession(config.etcd) as session:
        checks = check_cluster(session, config)
        journal = check_journal(session, config, stores, found, now, wait=journal_wait)
    return checks + backup_checks(config, stores, found, now) + journal


def check_backups(config: Config, now: datetime, *, stores: Stores | None = None) -> list[Check]:
    """The backups' rows, from a survey of the stores (default: the ones config names)."""
    stores = stores or open_stores(config)
    return backup_checks(config, stores, survey_stores(stores, config.cluster), now)


def backup_checks(config: Config, stores: Stores, found: Survey, now: datetime) -> list[Check]:
    """The newest verified backup's age in any store, whether the second region holds it, and
    a warning for each copy or manifest that is not what it should be."""
    checks = [
        judged("backups", f"{name} store", exc.message, "listable", False)
        for name, exc in found.unreachable.items()
    ]
    checks.append(backup_freshness(found.backups, now, config.health.backup_max_age))
    second = stores.second_region
    if second is not None and second not in found.unreachable:
        checks.append(replica_holds_newest(found.backups, second))
    return checks + backup_warnings(found)


def backup_warnings(found: Survey) -> list[Check]:
    """A warning per damaged manifest, and per backup with a copy that is not verified."""
    checks = [Check("backups", "manifest", line, "readable, names its own backup", WARN)
              for line in found.warnings()]
    for view in found.backups:
        bad = {name: problem for name, problem in view.copies.items() if problem}
        if bad:
            value = f"{view.manifest.id}: " + "; ".join(f"{n}: {p}" for n, p in bad.items())
            checks.append(Check("backups", "copies", value, "verified", WARN))
    return checks


def check_cluster(session: EtcdSession, config: Config) -> list[Check]:
    """Every member's status, raft position, size, alarms and disk latencies."""
    try:
        states = survey(session)
        alarms = session.alarms()
    except EtcdopsError as exc:
        return [judged("cluster", "reachable", exc.message, "members answer", False)]
    leader = next((s.status for s in states if s.status and s.status.is_leader), None)
    checks = []
    for state in states:
        checks += _member_checks(state, leader, alarms, config)
        if state.endpoint is not None and state.status is not None:
            url = metrics_url(state.endpoint, session.endpoints, config.etcd)
            try:
                page = fetch_page(url, config.etcd)
            except EtcdopsError as exc:
                checks.append(judged(state.name, "metrics", exc.message, "readable", False))
                page = None
            checks.append(_sizejudged(state.name, state.status, page, config))
            if page is not None:
                checks += latency_checks(state.name, page, config.health)
    return checks


def _member_checks(
    state: MemberState, leader: MemberStatus | None, alarms: list[Alarm], config: Config
) -> list[Check]:
    status = state.status
    if status is None:
        return [judged(state.name, "status", state.problem or "", "answers", False)]
    role = "leader" if status.is_leader else "learner" if status.is_learner else "follower"
    checks = [
        judged(state.name, "status", state.problem or f"{role} at {state.endpoint}",
               "answers, has a leader, no errors", state.healthy),
        Check(state.name, "version", status.version, "-", INFO),
    ]
    lag = config.health.raft_index_lag
    if leader is not None:
        behind = leader.raft_index - status.raft_index
        checks.append(judged(
            state.name, "raft", f"term {status.raft_term}, index {status.raft_index}",
            f"term {leader.raft_term}, index within {lag} of the leader's {leader.raft_index}",
            status.raft_term == leader.raft_term and behind <= lag,
        ))
    raised = sorted(a.kind for a in alarms if a.member_id == state.id)
    checks.append(judged(state.name, "alarms", ", ".join(raised) or "none", "none", not raised))
    return checks


def _sizejudged(
    name: str, status: MemberStatus, page: MetricsPage | None, config: Config
) -> Check:
    quota = effective_quota(page, config.etcd.quota_backend_bytes)
    percent = config.health.db_size_percent
    return judged(
        name, "db size",
        f"{format_size(status.db_size)} ({format_size(status.db_size_in_use)} in use)",
        f"<= {share_text(percent, quota)}",
        not above_share(status.db_size, quota, percent),
    )


def latency_checks(name: str, page: MetricsPage, config: HealthConfig) -> list[Check]:
    """WAL fsync and backend commit p99 against the seed's targets; compaction duration."""
    return [
        _latency(name, "wal fsync p99", page, WAL_FSYNC, 1.0, config.wal_fsync_p99),
        _latency(name, "backend commit p99", page, BACKEND_COMMIT, 1.0, config.backend_commit_p99),
        # etcd 3.5 reports compaction in milliseconds
        _latency(name, "compaction p99", page, COMPACTION, 0.001, config.compaction_p99),
    ]


def _latency(
    name: str, check: str, page: MetricsPage, metric: str, unit: float, target: float | None
) -> Check:
    estimate = page.quantile(metric, 0.99)
    goal = f"< {_seconds(target)}" if target is not None else "-"
    if estimate is None:
        # no observations since the member started (no compaction yet, say): nothing to judge
        return Check(name, check, f"no data ({metric})", goal, INFO)
    seconds = estimate.value * unit
    value = (
        f"{'> ' if estimate.above_last_bucket else ''}{_seconds(seconds)} "
        f"over {estimate.count} since the member started"
    )
    if target is None:
        return Check(name, check, value, goal, INFO)
    return judged(name, check, value, goal, not estimate.above_last_bucket and seconds < target)


def backup_freshness(views: list[BackupView], now: datetime, max_age: float) -> Check:
    """The newest verified backup's age against the hourly schedule (views: newest last)."""
    good = [view for view in views if view.verified_in]
    target = f"< {format_duration(max_age)} old"
    if not good:
        return judged("backups", "newest backup", "no verified backup in any store", target,
                      False)
    newest = good[-1]
    age = (now - newest.manifest.created_at).total_seconds()
    value = (
        f"{format_duration(max(age, 0.0))} ago "
        f"({newest.manifest.id}, verified in {', '.join(newest.verified_in)})"
    )
    return judged("backups", "newest backup", value, target, age < max_age)


def replica_holds_newest(views: list[BackupView], second_region: str) -> Check:
    """Whether the newest verified backup has reached the second region, verified there."""
    good = [view for view in views if view.verified_in]
    if not good:
        return judged("backups", "replica region", "no verified backup", "holds the newest",
                      False)
    newest = good[-1]
    held = second_region in newest.verified_in
    value = f"{newest.manifest.id} {'is' if held else 'is NOT'} in the replica region"
    return judged("backups", "replica region", value, "holds the newest", held)


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.2f}ms" if seconds < 1 else format_duration(seconds)
