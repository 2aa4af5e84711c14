"""Log lines on stderr: plain messages for a person at a terminal, one JSON object per line for
journald and log shippers.

$ETCDOPS_LOG_FORMAT chooses: text, json, or auto (the default: json when stderr is not a
terminal). A JSON line has timestamp, level, logger and message, then the fields of the run
(cluster, command, a backup id: etcdops.report's scope) and of the call (a duration, an error's
hint and exit code).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from etcdops.errors import ConfigError
from etcdops.report import FIELDS_ATTRIBUTE, scope_fields

FORMAT_VARIABLE = "ETCDOPS_LOG_FORMAT"
FORMATS = ("auto", "text", "json")


def chosen_format(env: Mapping[str, str] | None = None, stream: IO[str] | None = None) -> str:
    """'text' or 'json': what $ETCDOPS_LOG_FORMAT asks for, auto deciding by the stream."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    value = env.get(FORMAT_VARIABLE, "").strip().lower() or "auto"
    if value not in FORMATS:
        raise ConfigError(
            f"${FORMAT_VARIABLE} is {value!r}", f"set it to one of {', '.join(FORMATS)}"
        )
    if value == "auto":
        return "text" if _is_terminal(stream) else "json"
    return value


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream is no terminal
        return False


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes in a field, not after it)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        document: dict[str, Any] = {
            "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(scope_fields())
        document.update(getattr(record, FIELDS_ATTRIBUTE, {}))
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The message, and the hint of an error logged with one (as `error: ... — hint` reads)."""

    def format(self, record: logging.LogRecord) -> str:
        hint = getattr(record, FIELDS_ATTRIBUTE, {}).get("hint")
        text = record.getMessage() + (f" — {hint}" if hint else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class LibraryTextFormatter(logging.Formatter):
    """Another library's record, or a Python warning, in text: `warning: logger: message`, as
    etcdops' own warnings read."""

    def format(self, record: logging.LogRecord) -> str:
        # a Python warning's message already says where it comes from (file:line: Category)
        source = "" if record.name == "py.warnings" else f"{record.name}: "
        text = f"{record.levelname.lower()}: {source}{record.getMessage().rstrip()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a record comes, as logging's lastResort is
    (a stream bound at setup outlives a test's capture, or a daemon's reopened stderr)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr


def setup_logging(verbosity: int, log_format: str) -> None:
    """The etcdops loggers to stderr at the level -q/-v ask for, in the format chosen; other
    libraries' warnings and Python's warnings in that format too."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    json_lines = log_format == "json"
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    ours = logging.getLogger("etcdops")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    # botocore, urllib3 and grpc give their loggers a NullHandler, so their warnings were
    # dropped, and anything else's reached stderr through lastResort as bare text (Python's
    # warnings as several lines): one handler at the root, at WARNING whatever -v says (their
    # debug output is not ours to show), replacing only the one a previous setup put there
    libraries = _Stderr(logging.WARNING)
    libraries.setFormatter(JsonFormatter() if json_lines else LibraryTextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Stderr)] + [libraries]
    logging.captureWarnings(True)
