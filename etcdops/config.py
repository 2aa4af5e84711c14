"""Configuration: etcdops.toml, then environment variables, then command-line flags.

Precedence, lowest first: built-in defaults, the TOML file, the etcdctl variables operators
already export (ETCDCTL_ENDPOINTS, ...), ETCDOPS_<SECTION>_<KEY> variables, flags. Every error
names the key, where it came from (file and line, or variable) and how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from etcdops.errors import ConfigError
from etcdops.units import parse_duration, parse_size

DEFAULT_PATHS = (Path("etcdops.toml"), Path("/etc/etcdops/etcdops.toml"))


def _opt(
    kind: str,
    default: Any = None,
    *,
    secret: bool = False,
    required: bool = False,
    within: tuple[Any, Any] | None = None,
    why: str | None = None,
) -> Any:
    # Secrets stay out of repr() so that a logged or printed config never shows them.
    metadata: dict[str, Any] = {"kind": kind, "required": required}
    if within is not None:
        # bounds are written the way an operator writes the value, and shown so in errors;
        # a missing upper bound means the setting has no ceiling of its own
        low, high = within
        parse = {"int": int, "duration": parse_duration, "size": parse_size}[kind]
        metadata["range"] = (parse(low), None if high is None else parse(high))
        metadata["range_text"] = f"{low} to {high}" if high is not None else f"{low} or more"
        metadata["why"] = why
    return field(default=default, repr=not secret, metadata=metadata)


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
    dial_timeout: float = _opt("duration", 5.0, within=("10ms", "10m"))
    command_timeout: float = _opt("duration", 30.0, within=("10ms", "1h"))
    snapshot_timeout: float = _opt("duration", 3600.0, within=("1s", "7d"))
    etcdutl: str | None = _opt("str")
    # one per endpoint, in the same order; empty: each member's client URL + /metrics
    metrics_urls: tuple[str, ...] = _opt("list", ())
    # etcd's --quota-backend-bytes; 8 GiB is the seed's limit (a member that reports a lower
    # quota on /metrics is held to its own)
    quota_backend_bytes: int = _opt("size", 8 * 1024**3, within=("1MiB", "1TiB"))

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
    # zstandard also takes 0 (its default, 3) and negative "fast" levels; the manifest records
    # the level, so only the levels that say what they do are accepted
    compression_level: int = _opt("int", 1, within=(1, 22), why="zstd's levels")


@dataclass(frozen=True)
class S3Location:
    """One bucket in one region; credentials come from the standard AWS chain."""

    bucket: str = _opt("bucket", required=True)
    region: str | None = _opt("region")
    prefix: str = _opt("prefix", "")
    endpoint_url: str | None = _opt("url")
    sse: str | None = _opt("sse")
    kms_key_id: str | None = _opt("str")
    storage_class: str | None = _opt("str")
    # An upload holds (upload_concurrency + 1) parts in memory. Bigger parts mean fewer requests
    # (each costs CPU on both ends); more of them in flight help on a link with a long round trip.
    part_size: int = _opt("size", 10 * 1024**2, within=("5MiB", "5GiB"),
                          why="S3's limits for one part")
    upload_concurrency: int = _opt("int", 2, within=(1, 64),
                                   why="each part in flight is a buffer of part_size in memory")
    # A hung endpoint must end in minutes, not hold the save: each request gives up after
    # connect_timeout / read_timeout, is tried max_attempts times, and the whole of one store's
    # part of a save (upload, check, manifest, copy) after deadline.
    connect_timeout: float = _opt("duration", 10.0, within=("10ms", "10m"))
    read_timeout: float = _opt("duration", 30.0, within=("10ms", "1h"))
    max_attempts: int = _opt("int", 3, within=(1, 20))
    deadline: float = _opt("duration", 1800.0, within=("1s", "7d"))


@dataclass(frozen=True)
class S3Config(S3Location):
    replica: S3Location | None = _section(S3Location)


@dataclass(frozen=True)
class RetentionConfig:
    # prune also removes incomplete objects and unfinished uploads older than keep_within: a
    # shorter window could take the object of a save still running
    keep_within: float = _opt("duration", 24 * 3600.0, within=("1h", "3650d"),
                              why="it must outlast a save in progress")
    keep_min: int = _opt("int", 3, within=(1, None),
                         why="the newest verified backup is always kept, so 0 would mean 1")


@dataclass(frozen=True)
class CompactionConfig:
    # 0s is meaningful: compact all history now, as etcd's guide does to clear a NOSPACE alarm
    retain: float = _opt("duration", 300.0, within=("0s", "30d"))
    prefix: str = _opt("str", "/etcdops/compaction/")
    timeout: float = _opt("duration", 300.0, within=("1s", "1d"))  # --physical takes a while


@dataclass(frozen=True)
class DefragConfig:
    window: str = _opt("str", "02:00-05:00")
    timezone: str = _opt("str", "UTC")
    free_threshold: int = _opt("size", 200 * 1024**2, within=("0", "1TiB"))
    quota_percent: int = _opt("int", 80, within=(1, 100))
    # per member: a multi-GiB db takes minutes
    timeout: float = _opt("duration", 600.0, within=("1s", "1d"))


@dataclass(frozen=True)
class HealthConfig:
    wal_fsync_p99: float = _opt("duration", 0.010, within=("1ms", "1m"))
    backend_commit_p99: float = _opt("duration", 0.050, within=("1ms", "1m"))
    compaction_p99: float | None = _opt("duration", within=("1ms", "1h"))
    db_size_percent: int = _opt("int", 80, within=(1, 100))
    raft_index_lag: int = _opt("int", 5000, within=(1, None))
    # the hourly schedule plus slack for the timer's randomized delay and the save itself
    backup_max_age: float = _opt("duration", 70 * 60.0, within=("1m", "365d"))


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
    # what the caller should tell the operator (this layer never prints)
    warnings: tuple[str, ...] = field(default=(), metadata={"kind": "internal"})


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
_BUCKET = re.compile(r"[A-Za-z0-9.\-_]{1,255}")
_REGION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")


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
    warnings = _apply_environment(raw, env, origin)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        keypath = tuple(dotted.split("."))
        target = raw
        for part in keypath[:-1]:
            target = target.setdefault(part, {})
        target[keypath[-1]] = value
        origin.overrides[keypath] = f"option --{keypath[-1].replace('_', '-')}"
    _inherit_replica(raw, origin)
    config = _build(Config, raw, (), origin)
    if config.s3 is not None and config.s3.replica is not None:
        warnings += _check_replica(config.s3, origin)
    return dataclasses.replace(
        config, source=str(config_path) if config_path else "defaults", warnings=tuple(warnings)
    )


def _variable(keypath: tuple[str, ...]) -> str:
    return "ETCDOPS_" + "_".join(keypath).upper()


def _variables() -> list[str]:
    """The name of every setting's environment variable."""
    names = [_variable(("cluster",))]
    for section, cls in _SECTIONS.items():
        for spec in dataclasses.fields(cls):
            if spec.metadata.get("kind") == "section":
                names += [_variable((section, spec.name, f.name))
                          for f in dataclasses.fields(spec.metadata["cls"])]
            else:
                names.append(_variable((section, spec.name)))
    return names


def _nearest(name: str, choices: list[str]) -> str:
    """' did you mean X?' for the choice closest to a mistyped name, or nothing."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _apply_environment(raw: dict[str, Any], env: Mapping[str, str], origin: _Origin) -> list[str]:
    """Put the ETCDCTL_* and ETCDOPS_* variables into raw; the warnings for variables that are
    no setting (a typo there would otherwise change nothing, without a word)."""
    warnings: list[str] = []
    etcd = raw.setdefault("etcd", {})
    if not isinstance(etcd, dict):
        return warnings  # _build reports the wrong type with the file and line
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
                # not ours to reject (a later version's, perhaps), but a typo must not pass
                # unnoticed; an unknown key in a known section is an error, as in the file
                warnings.append(f"${variable} is not a setting" + _nearest(variable, _variables()))
                continue
            keypath = (section, key)
            if section == "s3" and key.startswith("replica_"):
                keypath = ("s3", "replica", key.removeprefix("replica_"))
        target = raw
        for part in keypath[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                return warnings
        target[keypath[-1]] = value
        origin.overrides[keypath] = f"${variable}"
    return sorted(warnings)


# A KMS key belongs to one region, and the replica exists to be in another one; its bucket is
# its own by definition. Everything else (endpoint, prefix, sse, storage class, part size,
# timeouts) describes how this site uses S3, the same for both copies.
_NOT_INHERITED = ("bucket", "region", "kms_key_id")


def _inherit_replica(raw: dict[str, Any], origin: _Origin) -> None:
    """Give [s3.replica] every [s3] key it does not set itself, except _NOT_INHERITED."""
    primary = raw.get("s3")
    replica = primary.get("replica") if isinstance(primary, dict) else None
    if not isinstance(replica, dict):
        return  # no replica, or one _build reports as the wrong type
    for key, value in primary.items():
        if key not in _NOT_INHERITED and key != "replica" and key not in replica:
            replica[key] = value
            origin.overrides[("s3", "replica", key)] = origin.describe(("s3", key))


def _namespace(location: S3Location) -> str:
    """Where a bucket name is unique: the endpoint of an S3-compatible service, or the AWS
    partition, whose bucket names are global (the same name in any region is one bucket)."""
    parts = urlsplit(location.endpoint_url or "")
    host = (parts.hostname or "").lower()
    region = location.region or ""
    if host.endswith(".amazonaws.com.cn") or (not host and region.startswith("cn-")):
        return "aws-cn"
    if not host or host.endswith(".amazonaws.com"):
        return "aws-us-gov" if region.startswith("us-gov-") else "aws"
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return f"{host}:{port}{parts.path.rstrip('/')}"


def _check_replica(s3: S3Config, origin: _Origin) -> list[str]:
    """Refuse a replica that is the primary bucket itself: a copy there survives nothing; warn
    about one in the primary's AWS region, which survives the loss of a bucket but not of the
    region."""
    replica = s3.replica
    assert replica is not None
    namespace = _namespace(s3)
    if replica.bucket != s3.bucket or _namespace(replica) != namespace:
        if namespace.startswith("aws") and replica.region == s3.region:
            region = s3.region or "the AWS default region"
            return [f"s3.replica ({replica.bucket!r}) is in the primary's region, {region}: it "
                    "does not survive a region outage; set [s3.replica] region"]
        return []
    where = s3.endpoint_url or "AWS, where bucket names are global"
    raise ConfigError(
        f"{origin.describe(('s3', 'replica', 'bucket'))}: s3.replica is the primary bucket "
        f"itself ({s3.bucket!r} on {where}): a copy there survives no loss of the bucket or "
        "its region",
        "set [s3.replica] bucket to a bucket in another region (or on another endpoint), "
        "or remove [s3.replica]",
    )


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
        source = origin.describe(keypath)
        if source.startswith("$"):
            hint = source[1:] + " is not a setting" + _nearest(
                source[1:], [_variable(prefix + (k,)) for k in known]
            )
        else:
            hint = "not a setting" + _nearest(unknown[0], list(known))
        raise ConfigError(
            f"{source}: unknown key '{'.'.join(keypath)}'",
            f"{hint} (valid keys in {where}: {', '.join(sorted(known))})",
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
        values[name] = _value(spec, raw[name], keypath, origin)
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


def _value(spec: dataclasses.Field[Any], value: Any, keypath: tuple[str, ...],
           origin: _Origin) -> Any:
    """One setting, converted to its type and checked against its declared range."""
    key, kind = ".".join(keypath), spec.metadata["kind"]
    valid = f"{key} takes {spec.metadata['range_text']}" if "range" in spec.metadata else None
    if valid and spec.metadata["why"]:
        valid += f" ({spec.metadata['why']})"
    try:
        converted = _convert(kind, value)
    except ValueError as exc:
        raise ConfigError(
            f"{origin.describe(keypath)}: invalid value for '{key}': {exc}",
            _fix_for(kind) + (f"; {valid}" if valid else ""),
        ) from exc
    if valid:
        low, high = spec.metadata["range"]
        if converted < low or (high is not None and converted > high):
            raise ConfigError(
                f"{origin.describe(keypath)}: '{key}' = {value!r} is out of range", valid
            )
    return converted


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
    if kind == "bucket":
        # botocore's own check, so that nothing it would take is refused here
        if not isinstance(value, str) or not _BUCKET.fullmatch(value):
            raise ValueError(f"expected a bucket name (letters, digits, '.', '-'), got {value!r}")
        return value
    if kind == "region":
        if not isinstance(value, str) or not _REGION.fullmatch(value):
            raise ValueError(f"expected a region name such as \"us-east-1\", got {value!r}")
        return value
    if kind == "url":
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
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
        "bucket": "write the bucket's name, without s3:// or a prefix (that is 'prefix')",
        "region": "write the region's name, such as \"eu-west-1\"",
        "url": "write the endpoint's URL, such as \"https://s3.example.internal:9000\"",
        "sse": "use \"AES256\" (S3-managed keys) or \"aws:kms\" with kms_key_id",
        "prefix": "write a prefix such as \"etcd/\" (no leading '/', a trailing '/')",
        "int": "write a whole number",
        "duration": "write a duration such as \"30s\", \"5m\" or \"24h\"",
        "size": "write a size such as \"200MiB\" or \"8GB\"",
        "list": "write a list such as [\"a\", \"b\"] (or a comma-separated string in a variable)",
        "path": "write a quoted path",
        "file": "point it at a readable file (check the path and its permissions)",
    }[kind]

