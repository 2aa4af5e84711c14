"""Configuration: etcdops.toml, then environment variables, then command-line flags.

Precedence, lowest first: built-in defaults, the TOML file, the etcdctl variables operators
already export (ETCDCTL_ENDPOINTS, ...), ETCDOPS_<SECTION>_<KEY> variables, flags. Every error
names the key, where it came from (file and line, or variable) and how to fix it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdops.errors import ConfigError
from etcdops.units import parse_duration, parse_size

DEFAULT_PATHS = (Path("etcdops.toml"), Path("/etc/etcdops/etcdops.toml"))


def _opt(kind: str, default: Any = None, *, secret: bool = False, required: bool = False) -> Any:
    # Secrets stay out of repr() so that a logged or printed config never shows them.
    return field(default=default, repr=not secret, metadata={"kind": kind, "required": required})


def _section(cls: type) -> Any:
    """A nested table ([s3.replica]); None when the file does not have it."""
    return field(default=None, metadata={"kind": "section", "cls": cls})


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...] = _opt("list", ("http://127.0.0.1:2379",))
    cacert: Path | None = _opt("file")
    cert: Path | None = _opt("file")
    key: Path | None = _opt("file")
    user: str | None = _opt("str")
    password_file: Path | None = _opt("file")
    password: str | None = _opt("str", secret=True)
    dial_timeout: float = _opt("duration", 5.0)
    command_timeout: float = _opt("duration", 30.0)
    snapshot_timeout: float = _opt("duration", 3600.0)
    etcdutl: str | None = _opt("str")
    # one per endpoint, in the same order; empty: each member's client URL + /metrics
    metrics_urls: tuple[str, ...] = _opt("list", ())
    # etcd's --quota-backend-bytes; 8 GiB is the seed's limit (a member that reports a lower
    # quota on /metrics is held to its own)
    quota_backend_bytes: int = _opt("size", 8 * 1024**3)

    def resolved_password(self) -> str | None:
        """The etcd password, read from its file when one is configured."""
        if self.password is not None:
            return self.password
        if self.password_file is None:
            return None
        return self.password_file.read_text().strip()


@dataclass(frozen=True)
class EncryptionConfig:
    recipients: tuple[str, ...] = _opt("list", ())
    recipients_file: Path | None = _opt("file")
    identity_file: Path | None = _opt("file")


@dataclass(frozen=True)
class LocalConfig:
    dir: Path = _opt("path", Path("/var/lib/etcdops"))
    # Level 1: on 2 cores zstd competes with etcd itself for the CPU, and on Kubernetes objects
    # level 3 compresses no better (measured 7.7x at level 1 vs 7.6x at 3, 40% less CPU).
    compression_level: int = _opt("int", 1)


@dataclass(frozen=True)
class S3Location:
    """One bucket in one region; credentials come from the standard AWS chain."""

    bucket: str = _opt("str", required=True)
    region: str | None = _opt("str")
    prefix: str = _opt("prefix", "")
    endpoint_url: str | None = _opt("str")
    sse: str | None = _opt("sse")
    kms_key_id: str | None = _opt("str")
    storage_class: str | None = _opt("str")
    # An upload holds (upload_concurrency + 1) parts in memory. Bigger parts mean fewer requests
    # (each costs CPU on both ends); more of them in flight help on a link with a long round trip.
    part_size: int = _opt("size", 10 * 1024**2)
    upload_concurrency: int = _opt("int", 2)
    # A hung endpoint must end in minutes, not hold the save: each request gives up after
    # connect_timeout / read_timeout, is tried max_attempts times, and the whole of one store's
    # part of a save (upload, check, manifest, copy) after deadline.
    connect_timeout: float = _opt("duration", 10.0)
    read_timeout: float = _opt("duration", 30.0)
    max_attempts: int = _opt("int", 3)
    deadline: float = _opt("duration", 1800.0)


@dataclass(frozen=True)
class S3Config(S3Location):
    replica: S3Location | None = _section(S3Location)


@dataclass(frozen=True)
class RetentionConfig:
    keep_within: float = _opt("duration", 24 * 3600.0)
    keep_min: int = _opt("int", 3)


@dataclass(frozen=True)
class CompactionConfig:
    retain: float = _opt("duration", 300.0)
    prefix: str = _opt("str", "/etcdops/compaction/")
    timeout: float = _opt("duration", 300.0)  # --physical on a big db takes a while


@dataclass(frozen=True)
class DefragConfig:
    window: str = _opt("str", "02:00-05:00")
    timezone: str = _opt("str", "UTC")
    free_threshold: int = _opt("size", 200 * 1024**2)
    quota_percent: int = _opt("int", 80)
    timeout: float = _opt("duration", 600.0)  # per member: a multi-GiB db takes minutes


@dataclass(frozen=True)
class HealthConfig:
    wal_fsync_p99: float = _opt("duration", 0.010)
    backend_commit_p99: float = _opt("duration", 0.050)
    compaction_p99: float | None = _opt("duration")
    db_size_percent: int = _opt("int", 80)
    raft_index_lag: int = _opt("int", 5000)
    # the hourly schedule plus slack for the timer's randomized delay and the save itself
    backup_max_age: float = _opt("duration", 70 * 60.0)


@dataclass(frozen=True)
class Config:
    cluster: str = _opt("str", "default")
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    s3: S3Config | None = None
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    defrag: DefragConfig = field(default_factory=DefragConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    source: str = field(default="built-in defaults", metadata={"kind": "internal"})


_SECTIONS: dict[str, type] = {
    "etcd": EtcdConfig,
    "encryption": EncryptionConfig,
    "local": LocalConfig,
    "compaction": CompactionConfig,
    "defrag": DefragConfig,
    "health": HealthConfig,
    "s3": S3Config,
    "retention": RetentionConfig,
}
_ETCDCTL_VARIABLES = {
    "ETCDCTL_ENDPOINTS": "endpoints",
    "ETCDCTL_CACERT": "cacert",
    "ETCDCTL_CERT": "cert",
    "ETCDCTL_KEY": "key",
    "ETCDCTL_USER": "user",
    "ETCDCTL_PASSWORD": "password",
}
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class _Origin:
    """Where each value came from, so that an error can point at it."""

    def __init__(self, path: Path | None, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.overrides: dict[tuple[str, ...], str] = {}

    def describe(self, keypath: tuple[str, ...]) -> str:
        if keypath in self.overrides:
            return self.overrides[keypath]
        if self.path is None:
            return "the defaults"
        line = self._line_of(keypath)
        return f"{self.path}:{line}" if line else str(self.path)

    def _line_of(self, keypath: tuple[str, ...]) -> int | None:
        section, key = (keypath[:-1], keypath[-1])
        header = "[" + ".".join(section) + "]" if section else None
        in_section = header is None
        for number, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            if line.startswith("["):
                in_section = line.split("#")[0].strip() == header
                if header is None:
                    break
                continue
            if in_section and re.match(rf"{re.escape(key)}\s*=", line):
                return number
        table = "[" + ".".join(keypath) + "]"  # the keypath may name a table itself
        for number, raw in enumerate(self.lines, start=1):
            if raw.split("#")[0].strip() == table:
                return number
        return None


def find_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: --config, then $ETCDOPS_CONFIG, then the default paths."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(
                f"config file {explicit} does not exist",
                "pass an existing file with --config, or omit --config",
            )
        return explicit
    if env.get("ETCDOPS_CONFIG"):
        path = Path(env["ETCDOPS_CONFIG"])
        if not path.is_file():
            raise ConfigError(
                f"config file {path} (from $ETCDOPS_CONFIG) does not exist",
                "point ETCDOPS_CONFIG at an existing file, or unset it",
            )
        return path
    return next((p for p in DEFAULT_PATHS if p.is_file()), None)


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read, merge and validate the configuration; raises ConfigError naming the bad key."""
    env = os.environ if env is None else env
    config_path = find_config_file(path, env)
    text = ""
    raw: dict[str, Any] = {}
    if config_path is not None:
        try:
            text = config_path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read config file {config_path}: {exc.strerror}",
                "check the path and its permissions",
            ) from exc
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{config_path}: TOML syntax error: {exc}",
                "fix the syntax at that line (strings need quotes, tables need [brackets])",
            ) from exc
    origin = _Origin(config_path, text)
    _apply_environment(raw, env, origin)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        keypath = tuple(dotted.split("."))
        target = raw
        for part in keypath[:-1]:
            target = target.setdefault(part, {})
        target[keypath[-1]] = value
        origin.overrides[keypath] = f"option --{keypath[-1].replace('_', '-')}"
    config = _build(Config, raw, (), origin)
    return dataclasses.replace(config, source=str(config_path) if config_path else "defaults")


def _apply_environment(raw: dict[str, Any], env: Mapping[str, str], origin: _Origin) -> None:
    etcd = raw.setdefault("etcd", {})
    if not isinstance(etcd, dict):
        return  # _build reports the wrong type with the file and line
    for variable, key in _ETCDCTL_VARIABLES.items():
        if env.get(variable):
            value = env[variable]
            if key == "user" and ":" in value:
                # etcdctl accepts --user name:password; keep the password out of user
                value, etcd["password"] = value.split(":", 1)
                origin.overrides[("etcd", "password")] = f"${variable}"
            etcd[key] = value
            origin.overrides[("etcd", key)] = f"${variable}"
    for variable, value in env.items():
        if not variable.startswith("ETCDOPS_") or variable == "ETCDOPS_CONFIG":
            continue
        name = variable[len("ETCDOPS_"):].lower()
        if name == "cluster":
            keypath: tuple[str, ...] = ("cluster",)
        else:
            section, _, key = name.partition("_")
            if section not in _SECTIONS or not key:
                continue  # variables of other tools or later versions are not ours to reject
            keypath = (section, key)
            if section == "s3" and key.startswith("replica_"):
                keypath = ("s3", "replica", key.removeprefix("replica_"))
        target = raw
        for part in keypath[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                return
        target[keypath[-1]] = value
        origin.overrides[keypath] = f"${variable}"


def _build(cls: type, raw: Any, prefix: tuple[str, ...], origin: _Origin) -> Any:
    where = ".".join(prefix) or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{origin.describe(prefix)}: [{where}] must be a table",
            f"write it as a [{where}] section",
        )
    known = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("kind") != "internal"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        keypath = prefix + (unknown[0],)
        raise ConfigError(
            f"{origin.describe(keypath)}: unknown key '{'.'.join(keypath)}'",
            f"valid keys in {where}: {', '.join(sorted(known))}",
        )
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in raw:
            continue
        keypath = prefix + (name,)
        if name in _SECTIONS and not prefix:
            values[name] = _build(_SECTIONS[name], raw[name], keypath, origin)
            continue
        if spec.metadata["kind"] == "section":
            values[name] = _build(spec.metadata["cls"], raw[name], keypath, origin)
            continue
        try:
            values[name] = _convert(spec.metadata["kind"], raw[name])
        except ValueError as exc:
            raise ConfigError(
                f"{origin.describe(keypath)}: invalid value for '{'.'.join(keypath)}': {exc}",
                _fix_for(spec.metadata["kind"]),
            ) from exc
    missing = [n for n, spec in known.items() if spec.metadata.get("required") and n not in values]
    if missing:
        keypath = prefix + (missing[0],)
        raise ConfigError(
            f"{origin.describe(prefix)}: missing required key '{'.'.join(keypath)}'",
            f"add {missing[0]} = \"...\" to [{where}]",
        )
    if not prefix and "cluster" in values and not _CLUSTER_NAME.fullmatch(values["cluster"]):
        raise ConfigError(
            f"{origin.describe(('cluster',))}: invalid cluster name {values['cluster']!r}",
            "use letters, digits, '.', '_' or '-' (it becomes part of every backup's path)",
        )
    return cls(**values)


def _convert(kind: str, value: Any) -> Any:
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a non-empty string, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
    if kind == "sse":
        if value not in ("AES256", "aws:kms"):
            raise ValueError(f"expected \"AES256\" or \"aws:kms\", got {value!r}")
        return value
    if kind == "prefix":
        if not isinstance(value, str) or value.startswith("/") or (value and value[-1] != "/"):
            raise ValueError(f"expected a key prefix ending in '/' (or empty), got {value!r}")
        return value
    if kind == "duration":
        return parse_duration(value)
    if kind == "size":
        return parse_size(value)
    if kind == "list":
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            raise ValueError(f"expected a list of strings, got {value!r}")
        return tuple(items)
    if kind in ("path", "file"):
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path, got {value!r}")
        path = Path(value).expanduser()
        if kind == "file" and not os.access(path, os.R_OK):
            raise ValueError(f"file {path} does not exist or is not readable")
        return path
    raise AssertionError(f"unknown config kind {kind}")


def _fix_for(kind: str) -> str:
    return {
        "str": "write a quoted string",
        "sse": "use \"AES256\" (S3-managed keys) or \"aws:kms\" with kms_key_id",
        "prefix": "write a prefix such as \"etcd/\" (no leading '/', a trailing '/')",
        "int": "write a whole number",
        "duration": "write a duration such as \"30s\", \"5m\" or \"24h\"",
        "size": "write a size such as \"200MiB\" or \"8GB\"",
        "list": "write a list such as [\"a\", \"b\"] (or a comma-separated string in a variable)",
        "path": "write a quoted path",
        "file": "point it at a readable file (check the path and its permissions)",
    }[kind]

