"""The stop step and steps 2-5 of a recovery: the plan's commands, and waiting for the restored
cluster to serve and for the cluster around it to come back.

Waits poll a condition every POLL_INTERVAL until it holds or the step's deadline passes. The
key checks read keys only, a page at a time (EtcdSession.key_revisions), never values: a
key's mod_revision above the revision the cluster was restored at means someone wrote it since.
A check of steps 3-5 that is not met in time is a verdict ("timed out"), not an error: the
recovery goes on and the report says which target it cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from etcdops.errors import EtcdopsError, EtcdUnavailableError, ToolError
from etcdops.etcd.session import EtcdSession
from etcdops.recovery.hosts import Host
from etcdops.recovery.plan import ControllersStep, NodesStep, Plan, PodsStep
from etcdops.report import Reporter
from etcdops.units import format_duration

POLL_INTERVAL = 0.25
# a check command (`kubectl wait ...`) that fails is tried again after this long
COMMAND_RETRY = 1.0
NODE_LEASES = b"/registry/leases/kube-node-lease/"
PODS = b"/registry/pods/"
# a linearizable read of a key no one writes: its header carries the cluster's revision
_READ_PROBE = b"/etcdops/recovery/read-check"


@dataclass(frozen=True)
class Outcome:
    """How a step ended: ok or timed out, and what it saw."""

    verdict: str
    detail: str


def local_host(reporter: Reporter) -> Host:
    """This host, where the plan's commands run (a command may itself be `ssh cp-2 ...`)."""
    return Host("this host", "", reporter=reporter)


def run_commands(
    commands: Sequence[str], deadline: float, reporter: Reporter, what: str
) -> str:
    """Run each command with `sh -c` on this host, in order, within the deadline; ToolError
    naming the command when one exits non-zero or runs out of time."""
    if not commands:
        return "no commands in the plan"
    host = local_host(reporter)
    for command in commands:
        reporter.event(f"{what}: {command}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ToolError(
                f"{what}: no time left for `{command}` within the step's timeout",
                "give the step a longer timeout in the plan",
            )
        completed = host.run(["sh", "-c", command], timeout=remaining)
        if completed.returncode != 0:
            raise ToolError(
                f"{what}: `{command}` exited {completed.returncode}: {completed.last_line}",
                "fix what it reports (or the command in the plan), then run dr run again",
            )
    return f"ran {len(commands)} command{'s' if len(commands) != 1 else ''}"


def wait_for_cluster(
    session: EtcdSession, plan: Plan, revision: int | None, deadline: float, timeout: float
) -> str:
    """Step 2's wait: every member answers, all agree on one leader and one cluster, and a read
    sees the restored revision or later. EtcdUnavailableError with the last reason if not."""
    last = "no member answered yet"
    while True:
        try:
            problem, detail = _cluster_state(session, plan, revision)
        except EtcdopsError as exc:
            problem, detail = exc.message, ""
        if problem is None:
            return detail
        last = problem
        if time.monotonic() >= deadline:
            raise EtcdUnavailableError(
                f"the restored cluster was not healthy within {format_duration(timeout)}: {last}",
                "look at each member's etcd log; fix what it says and run dr run again (it "
                "resumes at step 2)",
            )
        time.sleep(POLL_INTERVAL)


def _cluster_state(
    session: EtcdSession, plan: Plan, revision: int | None
) -> tuple[str | None, str]:
    statuses = session.statuses()
    leaders = {status.leader_id for status in statuses}
    if 0 in leaders:
        return "a member has no leader yet", ""
    if len(leaders) > 1:
        return "the members do not agree on a leader yet", ""
    clusters = {status.cluster_id for status in statuses}
    if len(clusters) > 1:
        return (
            "the members belong to different clusters: one still runs on an old data dir", ""
        )
    members = session.members()
    if len(members) != len(plan.members):
        return f"the cluster has {len(members)} members, the plan {len(plan.members)}", ""
    _, seen = session.get_prefix(_READ_PROBE)
    if revision is not None and seen < revision:
        return f"reads see revision {seen}, below the restored {revision}", ""
    leader = next(
        (m.name for m in members if m.id == next(iter(leaders))), f"{next(iter(leaders)):x}"
    )
    return None, (
        f"{len(statuses)} members healthy, leader {leader}, reads at revision {seen}"
        + (f" (restored at {revision})" if revision is not None else "")
    )


Check = Callable[[float], tuple[bool, str]]  # deadline -> (met, what it saw)


def wait_for(checks: Sequence[Check], deadline: float, timeout: float) -> Outcome:
    """Poll every check until all are met ("ok") or the deadline passes ("timed out")."""
    seen: dict[int, str] = {}
    pending = list(range(len(checks)))
    while True:
        for index in list(pending):
            try:
                met, seen[index] = checks[index](deadline)
            except EtcdopsError as exc:
                met, seen[index] = False, exc.message
            if met:
                pending.remove(index)
        detail = "; ".join(seen[index] for index in sorted(seen))
        if not pending:
            return Outcome("ok", detail)
        if time.monotonic() >= deadline:
            return Outcome("timed out", f"not within {format_duration(timeout)}: {detail}")
        time.sleep(POLL_INTERVAL)


def node_checks(
    step: NodesStep, session: EtcdSession, revision: int, reporter: Reporter
) -> list[Check]:
    """Step 3: enough node leases renewed since the restore, and/or the plan's command."""
    checks: list[Check] = []
    if step.expect is not None:
        expect = step.expect

        def leases(_deadline: float) -> tuple[bool, str]:
            renewed = sum(
                1 for page in session.key_revisions(NODE_LEASES) for key in page
                if key.mod_revision > revision
            )
            return renewed >= expect, (
                f"{renewed} node lease{'s' if renewed != 1 else ''} renewed since the restore "
                f"(expected {expect})"
            )

        checks.append(leases)
    if step.command:
        checks.append(CommandCheck(step.command, reporter))
    return checks


def pod_checks(
    step: PodsStep, session: EtcdSession, revision: int, reporter: Reporter
) -> list[Check]:
    """Step 4: the share of restored pods that kubelets updated since, and/or the command."""
    checks: list[Check] = []
    if step.min_updated is not None:
        wanted = step.min_updated

        def pods(_deadline: float) -> tuple[bool, str]:
            restored = updated = 0
            for page in session.key_revisions(PODS):
                for key in page:
                    if key.create_revision <= revision:  # in the restored data, still there
                        restored += 1
                        updated += key.mod_revision > revision
            if restored == 0:
                return True, "no pods in the restored data"
            share = updated / restored
            return share >= wanted, (
                f"{updated} of {restored} restored pods updated since the restore "
                f"({share:.0%}, {wanted:.0%} wanted)"
            )

        checks.append(pods)
    if step.command:
        checks.append(CommandCheck(step.command, reporter))
    return checks


def controller_checks(
    step: ControllersStep, session: EtcdSession, reporter: Reporter
) -> list[Check]:
    """Step 5: every required key exists again, and/or the plan's command."""
    checks: list[Check] = []
    if step.require_keys:
        wanted = [key.encode() for key in step.require_keys]

        def keys(_deadline: float) -> tuple[bool, str]:
            missing = [key for key in wanted if not _exists(session, key)]
            found = len(wanted) - len(missing)
            detail = f"{found} of {len(wanted)} required keys exist"
            if missing:
                detail += f" (missing {', '.join(k.decode(errors='replace') for k in missing)})"
            return not missing, detail

        checks.append(keys)
    if step.command:
        checks.append(CommandCheck(step.command, reporter))
    return checks


def _exists(session: EtcdSession, key: bytes) -> bool:
    return any(entry.key == key for page in session.key_revisions(key) for entry in page)


class CommandCheck:
    """A check met once `sh -c command` exits 0 on this host; each try gets the time left
    (`kubectl wait` waits by itself), a failed one is tried again after COMMAND_RETRY."""

    def __init__(self, command: str, reporter: Reporter) -> None:
        self.command = command
        self.host = local_host(reporter)
        self.last = "not run yet"
        self.next_try = 0.0

    def __call__(self, deadline: float) -> tuple[bool, str]:
        now = time.monotonic()
        if now < self.next_try:
            return False, self.last
        try:
            completed = self.host.run(["sh", "-c", self.command],
                                      timeout=max(1.0, deadline - now))
        except ToolError as exc:  # ran out of time, or could not run at all
            self.last = f"`{self.command}`: {exc.message}"
            return False, self.last
        if completed.returncode == 0:
            return True, f"`{self.command}` succeeded"
        self.next_try = time.monotonic() + COMMAND_RETRY
        self.last = f"`{self.command}` exited {completed.returncode}: {completed.last_line}"
        return False, self.last
