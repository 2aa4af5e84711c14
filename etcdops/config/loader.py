"""Loading the configuration: the file, the environment and the flags merged in order, each
value's origin kept so that an error can point at it, and the rules that span settings."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from etcdops.config.settings import SECTIONS, Config, S3Config, S3Location
from etcdops.config.values import checked_value, key_name, variable_name
from etcdops.errors import ConfigError

DEFAULT_PATHS = (Path("etcdops.toml"), Path("/etc/etcdops/etcdops.toml"))

_ETCDCTL_VARIABLES = {
    "ETCDCTL_ENDPOINTS": "endpoints",
    "ETCDCTL_CACERT": "cacert",
    "ETCDCTL_CERT": "cert",
    "ETCDCTL_KEY": "key",
    "ETCDCTL_USER": "user",
    "ETCDCTL_PASSWORD": "password",
}
# part of every backup's path and of the metrics files' names (etcdops.metrics.textfile): no
# '/', no leading '.', nothing a file name or an object key would need to escape
CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class Origin:
    """Where each value came from, so that an error can point at it."""

    def __init__(self, path: Path | None, text: str, credentials: str | None = None) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.overrides: dict[tuple[str, ...], str] = {}
        # $CREDENTIALS_DIRECTORY, where "credential:NAME" values are (values.credential_file)
        self.credentials = credentials

    def describe(self, keypath: tuple[str | int, ...]) -> str:
        if keypath in self.overrides:
            return self.overrides[keypath]
        if self.path is None:
            return "the defaults"
        line = self._line_of(keypath)
        return f"{self.path}:{line}" if line else str(self.path)

    def _line_of(self, keypath: tuple[str | int, ...]) -> int | None:
        if not keypath:  # the top level: the file as a whole
            return None
        if any(isinstance(part, int) for part in keypath):
            return self._line_in_array(keypath)
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

    def _line_in_array(self, keypath: tuple[str | int, ...]) -> int | None:
        """The line of a key in one entry of an array of tables ([[members]]: the entry's
        index in the keypath), else of that entry's header."""
        at = next(i for i, part in enumerate(keypath) if isinstance(part, int))
        header = "[[" + ".".join(str(part) for part in keypath[:at]) + "]]"
        key = keypath[-1] if len(keypath) > at + 1 else None
        seen, start = -1, None
        for number, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            if line.split("#")[0].strip() == header:
                seen += 1
                if seen == keypath[at]:
                    start = number
                elif start is not None:
                    break
                continue
            if start is None:
                continue
            if line.startswith("["):
                break  # the next table: the key is not in this entry
            if key is not None and re.match(rf"{re.escape(str(key))}\s*=", line):
                return number
        return start


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


def parse_toml(path: Path, text: str) -> dict[str, Any]:
    """A TOML file's tables; a syntax error is a ConfigError naming the file and line (the
    config and a dr plan alike)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: TOML syntax error: {exc}",
            "fix the syntax at that line (strings need quotes, tables need [brackets])",
        ) from exc


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
        raw = parse_toml(config_path, text)
    origin = Origin(config_path, text, env.get("CREDENTIALS_DIRECTORY"))
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
    config = build_table(Config, raw, (), origin)
    if config.s3 is not None and config.s3.replica is not None:
        warnings += _check_replica(config.s3, origin)
    given = isinstance(raw.get("encryption"), dict) and "recipients" in raw["encryption"]
    encryption = dataclasses.replace(
        config.encryption,
        recipients_origin=origin.describe(("encryption", "recipients")) if given else None,
    )
    return dataclasses.replace(
        config, encryption=encryption, source=str(config_path) if config_path else "defaults",
        warnings=tuple(warnings),
    )


def _variables() -> list[str]:
    """The name of every setting's environment variable."""
    names = [variable_name(("cluster",))]
    for section, cls in SECTIONS.items():
        for spec in dataclasses.fields(cls):
            if spec.metadata.get("kind") == "section":
                names += [variable_name((section, spec.name, f.name))
                          for f in dataclasses.fields(spec.metadata["cls"])]
            else:
                names.append(variable_name((section, spec.name)))
    return names


def _nearest(name: str, choices: list[str]) -> str:
    """' did you mean X?' for the choice closest to a mistyped name, or nothing."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _apply_environment(raw: dict[str, Any], env: Mapping[str, str], origin: Origin) -> list[str]:
    """Put the ETCDCTL_* and ETCDOPS_* variables into raw; the warnings for variables that are
    no setting (a typo there would otherwise change nothing, without a word)."""
    warnings: list[str] = []
    etcd = raw.setdefault("etcd", {})
    if not isinstance(etcd, dict):
        return warnings  # build_table reports the wrong type with the file and line
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
        # $ETCDOPS_LOG_FORMAT is the CLI's, read before any configuration (etcdops.cli.logs)
        if not variable.startswith("ETCDOPS_") or variable in ("ETCDOPS_CONFIG",
                                                                "ETCDOPS_LOG_FORMAT"):
            continue
        name = variable[len("ETCDOPS_"):].lower()
        if name == "cluster":
            keypath: tuple[str, ...] = ("cluster",)
        else:
            section, _, key = name.partition("_")
            if section not in SECTIONS or not key:
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


def _inherit_replica(raw: dict[str, Any], origin: Origin) -> None:
    """Give [s3.replica] every [s3] key it does not set itself, except _NOT_INHERITED."""
    primary = raw.get("s3")
    replica = primary.get("replica") if isinstance(primary, dict) else None
    if not isinstance(replica, dict):
        return  # no replica, or one build_table reports as the wrong type
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


def _check_replica(s3: S3Config, origin: Origin) -> list[str]:
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


def build_table(cls: type, raw: Any, prefix: tuple[str | int, ...], origin: Origin) -> Any:
    """One table's dataclass from its TOML (fields declared with settings.opt, nested tables
    with the kinds "section" and "tables"): an unknown key, a wrong type, a value out of range
    or a missing required key is a ConfigError naming the key and its file and line."""
    where = key_name(prefix) or "the top level"
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
                source[1:], [variable_name(prefix + (k,)) for k in known]
            )
        else:
            hint = "not a setting" + _nearest(unknown[0], list(known))
        raise ConfigError(
            f"{source}: unknown key '{key_name(keypath)}'",
            f"{hint} (valid keys in {where}: {', '.join(sorted(known))})",
        )
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in raw:
            continue
        keypath = prefix + (name,)
        if cls is Config and name in SECTIONS:
            values[name] = build_table(SECTIONS[name], raw[name], keypath, origin)
            continue
        if spec.metadata["kind"] == "section":
            values[name] = build_table(spec.metadata["cls"], raw[name], keypath, origin)
            continue
        if spec.metadata["kind"] == "tables":
            values[name] = _build_array(spec.metadata["cls"], raw[name], keypath, origin)
            continue
        values[name] = checked_value(spec, raw[name], keypath, origin)
    missing = [n for n, spec in known.items() if spec.metadata.get("required") and n not in values]
    if missing:
        keypath = prefix + (missing[0],)
        raise ConfigError(
            f"{origin.describe(prefix)}: missing required key '{key_name(keypath)}'",
            f"add {missing[0]} = \"...\" to [{where}]",
        )
    if cls is Config and "cluster" in values and not CLUSTER_NAME.fullmatch(values["cluster"]):
        raise ConfigError(
            f"{origin.describe(('cluster',))}: invalid cluster name {values['cluster']!r}",
            "use letters, digits, '.', '_' or '-' (it becomes part of every backup's path)",
        )
    return cls(**values)


def _build_array(cls: type, raw: Any, keypath: tuple[str | int, ...], origin: Origin) -> Any:
    """An array of tables ([[members]]), each entry built as a table of its own."""
    if not isinstance(raw, list):
        raise ConfigError(
            f"{origin.describe(keypath)}: '{key_name(keypath)}' must be an array of tables",
            f"write each entry as a [[{key_name(keypath)}]] table",
        )
    return tuple(
        build_table(cls, entry, keypath + (index,), origin) for index, entry in enumerate(raw)
    )
