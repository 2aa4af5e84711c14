"""The recovery report: every step's start, duration, verdict and detail, the restore and
recovery times against their targets, the point in time restored (when the journal was
replayed), the data-loss window, the revision plan, and where each member's data dir is and
where the old one went.

The restore and recovery times are wall clock from the start of step 1's first decode of the
backup (which runs before the stop step, so that a backup that fails in every store leaves the
control plane untouched) to the end of step 2 and step 5, kept in the state file, so the stop
step and an interruption's gap count: for the cluster it was outage too. Each step's own time
is its own: step 1's decode is shown apart (started_at and seconds of its own), so the stop
step's, the decode's and the steps' times add up to those wall-clock times.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdops.config import Config
from etcdops.recovery.plan import Plan
from etcdops.recovery.prereqs import Prerequisite
from etcdops.recovery.state import STEP_NAMES, RecoveryState, StepRecord, seconds_between

TITLES = {
    "stop": "Stop what writes to etcd",
    "restore": "Restore etcd from backup",
    "start": "Start control plane components",
    "nodes": "Nodes reconnect",
    "pods": "Kubelets reconcile pod state",
    "controllers": "Controllers recreate missing resources",
}
NUMBERS = {name: number for number, name in enumerate(STEP_NAMES)}  # stop is "step 0"
RESUMED = "skipped (resumed: done before)"
NOT_RUN = "not run"


def step_label(name: str) -> str:
    """'step 2 (Start control plane components)', or the stop step's name."""
    if name == "stop":
        return "the stop step"
    return f"step {NUMBERS[name]} ({TITLES[name]})"


@dataclass(frozen=True)
class TargetCheck:
    """A time measured against its target; seconds None: the steps it spans did not end."""

    seconds: float | None
    target: float

    @property
    def met(self) -> bool | None:
        """Whether the time is within its target (None: not measured)."""
        return None if self.seconds is None else self.seconds <= self.target

    def as_dict(self) -> dict[str, object]:
        """The JSON form: seconds, target, met."""
        seconds = None if self.seconds is None else round(self.seconds, 3)
        return {"seconds": seconds, "target_seconds": self.target, "met": self.met}


@dataclass
class RecoveryReport:
    """What a recovery did (or, with dry_run, would do and whether it can)."""

    plan: Plan
    state_path: Path
    dry_run: bool
    steps: list[StepRecord]
    restore_time: TargetCheck
    recovery_time: TargetCheck
    backup_id: str | None = None
    backup_created_at: str | None = None
    store: str | None = None
    fallbacks: list[str] = field(default_factory=list)
    declared_at: str | None = None
    point: dict[str, Any] | None = None  # recovery.point's record: planned, then staged
    revision: dict[str, object] | None = None
    members: dict[str, dict[str, object]] = field(default_factory=dict)
    files: dict[str, object] | None = None
    warnings: list[str] = field(default_factory=list)
    prerequisites: list[Prerequisite] = field(default_factory=list)
    completed: bool = False
    # a hard failure or an interruption that ended the run; the CLI exits with its code
    failure: BaseException | None = None
    resume_at: str | None = None  # the step a rerun starts from, when the run did not finish

    @property
    def data_loss_window(self) -> float | None:
        """The writes that are lost: the time between the point restored (the backup's
        creation, or the newest change the replayed journal holds) and the disaster."""
        restored = self.point["as_of"] if self.point else self.backup_created_at
        if restored is None or self.declared_at is None:
            return None
        return seconds_between(restored, self.declared_at)

    @property
    def timed_out(self) -> list[str]:
        """The steps whose check was not met within its timeout."""
        return [record.name for record in self.steps if record.verdict == "timed out"]

    @property
    def missed(self) -> list[str]:
        """Every target missed, in words: a finished recovery then exits 16."""
        missed = [f"{step_label(name)} timed out" for name in self.timed_out]
        for what, check in (("restore", self.restore_time), ("recovery", self.recovery_time)):
            if check.met is False:
                missed.append(f"{what} time {check.seconds:.1f}s is over its target "
                              f"{check.target:g}s")
        return missed

    @property
    def target_missed(self) -> bool:
        """Whether a finished recovery missed a target (exit 16)."""
        return bool(self.missed)

    def as_dict(self) -> dict[str, object]:
        """The JSON form of the report (dr run -o json, --report FILE)."""
        window = self.data_loss_window
        return {
            "plan": str(self.plan.path),
            "state_file": str(self.state_path),
            "dry_run": self.dry_run,
            "completed": self.completed,
            "backup": {
                "id": self.backup_id, "created_at": self.backup_created_at,
                "store": self.store, "fallbacks": list(self.fallbacks),
            },
            "declared_at": self.declared_at,
            "point": self.point,
            "steps": [
                {"number": NUMBERS[record.name], "name": record.name,
                 "title": TITLES[record.name], "started_at": record.started_at or None,
                 "seconds": round(record.seconds, 3) if record.started_at else None,
                 "verdict": record.verdict, "detail": record.detail,
                 "decode": {"started_at": record.decode_started_at,
                            "seconds": round(record.decode_seconds, 3)}
                 if record.decode_started_at else None}
                for record in self.steps
            ],
            "restore_time": self.restore_time.as_dict(),
            "recovery_time": self.recovery_time.as_dict(),
            "data_loss_window_seconds": None if window is None else round(window, 3),
            "revision": self.revision,
            "members": [
                {"name": member.name, "host": member.host,
                 "data_dir": self.members.get(member.name, {}).get(
                     "data_dir", str(member.data_dir)),
                 "moved_aside": list(self.members.get(member.name, {}).get("moved_aside", [])),
                 # where the data dir from before the disaster went (None: there was none)
                 "original": self.members.get(member.name, {}).get("original")}
                for member in self.plan.members
            ],
            "files": self.files,
            "warnings": list(self.warnings),
            "targets_missed": self.missed,
            "prerequisites": [check.as_dict() for check in self.prerequisites],
            "error": None if self.failure is None else {
                "message": getattr(self.failure, "message", str(self.failure)),
                "hint": getattr(self.failure, "hint", None),
            },
            "resume_at": None if self.resume_at is None else {
                "step": NUMBERS[self.resume_at], "name": self.resume_at,
            },
        }


def build_report(
    config: Config, plan: Plan, state: RecoveryState, ran: dict[str, StepRecord], *,
    dry_run: bool = False, prerequisites: list[Prerequisite] | None = None,
    failure: BaseException | None = None,
) -> RecoveryReport:
    """The report of a run from the state (what every run so far decided and finished) and
    the steps this run ran (a failed one included)."""
    steps = []
    for name in STEP_NAMES:
        if name in ran:
            steps.append(ran[name])
        elif name in state.steps:
            done = state.steps[name]
            steps.append(dataclasses.replace(done, verdict=RESUMED))
        else:
            steps.append(StepRecord(name, "", "", 0.0, NOT_RUN, ""))
    return RecoveryReport(
        plan=plan,
        state_path=state.path,
        dry_run=dry_run,
        steps=steps,
        restore_time=TargetCheck(_since_restore(state, "start"), plan.restore_target(config)),
        recovery_time=TargetCheck(
            _since_restore(state, "controllers"), plan.recovery_target(config)
        ),
        backup_id=state.backup_id,
        backup_created_at=state.backup_created_at,
        store=state.store,
        fallbacks=list(state.fallbacks),
        declared_at=None if dry_run else state.declared_at,
        point=state.point,
        revision=state.revision,
        members=state.members,
        files=state.files,
        warnings=list(state.warnings),
        prerequisites=prerequisites or [],
        completed=state.completed_at is not None,
        failure=failure,
        resume_at=None if dry_run or state.completed_at else state.next_step,
    )


def _since_restore(state: RecoveryState, last: str) -> float | None:
    """Wall-clock seconds from step 1's first decode to the end of step `last`."""
    record = state.steps.get(last)
    if record is None or state.restore_started_at is None:
        return None
    return seconds_between(state.restore_started_at, record.ended_at)

