"""One setting's value: converted to the kind its field declares and checked against its
range, or a ConfigError naming the key, where the value came from and how to write it."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from etcdops.errors import ConfigError
from etcdops.units import parse_duration, parse_size

if TYPE_CHECKING:
    from etcdops.config.loader import Origin

# A file setting written "credential:NAME" is the systemd credential NAME (LoadCredential= in the
# units): systemd copies the secret to $CREDENTIALS_DIRECTORY, which only the service's user can
# read, so that the TLS key, the password and the age identity need no readable path on disk.
CREDENTIAL = "credential:"
_BUCKET = re.compile(r"[A-Za-z0-9.\-_]{1,255}")
_REGION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")


def key_name(keypath: tuple[str | int, ...]) -> str:
    """A key's full name as errors show it; an entry of an array of tables by its index, from
    0 (members[1].peer_url)."""
    text = ""
    for part in keypath:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def variable_name(keypath: tuple[str | int, ...]) -> str:
    """The environment variable that sets a setting (ETCDOPS_S3_REPLICA_BUCKET)."""
    return "ETCDOPS_" + "_".join(str(part) for part in keypath).upper()


def checked_value(spec: dataclasses.Field[Any], value: Any, keypath: tuple[str | int, ...],
                  origin: Origin) -> Any:
    """One setting, converted to its type and checked against its declared range; an error
    never shows a secret's value (only its type)."""
    key, kind = key_name(keypath), spec.metadata["kind"]
    secret = spec.metadata.get("secret", False)
    if kind == "file" and isinstance(value, str) and value.startswith(CREDENTIAL):
        return credential_file(value, keypath, origin)
    valid = f"{key} takes {spec.metadata['range_text']}" if "range" in spec.metadata else None
    if valid and spec.metadata["why"]:
        valid += f" ({spec.metadata['why']})"
    try:
        converted = _convert(kind, value, secret)
    except ValueError as exc:
        raise ConfigError(
            f"{origin.describe(keypath)}: invalid value for '{key}': {exc}",
            _fix_for(kind) + (f"; {valid}" if valid else ""),
        ) from exc
    if valid:
        low, high = spec.metadata["range"]
        if converted < low or (high is not None and converted > high):
            raise ConfigError(
                f"{origin.describe(keypath)}: '{key}' = {_shown(value, secret)} is out of range",
                valid,
            )
    return converted


def credential_file(value: str, keypath: tuple[str | int, ...], origin: Origin) -> Path:
    """The file of a "credential:NAME" setting in $CREDENTIALS_DIRECTORY; a ConfigError when
    it is not run under a unit that passes credentials, or the unit did not pass this one."""
    key, name = key_name(keypath), value.removeprefix(CREDENTIAL)
    where = f"{origin.describe(keypath)}: '{key}' = {value!r}"
    if not name or "/" in name or name in (".", ".."):  # systemd's rule: a file name
        raise ConfigError(
            f"{where} does not name a credential",
            "write credential:NAME with the name the unit's LoadCredential= gives it, such as "
            "credential:etcd-client.key (a file name: no '/')",
        )
    directory = origin.credentials
    if not directory:
        raise ConfigError(
            f"{where} is a systemd credential, but $CREDENTIALS_DIRECTORY is not set",
            "run it under its unit (systemctl start etcdops-...@CLUSTER.service), or give a "
            f"path for this run: {variable_name(keypath)}=/path/to/the/file",
        )
    path = Path(directory) / name
    if not os.access(path, os.R_OK):
        raise ConfigError(
            f"{where}: no credential {name} in $CREDENTIALS_DIRECTORY ({directory})",
            "the unit did not pass it: put its source where the unit's LoadCredential= "
            f"{name}:... looks (see runbooks/install-control-plane.md), then restart the unit",
        )
    return path


def _shown(value: Any, secret: bool) -> str:
    """How an error shows a value: a secret by its TOML type alone, anything else as written."""
    if not secret:
        return repr(value)
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), "value")
    return f"<redacted {kind}>"


def _convert(kind: str, value: Any, secret: bool = False) -> Any:
    text = _shown(value, secret)
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a non-empty string, got {text}")
        return value
    if kind == "user":
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a non-empty string, got {text}")
        if ":" in value:
            # etcdctl's name:password form: the value is not shown, as it holds the password
            raise ValueError("it holds a ':', as etcdctl's name:password form does (not shown: "
                             "it would show the password)")
        return value
    if kind == "text":  # a string that may be empty (an empty command prefix: none)
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {text}")
        return value
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {text}")
        return value
    if kind == "float":
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"expected a number, got {text}")
        return float(value)
    if kind == "strings":  # a list that is never split at commas: shell commands, keys
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"expected a list of non-empty strings, got {text}")
        return tuple(value)
    if kind == "int":
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {text}")
        return value
    if kind == "bucket":
        # botocore's own check, so that nothing it would take is refused here
        if not isinstance(value, str) or not _BUCKET.fullmatch(value):
            raise ValueError(f"expected a bucket name (letters, digits, '.', '-'), got {text}")
        return value
    if kind == "region":
        if not isinstance(value, str) or not _REGION.fullmatch(value):
            raise ValueError(f"expected a region name such as \"us-east-1\", got {text}")
        return value
    if kind == "url":
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {text}")
        return value
    if kind == "sse":
        if value not in ("AES256", "aws:kms"):
            raise ValueError(f"expected \"AES256\" or \"aws:kms\", got {text}")
        return value
    if kind == "prefix":
        if not isinstance(value, str) or value.startswith("/") or (value and value[-1] != "/"):
            raise ValueError(f"expected a key prefix ending in '/' (or empty), got {text}")
        return value
    if kind in ("duration", "size"):
        try:
            return (parse_duration if kind == "duration" else parse_size)(value)
        except ValueError:
            if secret:  # the parser's own message quotes the value
                raise ValueError(f"expected a {kind}, got {text}") from None
            raise
    if kind == "list":
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            raise ValueError(f"expected a list of strings, got {text}")
        return tuple(items)
    if kind in ("path", "file"):
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path, got {text}")
        path = Path(value).expanduser()
        if kind == "file" and not os.access(path, os.R_OK):
            where = path if not secret else text
            raise ValueError(f"file {where} does not exist or is not readable")
        return path
    raise AssertionError(f"unknown config kind {kind}")


def _fix_for(kind: str) -> str:
    return {
        "str": "write a quoted string",
        "user": "write the etcd user's name alone, and its password in password_file (or "
                "$ETCDOPS_ETCD_PASSWORD)",
        "text": "write a quoted string (\"\" for none)",
        "bool": "write true or false",
        "float": "write a number such as 0.9",
        "strings": "write a list of quoted strings such as [\"a\", \"b\"]",
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
