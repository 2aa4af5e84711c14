"""The state of a recovery in progress, so that a rerun after an interruption resumes.

Written atomically (temporary file, fsync, rename) after each step and whenever something a
resume must reuse is decided: the plan's fingerprint (what finished steps depend on: the
backup, the point in time (the plan's, or dr run's flags), the source, the members, the files;
a plan that changed any of it is refused, naming what changed, while its steps, targets and
comments may be edited between runs), when the
disaster was declared (the first run's start), the backup chosen (a resume restores the same
one, not a newer `latest`), the point in time planned from it (a resume replays to the same
revision, not to a newer newest journaled point), the cluster token, the revision after the
restore, and each finished step. A completed recovery is never run again: that would restore
over a recovered cluster.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdops.errors import ConfigError, UsageError
from etcdops.recovery.plan import Plan
from etcdops.stores.local import AtomicFile

STATE_VERSION = 2  # 2: the plan's fingerprint instead of its file's sha256
# the stop step, then the seed's five: the order of a run and of its report
STEP_NAMES = ("stop", "restore", "start", "nodes", "pods", "controllers")


@dataclass
class StepRecord:
    """One step as it ran: when, how long, its verdict and what it saw."""

    name: str
    started_at: str  # UTC, ISO 8601
    ended_at: str
    seconds: float
    verdict: str  # ok | failed | timed out | skipped (resumed: done before)
    detail: str
    # step 1 only: the backup's download and decode, which runs before the stop step (so that
    # a backup that fails stops the recovery with the control plane untouched)
    decode_started_at: str = ""
    decode_seconds: float = 0.0


@dataclass
class RecoveryState:
    """What a recovery has decided and done so far."""

    path: Path
    plan_fingerprint: dict[str, Any]  # Plan.fingerprint() when the recovery began
    declared_at: str  # the first run's start: the data-loss window is the backup's age then
    token: str
    backup_id: str | None = None
    backup_created_at: str | None = None
    store: str | None = None  # the store the backup was read from, once it was
    fallbacks: list[str] = field(default_factory=list)
    revision: dict[str, Any] | None = None  # the revision plan and the revision after restore
    # the point in time restored (recovery.point.planned_record), when the journal is replayed
    # or a point was asked for; None: the backup alone
    point: dict[str, Any] | None = None
    restore_started_at: str | None = None  # step 1's first start: the targets count from it
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> where, aside
    files: dict[str, Any] | None = None  # the included files put back, once they are
    # finished steps only (ok, or timed out): a rerun goes past them; a failed one is redone
    steps: dict[str, StepRecord] = field(default_factory=dict)
    completed_at: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def next_step(self) -> str | None:
        """The first step not finished: where a rerun resumes."""
        return next((name for name in STEP_NAMES if name not in self.steps), None)

    @property
    def revision_after(self) -> int | None:
        """The revision the restored cluster started from: later writes are above it."""
        return None if self.revision is None else self.revision.get("after_restore")

    def finish(self, record: StepRecord) -> None:
        """Keep a finished step and save."""
        self.steps[record.name] = record
        if self.next_step is None:
            self.completed_at = now_iso()
        self.save()

    def save(self) -> None:
        """Write the state atomically: a crash leaves the previous state or this one."""
        document = {"version": STATE_VERSION} | {
            key: value for key, value in asdict(self).items() if key != "path"
        }
        with AtomicFile(self.path, mode=0o600) as target:
            target.write((json.dumps(document, indent=2, default=str) + "\n").encode())


def now_iso() -> str:
    """The wall clock in UTC, as the state and the report write it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def seconds_between(start: str, end: str) -> float:
    """Seconds from one ISO time to another (an interruption's gap included)."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def open_state(path: Path, plan: Plan, cluster: str) -> RecoveryState:
    """The state to run with: the one at path when a run was interrupted, else a new one (not
    written until the run saves it). Refuses a plan changed since, and a completed run."""
    existing = read_state(path, plan)
    if existing is not None:
        return existing
    return RecoveryState(
        path=path, plan_fingerprint=plan.fingerprint(), declared_at=now_iso(),
        token=f"{cluster}-recovery-{secrets.token_hex(4)}",
    )


def read_state(path: Path, plan: Plan) -> RecoveryState | None:
    """The state a rerun resumes from, or None when there is none; a plan changed since, or a
    recovery that completed, is refused."""
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"state file {path} is unreadable: {exc}",
            f"fix or remove {path} (removing it starts a new recovery from step 1)",
        ) from exc
    try:
        if not isinstance(document, dict):
            raise ValueError(f"a JSON {type(document).__name__}, not an object")
        if document.pop("version", None) != STATE_VERSION:
            raise ValueError(f"not version {STATE_VERSION}")
        document["steps"] = {
            name: StepRecord(**record) for name, record in document["steps"].items()
        }
        state = RecoveryState(path=path, **document)
        if not isinstance(state.plan_fingerprint, dict):
            raise ValueError("plan_fingerprint is not an object")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"state file {path} is not a recovery state: {exc}",
            f"remove {path} to start a new recovery, or point --state at the right file",
        ) from exc
    changed = plan_changes(state.plan_fingerprint, plan.fingerprint())
    if changed:
        raise ConfigError(
            f"the plan {plan.path} changed since the recovery recorded in {path} began "
            f"({', '.join(state.steps) or 'no step'} done): {'; '.join(changed)}",
            "put those keys (or dr run's --at, --revision, --allow-gap) back as they were to "
            "resume (the steps, targets and comments may change), or remove "
            f"{path} to start a new recovery from step 1",
        )
    if state.completed_at is not None:
        raise UsageError(
            f"the recovery of {plan.path} already completed at {state.completed_at}",
            f"remove {path} to run a new recovery: it restores over the cluster that runs now",
        )
    return state


def plan_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two plan fingerprints, in words ('backup', 'members[1] (etcd-2)
    data_dir', ...); empty when a resume may go on."""
    changes = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if key == "members" and isinstance(old, list) and isinstance(new, list) \
                and len(old) == len(new) and all(isinstance(m, dict) for m in old):
            for index, (was, member) in enumerate(zip(old, new, strict=True)):
                fields = [name for name in member if was.get(name) != member[name]]
                if fields:
                    changes.append(f"members[{index}] ({was.get('name')}) {', '.join(fields)} "
                                   f"was {', '.join(repr(was.get(name)) for name in fields)}")
        else:
            changes.append(f"{key} was {_shown(old)}, now {_shown(new)}")
    return changes


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "allow_gap" in value:  # the point in time
        named = [f"{key} {value[key]}" for key in ("at", "revision") if value.get(key)]
        gap = ["allow_gap"] if value["allow_gap"] else []
        return " with ".join([", ".join(named) or "the newest journaled point", *gap])
    if value is None:
        return "none"
    if isinstance(value, list):  # members: their names say enough
        return "[" + ", ".join(str(m.get("name")) if isinstance(m, dict) else repr(m)
                               for m in value) + "]"
    return repr(value)
