"""`dr run`: the stop step, then the seed's five steps, each with its timeout and its own timing.

1. Restore etcd from backup   2. Start control plane components   3. Nodes reconnect
4. Kubelets reconcile pod state   5. Controllers recreate missing resources

Before anything is touched every prerequisite is checked (as --dry-run does) and the run is
refused with the first failure's error. The state file is written after each step, so a rerun
after an interruption or a failure resumes at the first unfinished step, with the same backup,
point in time (recovery.point) and cluster token. A hard failure (the stop step or steps 1-2)
ends the run with its error; a check of steps 3-5 not met in time, or a missed target, does
not: the run finishes, and the report says what was missed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

from etcdops.config import Config
from etcdops.errors import EtcdopsError, Interrupted
from etcdops.etcd.session import EtcdSession
from etcdops.lock import HostLock
from etcdops.metrics import job_metrics
from etcdops.recovery import steps
from etcdops.recovery.members import prepared_backup, restore_members
from etcdops.recovery.plan import Plan, default_state_path, load_plan
from etcdops.recovery.point import PointRequest, planned_record, point_request
from etcdops.recovery.prereqs import Preflight, check_prerequisites, recheck_members
from etcdops.recovery.report import RecoveryReport, build_report, step_label
from etcdops.recovery.state import (
    STEP_NAMES,
    RecoveryState,
    StepRecord,
    now_iso,
    open_state,
    read_state,
)
from etcdops.report import Reporter
from etcdops.stores.configured import Stores, open_stores
from etcdops.units import format_duration

if TYPE_CHECKING:
    from etcdops.restore.member import Prepared
    from etcdops.restore.point_plan import PointPlan, PointTarget

# a member that is down must not hold a poll for the whole configured dial timeout
_POLL_DIAL_TIMEOUT = 2.0


def run_recovery(
    config: Config,
    plan_path: Path,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    state_path: Path | None = None,
    stores: Stores | None = None,
    point: PointTarget | None = None,
    allow_gap: bool = False,
) -> RecoveryReport:
    """Run (or with dry_run, check) the recovery a plan describes, resuming from the state
    file (default: beside the plan). point and allow_gap (dr run's --at/--revision and
    --allow-gap) override the plan's. Raises before anything is touched: a bad plan, a state
    that refuses (plan or point changed, already completed), a failed prerequisite. Once the
    steps begin it returns the report: `failure` holds what stopped it, if anything did."""
    plan = load_plan(plan_path).with_point(point, allow_gap)
    state_path = state_path or default_state_path(plan_path)
    stores = stores or open_stores(config)
    if dry_run:
        return _dry_run(config, plan, state_path, reporter, stores)
    lock = state_path.with_name(state_path.name + ".lock")
    with job_metrics(config, "recovery") as metrics:
        with HostLock(lock, f"dr run with the state file {state_path}"):
            state = open_state(state_path, plan, config.cluster)
            run = _Run(config, plan, state, reporter, stores)
            report = run.run()
        for name, record in run.ran.items():
            metrics.set("step_duration_seconds", record.seconds, step=name)
        if report.failure is not None or report.target_missed:
            metrics.failed()
        return report


def _dry_run(
    config: Config, plan: Plan, state_path: Path, reporter: Reporter, stores: Stores
) -> RecoveryReport:
    """Every prerequisite and the plan, changing nothing; `failure` is the first failed one."""
    problem: EtcdopsError | None = None
    try:
        existing = read_state(state_path, plan)
    except EtcdopsError as exc:
        existing, problem = None, exc
    state = existing or RecoveryState(state_path, plan.fingerprint(), declared_at="", token="")
    request = point_request(plan, state)
    found = check_prerequisites(
        config, plan, reporter, stores=stores, backup_id=state.backup_id, point=request,
    )
    if problem is not None:
        found.fail("state", str(state_path), problem)
    elif existing is not None:
        found.add("state", str(state_path), f"a run resumes at {step_label(existing.next_step)} "
                  f"(the disaster was declared at {existing.declared_at})")
    _choose_backup(state, found, request)
    failures = found.failures
    return build_report(
        config, plan, state, {}, dry_run=True, prerequisites=found.checks,
        failure=failures[0].error if failures else None,
    )


def _choose_backup(
    state: RecoveryState, found: Preflight, request: PointRequest | None
) -> None:
    """The backup and the point in time the preflight found, kept for this recovery and every
    resume of it (a resume keeps the words of the first attempt's target)."""
    if found.backup is not None:
        manifest = found.backup.manifest
        state.backup_id = manifest.id
        state.backup_created_at = manifest.created_at.isoformat()
    staged = state.point is not None and state.point["reached"] is not None
    if found.point is not None and request is not None and not staged:
        # once step 1 staged it, the record says what was done (and from which backup)
        target = state.point["target"] if state.point else request.target.describe()
        state.point = planned_record(found.point, target)


class _Run:
    """One run of a recovery: the steps not finished yet, in order."""

    def __init__(
        self, config: Config, plan: Plan, state: RecoveryState, reporter: Reporter,
        stores: Stores,
    ) -> None:
        self.config, self.plan, self.state = config, plan, state
        self.reporter, self.stores = reporter, stores
        self.ran: dict[str, StepRecord] = {}
        self.bump_flags = False
        self.prepared: Prepared | None = None  # the decoded backup, from before stop to step 1
        self.point: PointPlan | None = None  # the point in time planned by the preflight
        self.prepare_started_at, self.prepare_seconds = "", 0.0
        self.current = ""  # the step running, or "decode" (step 1's, before the stop step)
        etcd = config.etcd
        self.session = EtcdSession(dataclasses.replace(
            etcd, endpoints=tuple(member.client_url for member in plan.members),
            dial_timeout=min(etcd.dial_timeout, _POLL_DIAL_TIMEOUT),
        ))

    def run(self) -> RecoveryReport:
        state = self.state
        if "restore" not in state.steps:
            self._preflight()
        state.save()  # from here on a rerun resumes, with this backup and token
        failure: BaseException | None = None
        try:
            with contextlib.ExitStack() as snapshot:
                for name in STEP_NAMES:
                    if name in state.steps:
                        continue
                    if name in ("stop", "restore") and self.prepared is None:
                        self._prepare(snapshot)
                    state.finish(self._step(name))
                    if name == "restore":
                        snapshot.close()  # the plain snapshot goes as soon as it has served
                        self.prepared = None
        except KeyboardInterrupt:
            failure = Interrupted(
                f"interrupted during {self._current_label()}; {state.path} keeps "
                "the steps done before it",
                f"run dr run --plan {self.plan.path} again to resume at "
                f"{step_label(str(state.next_step))}",
            )
        except EtcdopsError as exc:
            failure = exc
        finally:
            self.session.close()
        return build_report(self.config, self.plan, state, self.ran, failure=failure)

    def _current_label(self) -> str:
        """What was running, in words: the decode is step 1's, though it runs first."""
        if self.current == "decode":
            before = "" if "stop" in self.state.steps else ", before the stop step ran"
            return f"{step_label('restore')} while the backup was decoded{before}"
        return step_label(self.current or str(self.state.next_step))

    def _preflight(self) -> None:
        """Refuse with the first failed prerequisite while nothing is touched yet."""
        request = point_request(self.plan, self.state)
        found = check_prerequisites(
            self.config, self.plan, self.reporter, stores=self.stores,
            backup_id=self.state.backup_id, point=request,
        )
        failures = found.failures
        if failures:
            error = failures[0].error
            assert error is not None
            if len(failures) > 1:
                more = f"{len(failures) - 1} more prerequisite(s) fail: see dr run --dry-run"
                error.hint = f"{error.hint}; {more}" if error.hint else more
            raise error
        self.bump_flags = found.bump_flags
        self.point = found.point
        _choose_backup(self.state, found, request)

    def _prepare(self, snapshot: contextlib.ExitStack) -> None:
        """Step 1 begins with the backup decoded, before the stop step touches anything; step 1
        reports its time apart, and the targets count from its start."""
        self.current = "decode"
        started_at, started = now_iso(), time.monotonic()
        if self.state.restore_started_at is None:
            self.state.restore_started_at = started_at
            self.state.save()
        replays = " and the journal replayed" if self.state.point else ""
        self.reporter.event(f"{step_label('restore')}: the backup is read and decoded{replays} "
                            "first")
        try:
            self.prepared = snapshot.enter_context(prepared_backup(
                self.config, self.plan, self.state, self.reporter, stores=self.stores,
                bump_flags=self.bump_flags, point=self.point,
            ))
        except BaseException as exc:
            seconds = time.monotonic() - started
            detail = getattr(exc, "message", None) or "interrupted"
            self.ran["restore"] = StepRecord(
                "restore", started_at, now_iso(), seconds, "failed",
                f"decoding the backup: {detail}", started_at, seconds,
            )
            raise
        self.prepare_started_at, self.prepare_seconds = started_at, time.monotonic() - started

    def _step(self, name: str) -> StepRecord:
        """Run one step, timed; a hard failure is recorded as failed and raised."""
        label = step_label(name)
        self.current = name
        started_at, started = now_iso(), time.monotonic()
        decode: tuple[str, float] = ("", 0.0)
        prefix = ""
        if name == "restore":
            # step 1's decode ran before the stop step: its own time, shown apart; step 1's
            # timeout counts from it
            decode = (self.prepare_started_at, self.prepare_seconds)
            replayed = " (with the journal's replay)" if self.state.point else ""
            prefix = (f"backup decoded{replayed} in {format_duration(self.prepare_seconds)} "
                      f"from {self.prepare_started_at[11:23]}; ")
        timeout = getattr(self.plan.steps, name).timeout
        self.reporter.event(f"{label}: started (timeout {format_duration(timeout)})")
        try:
            outcome = self._dispatch(name, started - decode[1] + timeout, timeout)
        except BaseException as exc:
            detail = getattr(exc, "message", None) or "interrupted"
            self.ran[name] = StepRecord(name, started_at, now_iso(), time.monotonic() - started,
                                        "failed", prefix + detail, *decode)
            raise
        record = StepRecord(name, started_at, now_iso(), time.monotonic() - started,
                            outcome.verdict, prefix + outcome.detail, *decode)
        self.ran[name] = record
        self.reporter.event(
            f"{label}: {record.verdict} in {format_duration(record.seconds)}: {record.detail}"
        )
        return record

    def _dispatch(self, name: str, deadline: float, timeout: float) -> steps.Outcome:
        plan, state, reporter = self.plan, self.state, self.reporter
        revision = state.revision_after or 0
        if name == "stop":
            detail = steps.run_commands(plan.steps.stop.commands, deadline, reporter, "stop")
            return steps.Outcome("ok", detail)
        if name == "restore":
            assert self.prepared is not None, "the backup is decoded before step 1"
            recheck_members(self.config, plan, reporter)
            return steps.Outcome("ok", restore_members(
                self.config, plan, state, self.prepared, reporter, stores=self.stores,
                deadline=deadline,
            ))
        if name == "start":
            ran = steps.run_commands(plan.steps.start.commands, deadline, reporter, "start")
            ready = steps.wait_for_cluster(
                self.session, plan, state.revision_after, deadline, timeout
            )
            return steps.Outcome("ok", f"{ran}; {ready}")
        if name == "nodes":
            checks = steps.node_checks(plan.steps.nodes, self.session, revision, reporter)
        elif name == "pods":
            checks = steps.pod_checks(plan.steps.pods, self.session, revision, reporter)
        else:
            checks = steps.controller_checks(plan.steps.controllers, self.session, reporter)
        return steps.wait_for(checks, deadline, timeout)
