"""Defragmentation, member by member, the way etcd's maintenance guide and etcd-defrag do it.

Defragment blocks the member it runs on, so: only in the off-peak window (unless forced), one
member at a time, followers first and the leader last (the leader's stall is the one clients
feel), every member healthy before starting and after each member, and stop at the first
problem. A member is defragmented when its free pages exceed a threshold, when its database
nears the quota, or when it raised NOSPACE, judged from its status just before its turn, once it
has applied the cluster's compaction on disk: a compaction is applied member by member, and a
member defragmented before it deleted the old revisions gives nothing back. A NOSPACE alarm is
disarmed only once every member is below the quota threshold again, or it would simply be
raised again.

One member at a time across every node, too: each node's timer runs `etcdops maintain`, and two
nodes defragmenting two members at once can block two of three and lose quorum. So a run holds
the cluster's election key /etcdops/periods/<cluster>/defrag (etcd/election.py) under a lease
kept alive for the whole run and released at its end; a run that finds it held defragments
nothing. Not for a dry run, and not while NOSPACE is raised: etcd then refuses the key's lease
like any write, and defragmentation is what clears the alarm.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from etcdops.config import Config, DefragConfig, EtcdConfig
from etcdops.errors import EtcdUnavailableError
from etcdops.etcd.election import Holder, Taken, Term, election_key
from etcdops.etcd.maintenance import MemberStatus
from etcdops.etcd.metrics_page import fetch_page, metrics_url
from etcdops.etcd.session import EtcdSession
from etcdops.lock import job_lock
from etcdops.maintenance.compaction import oldest_revision
from etcdops.maintenance.members import MemberState, applied_status, survey, unhealthy
from etcdops.maintenance.quota import above_share, effective_quota, nospace_alarms, share_text
from etcdops.maintenance.window import parse_window
from etcdops.metrics import job_metrics
from etcdops.report import Reporter
from etcdops.units import format_size

log = logging.getLogger("etcdops.maintenance.defrag")

HEALTH_HINT = "fix that member (etcdctl endpoint status --cluster), then run etcdops defrag again"


@dataclass(frozen=True)
class DefragDecision:
    """Whether one member gets defragmented, and the rule that decided it."""

    member: str
    endpoint: str
    is_leader: bool
    defragment: bool
    reason: str
    db_size: int
    db_size_in_use: int
    quota: int


@dataclass(frozen=True)
class Defragmented:
    """One member done: its size before and after, and how long it was blocked."""

    member: str
    endpoint: str
    size_before: int
    size_after: int
    in_use_after: int
    seconds: float


@dataclass
class DefragReport:
    """What a run decided and did, member by member, and what became of NOSPACE."""

    window: str
    in_window: bool
    forced: bool
    dry_run: bool
    skipped: str | None = None  # why nothing was touched
    decisions: list[DefragDecision] = field(default_factory=list)
    done: list[Defragmented] = field(default_factory=list)
    disarmed: list[str] = field(default_factory=list)
    alarm_kept: str | None = None  # why a NOSPACE alarm stays raised
    compacted_to: int | None = None  # the compaction each member was waited for
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """The report as `--output json` prints it."""
        return asdict(self)


def assess_member(
    name: str, status: MemberStatus, nospace: bool, config: DefragConfig, quota: int,
    *, reclaim_only: bool = False,
) -> DefragDecision:
    """Apply etcd-defrag's rules to one member; the reason names each rule that fired.

    reclaim_only (outside the window, under NOSPACE): a member counts only when defragmenting
    it gives pages back or can clear the alarm, so that a database full of live data is not
    defragmented, blocking its member, every minute for nothing."""
    free = status.db_size - status.db_size_in_use
    share = share_text(config.quota_percent, quota)
    full_of_data = above_share(status.db_size_in_use, quota, config.quota_percent)
    reasons = []
    if nospace and not (reclaim_only and full_of_data):
        reasons.append("NOSPACE alarm raised")
    if free > config.free_threshold:
        reasons.append(f"{format_size(free)} free > {format_size(config.free_threshold)}")
    if above_share(status.db_size, quota, config.quota_percent) and not reclaim_only:
        reasons.append(f"db {format_size(status.db_size)} > {share}")
    if reasons:
        reason = "; ".join(reasons)
    elif reclaim_only:
        reason = (
            f"{format_size(status.db_size_in_use)} in use > {share}: defragmenting gives back "
            f"{format_size(free)} and cannot clear NOSPACE, and outside the window nothing less "
            "is worth blocking the member for"
        )
    else:
        reason = (
            f"{format_size(free)} free <= {format_size(config.free_threshold)} and db "
            f"{format_size(status.db_size)} <= {share}"
        )
    return DefragDecision(
        name, status.endpoint, status.is_leader, bool(reasons), reason,
        status.db_size, status.db_size_in_use, quota,
    )


def work_order(states: list[MemberState]) -> list[MemberState]:
    """The members in the order to work: followers first, the leader last."""
    return sorted(states, key=lambda s: bool(s.status and s.status.is_leader))  # stable


def compaction_revision(session: EtcdSession, states: list[MemberState]) -> int | None:
    """The revision the cluster is compacted to, None before its first compaction."""
    # whoever compacted (etcdops compact, kube-apiserver, etcd's own compactor): the reads
    # are linearizable, so they see every compaction committed before them
    current = max(s.status.revision for s in states if s.status is not None)
    oldest = oldest_revision(session, current)
    return oldest if oldest > 1 else None


def member_quotas(
    session: EtcdSession, states: list[MemberState], config: EtcdConfig
) -> dict[str, int]:
    """Each member's quota: the configured one, or the member's own when it reports less."""
    quotas = {}
    for state in states:
        page = None
        if state.endpoint is not None:
            try:
                page = fetch_page(metrics_url(state.endpoint, session.endpoints, config), config)
            except EtcdUnavailableError as exc:
                log.warning("%s; assuming the configured quota", exc.message)
        quotas[state.name] = effective_quota(page, config.quota_backend_bytes)
    return quotas


def defragment_cluster(
    session: EtcdSession,
    config: Config,
    reporter: Reporter,
    *,
    now: datetime,
    force: bool = False,
    dry_run: bool = False,
) -> DefragReport:
    """Defragment the members that need it, one at a time; EtcdUnavailableError at a problem.
    A run that is not a dry run is recorded in the cluster's metrics (outside the window too)."""
    run = functools.partial(_defragment, session, config, reporter, now, force, dry_run)
    if dry_run:
        return run()
    with job_metrics(config, "defrag") as metrics:
        report = run()
        reclaimed = sum(max(d.size_before - d.size_after, 0) for d in report.done)
        metrics.add("reclaimed_bytes_total", reclaimed)
        return report


def _defragment(
    session: EtcdSession, config: Config, reporter: Reporter, now: datetime, force: bool,
    dry_run: bool,
) -> DefragReport:
    started = time.monotonic()
    window = parse_window(config.defrag.window, config.defrag.timezone)
    report = DefragReport(str(window), window.contains(now), force, dry_run)
    if not report.in_window and not force:
        # under NOSPACE etcd takes no writes until a defragmentation: there is no peak to spare
        if not nospace_alarms(session.alarms()):
            local = now.astimezone(window.zone)
            report.skipped = (
                f"outside the off-peak window {window} (it is {local:%H:%M} there): nothing "
                "touched; --force defragments anyway"
            )
            return report
        reporter.event(f"NOSPACE is raised: defragmenting outside the off-peak window {window}, "
                       "as etcd takes no writes until it is cleared")
    with job_lock(config, "defrag"):
        nospace = {alarm.member_id for alarm in nospace_alarms(session.alarms())}
        # elected before the survey: a member that another node is defragmenting answers
        # slowly, and would read as unhealthy rather than as busy
        term = _campaign(session, config, reporter, dry_run, bool(nospace))
        if isinstance(term, Taken):
            holder = Holder.from_json(term.value)
            report.skipped = (
                f"defragmentation of cluster {config.cluster} is running on host "
                f"{holder.who}{holder.since}: nothing to do"
            )
            return report
        try:
            states = survey(session)
            problem = unhealthy(states)
            if problem:
                raise EtcdUnavailableError(f"not defragmenting: {problem}", HEALTH_HINT)
            quotas = member_quotas(session, states, config.etcd)
            report.compacted_to = compaction_revision(session, states)
            states = _run(session, config, report, reporter, states, quotas, nospace,
                          lambda: term.lost if term is not None else None)
            if not dry_run:
                _disarm_nospace(session, states, config, report, reporter)
        finally:
            if term is not None:
                why = term.let_go()
                if why is not None:
                    reporter.event(f"could not release {_KEY_NAME} ({why})")
    report.seconds = time.monotonic() - started
    return report


_KEY_NAME = "the defragmentation's election key"


def _campaign(
    session: EtcdSession, config: Config, reporter: Reporter, dry_run: bool, nospace: bool
) -> Term | Taken | None:
    """The cluster's defragmentation for this run, or who has it; None for a run that does not
    elect: a dry run, which blocks no member, or one under NOSPACE."""
    if dry_run:
        return None
    if nospace:
        reporter.event(
            "NOSPACE is raised and etcd takes no writes, not even the election's: defragmenting "
            "without it (a run on another node may overlap this one)"
        )
        return None

    def lost(why: str) -> None:
        reporter.event(f"{why}: another node may start defragmenting; stopping before the "
                       "next member")

    me = Holder.me(datetime.now(UTC)).to_json()
    key = election_key(config.cluster, "defrag")
    return session.campaign(key, me, config.schedule.election_ttl, on_lost=lost)


def _run(
    session: EtcdSession,
    config: Config,
    report: DefragReport,
    reporter: Reporter,
    states: list[MemberState],
    quotas: dict[str, int],
    nospace: set[int],
    lost: Callable[[], str | None],
) -> list[MemberState]:
    pending = work_order(states)
    while pending:
        why = lost()
        if why is not None:
            raise EtcdUnavailableError(
                f"{_KEY_NAME} was lost ({why}): another node may be defragmenting; stopped; "
                f"not defragmented: {', '.join(s.name for s in pending)}",
                "run etcdops defrag again once etcd answers: it defragments what still needs it",
            )
        state = pending.pop(0)
        stop = "stopped; not defragmented: " + (", ".join(s.name for s in pending) or "none")
        status = _applied_status(session, config, report, state, stop)
        decision = assess_member(
            state.name, status, state.id in nospace, config.defrag, quotas[state.name],
            reclaim_only=not (report.in_window or report.forced),
        )
        report.decisions.append(decision)
        if report.dry_run or not decision.defragment:
            continue
        reporter.event(f"defragmenting {decision.member} ({decision.reason})")
        began = time.monotonic()
        try:
            session.defragment(decision.endpoint, config.defrag.timeout)
            after = session.status(decision.endpoint)
        except EtcdUnavailableError as exc:
            raise EtcdUnavailableError(
                f"defragmenting {decision.member} failed: {exc.message}; {stop}", HEALTH_HINT
            ) from exc
        report.done.append(Defragmented(
            decision.member, decision.endpoint, decision.db_size, after.db_size,
            after.db_size_in_use, time.monotonic() - began,
        ))
        reporter.event(
            f"defragmented {decision.member}: {format_size(decision.db_size)} -> "
            f"{format_size(after.db_size)}"
        )
        states = survey(session)
        problem = unhealthy(states)
        if problem:
            raise EtcdUnavailableError(
                f"after defragmenting {decision.member}: {problem}; {stop}", HEALTH_HINT
            )
        # leadership can move while a member is blocked: whoever leads now still goes last
        leaders = {s.name for s in states if s.status and s.status.is_leader}
        pending.sort(key=lambda s: s.name in leaders)
    return states


def _applied_status(
    session: EtcdSession, config: Config, report: DefragReport, state: MemberState, stop: str
) -> MemberStatus:
    # compact returns once the member that served it has applied the compaction; the others
    # delete the old revisions later, so each member is decided from a status taken after it
    # has, just before its turn (the survey's statuses can predate it)
    endpoint = state.endpoint or ""  # every member has one: the survey found all healthy
    learner = state.status is not None and state.status.is_learner
    log.debug("%s: waiting for the compaction to revision %s", state.name, report.compacted_to)
    try:
        return applied_status(
            session, endpoint, report.compacted_to, learner=learner,
            timeout=config.compaction.timeout,
        )
    except EtcdUnavailableError as exc:
        raise EtcdUnavailableError(
            f"checking {state.name} before its turn failed: {exc.message}; {stop}", HEALTH_HINT
        ) from exc


def _disarm_nospace(
    session: EtcdSession,
    states: list[MemberState],
    config: Config,
    report: DefragReport,
    reporter: Reporter,
) -> None:
    nospace = nospace_alarms(session.alarms())
    if not nospace:
        return
    quotas = {d.member: d.quota for d in report.decisions}
    over = [
        s.name for s in states
        if s.status is None
        or above_share(s.status.db_size, quotas[s.name], config.defrag.quota_percent)
    ]
    if over:
        report.alarm_kept = (
            f"NOSPACE stays raised: {', '.join(over)} still above {config.defrag.quota_percent}% "
            "of the quota; compact (etcdops compact), delete data, then defragment again"
        )
        return
    names = {s.id: s.name for s in states}
    for alarm in nospace:
        session.disarm(alarm)
        report.disarmed.append(f"NOSPACE on {names.get(alarm.member_id, f'{alarm.member_id:x}')}")
        reporter.event(f"disarmed {report.disarmed[-1]}")
