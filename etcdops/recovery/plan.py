"""The recovery plan: the backup (or a point in time), the members, the commands that stop and
start the control plane and the checks of the later steps, as a TOML file.

It is read with the configuration's own machinery (settings.opt, loader.build_table), so a
mistake is a ConfigError naming the key, its file and line, as in etcdops.toml.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from etcdops.config import Config
from etcdops.config.loader import Origin, build_table, parse_toml
from etcdops.config.settings import opt
from etcdops.errors import ConfigError

if TYPE_CHECKING:
    from etcdops.restore.point_plan import PointTarget

SOURCES = ("auto", "local", "primary", "replica")
# step 2 starts etcd and the control plane: on a large database etcd takes a while to open
_STEP_TIMEOUT = 180.0


def _table(cls: type) -> Any:
    """A nested table ([steps.start]); its defaults when the plan leaves it out."""
    return field(default_factory=cls, metadata={"kind": "section", "cls": cls})


@dataclass(frozen=True)
class PlanMember:
    """One member of the restored cluster, and how to reach its host."""

    name: str = opt("str", required=True)
    peer_url: str = opt("url", required=True)
    client_url: str = opt("url", required=True)
    data_dir: Path = opt("path", required=True)
    # a command prefix that runs a command on the member's host ("ssh root@cp-2"); "": this one
    exec: str = opt("text", "")
    # etcdops on that host, as its prefix runs it (with options such as --config, if needed)
    etcdops: str = opt("str", "etcdops")

    @property
    def remote(self) -> bool:
        """Whether the member lives on another host, reached through its prefix."""
        return bool(self.exec.strip())

    @property
    def host(self) -> str:
        """The host in an operator's words: its prefix, or this host."""
        return self.exec.strip() or "this host"


@dataclass(frozen=True)
class Targets:
    # None: the configuration's [dr] restore_target / recovery_target
    restore: float | None = opt("duration", within=("1ms", "1d"))
    recovery: float | None = opt("duration", within=("1ms", "1d"))


@dataclass(frozen=True)
class CommandsStep:
    """The stop step and step 2: commands run with `sh -c` on this host, in order."""

    commands: tuple[str, ...] = opt("strings", ())
    timeout: float = opt("duration", _STEP_TIMEOUT, within=("1s", "1d"))


@dataclass(frozen=True)
class RestoreStep:
    # downloading and decoding the backup, and etcdutl on every member: checked before each
    # member (a local etcdutl runs to its end), and a remote member's restore gets what is left
    timeout: float = opt("duration", 1800.0, within=("1s", "1d"))


@dataclass(frozen=True)
class NodesStep:
    expect: int | None = opt("int", within=(0, None))  # node leases renewed after the restore
    command: str | None = opt("str")
    timeout: float = opt("duration", _STEP_TIMEOUT, within=("1s", "1d"))


@dataclass(frozen=True)
class PodsStep:
    # the fraction of the restored pods that kubelets updated after the restore
    min_updated: float | None = opt("float", within=(0, 1))
    command: str | None = opt("str")
    timeout: float = opt("duration", _STEP_TIMEOUT, within=("1s", "1d"))


@dataclass(frozen=True)
class ControllersStep:
    require_keys: tuple[str, ...] = opt("strings", ())
    command: str | None = opt("str")
    timeout: float = opt("duration", _STEP_TIMEOUT, within=("1s", "1d"))


@dataclass(frozen=True)
class Steps:
    stop: CommandsStep = _table(CommandsStep)
    restore: RestoreStep = _table(RestoreStep)
    start: CommandsStep = _table(CommandsStep)
    nodes: NodesStep = _table(NodesStep)
    pods: PodsStep = _table(PodsStep)
    controllers: ControllersStep = _table(ControllersStep)


@dataclass(frozen=True)
class FilesPlan:
    """Where the backup's included files go back on this host (None: they are not restored)."""

    to: Path | None = opt("path")
    force: bool = opt("bool", False)


@dataclass(frozen=True)
class Plan:
    backup: str = opt("str", "latest")
    source: str = opt("str", "auto")
    # a point in time (with the journal), one of the two; neither: `backup` alone, where
    # "latest" is the newest journaled point (dr run --at/--revision override them)
    at: str | None = opt("str")
    revision: int | None = opt("int", within=(1, None))
    allow_gap: bool = opt("bool", False)  # a hole in the journal: the last point before it
    targets: Targets = _table(Targets)
    members: tuple[PlanMember, ...] = field(
        default=(), metadata={"kind": "tables", "cls": PlanMember, "required": True}
    )
    steps: Steps = _table(Steps)
    files: FilesPlan = _table(FilesPlan)
    path: Path = field(default=Path("plan.toml"), metadata={"kind": "internal"})

    @property
    def store(self) -> str | None:
        """The one store to read, or None: local, primary, then replica."""
        return None if self.source == "auto" else self.source

    @property
    def point(self) -> PointTarget | None:
        """The point in time the plan names (at or revision), or None."""
        from etcdops.restore.point_plan import PointTarget

        if self.at is None and self.revision is None:
            return None
        return PointTarget(revision=self.revision,
                           at=None if self.at is None else datetime.fromisoformat(self.at))

    def with_point(self, point: PointTarget | None, allow_gap: bool) -> Plan:
        """The plan as dr run's flags override it: their point instead of the plan's, if any;
        --allow-gap added to the plan's allow_gap."""
        if point is not None:
            at = None if point.at is None else point.at.isoformat()
            plan = dataclasses.replace(self, at=at, revision=point.revision)
        else:
            plan = self
        return dataclasses.replace(plan, allow_gap=plan.allow_gap or allow_gap)

    @property
    def initial_cluster(self) -> str:
        """--initial-cluster of every member: the same on each."""
        return ",".join(f"{member.name}={member.peer_url}" for member in self.members)

    def fingerprint(self) -> dict[str, Any]:
        """What finished steps depend on: the backup, the point in time, the source, the members
        and where the files went. A resume refuses a plan that changed any of it; the steps, the
        targets and the comments may be edited between runs (a failed command fixed, a timeout
        raised)."""
        point = self.point
        return {
            "backup": self.backup,
            # None without one, as a state written before points were known has it; a moment
            # in UTC, so that one moment written in two zones is the same point
            "point": None if point is None and not self.allow_gap else {
                "at": None if point is None or point.at is None
                else point.at.astimezone(UTC).isoformat(),
                "revision": None if point is None else point.revision,
                "allow_gap": self.allow_gap,
            },
            "source": self.source,
            # a member's `etcdops` is only how etcdops is run there: fixing it changes nothing
            # that was done
            "members": [
                {"name": m.name, "peer_url": m.peer_url, "client_url": m.client_url,
                 "data_dir": str(m.data_dir), "exec": m.exec}
                for m in self.members
            ],
            "files": {"to": None if self.files.to is None else str(self.files.to),
                      "force": self.files.force},
        }

    def restore_target(self, config: Config) -> float:
        """Steps 1-2 must end within this many seconds of step 1's start."""
        return self.targets.restore or config.dr.restore_target

    def recovery_target(self, config: Config) -> float:
        """Steps 1-5 must end within this many seconds of step 1's start."""
        return self.targets.recovery or config.dr.recovery_target


def load_plan(path: Path) -> Plan:
    """Read and check a plan; ConfigError naming the key, file and line of any mistake."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"plan {path} does not exist",
            f"write one with 'etcdops dr plan --plan {path}', then edit it",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read plan {path}: {exc.strerror}", "check its permissions") \
            from exc
    text = data.decode("utf-8", "replace")
    return parse_plan(parse_toml(path, text), Origin(path, text), path)


def _as_written(raw: dict[str, Any]) -> dict[str, Any]:
    """TOML's own date-time (`at = 2026-11-25T09:13:00Z`, unquoted) read as the string form."""
    at = raw.get("at")
    return (raw | {"at": at.isoformat()}) if isinstance(at, datetime) else raw


def parse_plan(raw: dict[str, Any], origin: Origin, path: Path) -> Plan:
    """A plan from parsed TOML: each table checked as the config's are, then the rules that
    span keys (the source, members unique, a check for each of steps 3-5)."""
    plan = build_table(Plan, _as_written(raw), (), origin)
    if plan.source not in SOURCES:
        raise ConfigError(
            f"{origin.describe(('source',))}: invalid value for 'source': {plan.source!r}",
            f"write one of {', '.join(SOURCES)}",
        )
    if not plan.members:
        raise ConfigError(
            f"{origin.describe(('members',))}: the plan has no [[members]]",
            "add a [[members]] table (name, peer_url, client_url, data_dir) for each member",
        )
    _check_members(plan.members, origin)
    _check_steps(plan.steps, origin)
    _check_point(plan, origin)
    return dataclasses.replace(plan, path=path)


def _check_point(plan: Plan, origin: Origin) -> None:
    """`at` is a moment with a zone, and a plan names one point (a moment or a revision)."""
    if plan.at is not None and plan.revision is not None:
        raise ConfigError(
            f"{origin.describe(('revision',))}: the plan names two points in time: revision "
            f"{plan.revision} and at {plan.at!r} ({origin.describe(('at',))})",
            "keep one of them",
        )
    if plan.at is None:
        return
    try:
        moment = datetime.fromisoformat(plan.at)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        why = "is not a time" if moment is None else "has no time zone"
        raise ConfigError(
            f"{origin.describe(('at',))}: invalid value for 'at': {plan.at!r} {why}",
            'write ISO 8601 with a zone, e.g. at = "2026-11-25T09:13:00Z"',
        )


def _check_members(members: tuple[PlanMember, ...], origin: Origin) -> None:
    seen: dict[tuple[str, str], int] = {}
    for index, member in enumerate(members):
        for key in ("peer_url", "client_url"):
            url = getattr(member, key)
            if _port(url) is None:
                raise ConfigError(
                    f"{origin.describe(('members', index, key))}: members[{index}].{key} "
                    f"{url!r} has no port",
                    "write it as http(s)://host:port, e.g. https://10.0.1.11:2380",
                )
        if not member.data_dir.is_absolute():
            raise ConfigError(
                f"{origin.describe(('members', index, 'data_dir'))}: members[{index}].data_dir "
                f"{str(member.data_dir)!r} is not an absolute path",
                "write the data dir as etcd's --data-dir names it, e.g. /var/lib/etcd",
            )
        host = " ".join(member.exec.split())
        unique = {
            "name": member.name,
            "peer_url": _normal_url(member.peer_url),
            "client_url": _normal_url(member.client_url),
            # two members' data dirs can only collide on one host
            "data_dir": f"{host}\0{member.data_dir}",
        }
        for key, value in unique.items():
            other = seen.setdefault((key, value), index)
            if other != index:
                what = f"{key} {getattr(member, key)!s}" + (
                    f" on {member.host}" if key == "data_dir" else ""
                )
                raise ConfigError(
                    f"{origin.describe(('members', index, key))}: duplicate member: {what} is "
                    f"also members[{other}]'s ({members[other].name}, "
                    f"{origin.describe(('members', other, key))})",
                    "each member needs its own name, peer URL, client URL and (on one host) "
                    "data dir",
                )


def _check_steps(steps: Steps, origin: Origin) -> None:
    """Steps 3-5 each need something to wait for, or the report would claim what no one saw."""
    checks = {
        "nodes": (steps.nodes.expect is not None or steps.nodes.command, "expect = N"),
        "pods": (steps.pods.min_updated is not None or steps.pods.command, "min_updated = 0.9"),
        "controllers": (steps.controllers.require_keys or steps.controllers.command,
                        'require_keys = ["/registry/..."]'),
    }
    for name, (given, example) in checks.items():
        if not given:
            raise ConfigError(
                f"{origin.describe(('steps', name))}: [steps.{name}] has no check",
                f"set {example} or command = \"...\" in [steps.{name}] (a command that exits 0 "
                "when the step is done)",
            )
    if steps.nodes.expect == 0 and not steps.nodes.command:
        # no lease to wait for: step 3 would pass having seen nothing
        raise ConfigError(
            f"{origin.describe(('steps', 'nodes', 'expect'))}: [steps.nodes] expect = 0 "
            "checks nothing",
            "set expect to the number of nodes (their leases must be renewed after the "
            "restore), or give command = \"kubectl wait --for=condition=Ready nodes --all\"",
        )


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _normal_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port}"


def default_state_path(plan_path: Path) -> Path:
    """Where a run keeps its progress unless told: beside the plan."""
    return plan_path.with_name(plan_path.name + ".state.json")
