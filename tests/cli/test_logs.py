"""Logs: the format chosen by $ETCDOPS_LOG_FORMAT, JSON lines and their fields, and no secret
in any log line or child process's argv over a full run with TLS client certificates and a
password (save to local and S3, list, prune, verify --drill)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from etcdops.cli.logs import JsonFormatter, TextFormatter, chosen_format
from etcdops.cli.main import app
from etcdops.errors import ConfigError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalCluster, TLSFiles
from etcdops.report import fields, log_scope, note
from tests.fixtures.backups import AgeIdentity
from tests.fixtures.s3 import S3Env


def test_auto_is_json_off_a_terminal_and_text_on_one() -> None:
    leader, follower = os.openpty()
    with open(follower, "w") as terminal, open(os.devnull, "w") as pipe:
        assert chosen_format({}, terminal) == "text"
        assert chosen_format({}, pipe) == "json"
        assert chosen_format({"ETCDOPS_LOG_FORMAT": "auto"}, pipe) == "json"
        assert chosen_format({"ETCDOPS_LOG_FORMAT": "json"}, terminal) == "json"
        assert chosen_format({"ETCDOPS_LOG_FORMAT": "TEXT"}, pipe) == "text"
    os.close(leader)


def test_an_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        chosen_format({"ETCDOPS_LOG_FORMAT": "yaml"})
    assert caught.value.hint == "set it to one of auto, text, json"


def record(message: str, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("etcdops.test")
    return logger.makeRecord("etcdops.test", logging.WARNING, __file__, 1, message, (), None,
                             extra=extra or None)


def test_a_json_line_carries_the_scope_and_the_call_fields() -> None:
    with log_scope(command="snapshot save", cluster="c1"):
        note(backup_id="20261201T000000Z-abcdef")
        line = JsonFormatter().format(record("stored", **fields(duration=1.5)))
    document = json.loads(line)
    assert "\n" not in line
    assert document.pop("timestamp").endswith("Z")
    assert document == {
        "level": "warning", "logger": "etcdops.test", "message": "stored",
        "command": "snapshot save", "cluster": "c1", "backup_id": "20261201T000000Z-abcdef",
        "duration": 1.5,
    }
    # what was noted stays in its scope
    assert "backup_id" not in json.loads(JsonFormatter().format(record("after")))


def test_a_traceback_stays_inside_its_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.getLogger("etcdops.test").makeRecord(
            "etcdops.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["traceback"]


def test_a_text_line_is_the_message_and_the_hint() -> None:
    assert TextFormatter().format(record("failed", **fields(hint="start etcd"))) == \
        "failed — start etcd"
    assert TextFormatter().format(record("plain")) == "plain"


def test_json_logs_turn_warnings_and_errors_into_json_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ETCDOPS_LOG_FORMAT", "json")
    monkeypatch.setenv("ETCDOPS_NOT_A_SETTING", "x")  # a warning from the loader
    config = tmp_path / "etcdops.toml"
    config.write_text(f'cluster = "c1"\n[local]\ndir = "{tmp_path / "none"}"\n')
    result = CliRunner().invoke(app, ["snapshot", "status", "latest", "-c", str(config)])
    assert result.exit_code == 2
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    warning, error = lines
    assert warning["level"] == "warning"
    assert warning["message"].startswith("$ETCDOPS_NOT_A_SETTING is not a setting")
    assert error["level"] == "error" and error["exit_code"] == 2
    assert error["hint"] and error["error_type"] == "NotFoundError"
    assert error["command"] == "snapshot status" and error["cluster"] == "c1"


def test_a_json_run_ends_with_its_duration_and_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ETCDOPS_LOG_FORMAT", "json")
    config = tmp_path / "etcdops.toml"
    config.write_text(f'cluster = "c1"\n[local]\ndir = "{tmp_path / "none"}"\n')
    result = CliRunner().invoke(app, ["snapshot", "list", "-c", str(config)])
    assert result.exit_code == 0
    last = json.loads(result.stderr.splitlines()[-1])
    assert (last["message"], last["exit_code"], last["command"]) == ("done", 0, "snapshot list")
    assert last["duration"] >= 0


def test_a_bad_format_is_one_error_line_and_exit_10(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDOPS_LOG_FORMAT", "yaml")
    result = CliRunner().invoke(app, ["snapshot", "list"])
    assert result.exit_code == 10
    assert result.stderr == "error: $ETCDOPS_LOG_FORMAT is 'yaml' — set it to one of auto, " \
        "text, json\n"


# --- in JSON logs, every line of stderr is JSON ------------------------------------------

def json_lines(stderr: str) -> list[dict[str, Any]]:
    """stderr's lines as JSON objects; fails on the first line that is not one."""
    lines = stderr.splitlines()
    assert lines
    for line in lines:
        assert line.startswith("{"), f"not a JSON line: {line!r}"
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(("words", "message", "command"), [
    (["snapshot", "save", "--bogus"], "No such option: --bogus", "snapshot save"),
    (["snapshot", "bogus"], "No such command 'bogus'.", "snapshot"),
    (["snapshot", "status"], "Missing argument", "snapshot status"),
    (["snapshot"], "a command is missing", "snapshot"),
    (["-o", "json", "snapshot", "lst"], "No such command 'lst'.", "snapshot"),
])
def test_a_usage_error_in_json_logs_is_one_json_line_and_exit_2(
    words: list[str], message: str, command: str
) -> None:
    result = CliRunner().invoke(app, words, env={"ETCDOPS_LOG_FORMAT": "json"})
    assert result.exit_code == 2
    [line] = json_lines(result.stderr)
    assert line["level"] == "error" and line["message"].startswith(message)
    assert (line["exit_code"], line["command"]) == (2, command)
    assert line["hint"].startswith(f"see 'etcdops {command} --help'")
    assert line["usage"].startswith(f"Usage: etcdops {command} [OPTIONS]")
    if "-o" in words:  # and the error document on stdout, as before
        assert json.loads(result.stdout)["error"]["message"] == line["message"]
    else:
        assert result.stdout == ""


def test_a_usage_error_in_text_logs_is_clicks_text_as_before() -> None:
    result = CliRunner().invoke(app, ["snapshot", "save", "--bogus"],
                                env={"ETCDOPS_LOG_FORMAT": "text"})
    assert result.exit_code == 2
    assert result.stderr == (
        "Usage: etcdops snapshot save [OPTIONS]\n"
        "Try 'etcdops snapshot save -h' for help.\n\n"
        "Error: No such option: --bogus (Possible options: --verbose)\n"
    )


def etcdops_run(*words: str, log_format: str = "json") -> subprocess.CompletedProcess[str]:
    """etcdops as its own process: its stderr as journald would get it."""
    return subprocess.run(
        [sys.executable, "-m", "etcdops", *words], capture_output=True, text=True, timeout=60,
        env=os.environ | {"ETCDOPS_LOG_FORMAT": log_format},
    )


def test_another_librarys_warning_is_a_line_in_our_format(s3: S3Env, tmp_path: Path) -> None:
    # botocore warns (and goes on) when given a FIPS pseudo-region; its logger has only a
    # NullHandler, so before etcdops had a root handler the warning was dropped
    config = tmp_path / "etcdops.toml"
    config.write_text(
        f'cluster = "c1"\n[local]\ndir = "{tmp_path / "backups"}"\n'
        f'[s3]\nbucket = "{s3.primary.bucket}"\nregion = "fips-us-east-1"\n'
        f'endpoint_url = "{s3.endpoint_url}"\n'
    )
    result = etcdops_run("snapshot", "list", "-v", "-c", str(config))
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stderr)
    [warning] = [line for line in lines if line["logger"] == "botocore.client"]
    assert warning["level"] == "warning" and "fips-us-east-1" in warning["message"]
    assert (warning["command"], warning["cluster"]) == ("snapshot list", "c1")
    text = etcdops_run("snapshot", "list", "-c", str(config), log_format="text")
    assert "warning: botocore.client: transforming region from fips-us-east-1" in text.stderr


_WARNINGS = """
import logging, sys, warnings
from etcdops.cli.logs import setup_logging
setup_logging(0, sys.argv[1])
warnings.warn("an old call", DeprecationWarning)  # shown: -W default below
logging.getLogger("urllib3.connectionpool").warning("Connection pool is full")
logging.getLogger("grpc._channel").info("below WARNING: not shown")
logging.getLogger("etcdops.test").info("ours, at INFO")
"""


def test_python_warnings_and_library_warnings_are_lines_in_our_format() -> None:
    def run(log_format: str) -> str:
        return subprocess.run(
            [sys.executable, "-W", "default", "-c", _WARNINGS, log_format], capture_output=True,
            text=True, timeout=30, check=True,
        ).stderr

    lines = json_lines(run("json"))
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("py.warnings", "warning"), ("urllib3.connectionpool", "warning"),
        ("etcdops.test", "info"),
    ]
    assert "DeprecationWarning: an old call" in lines[0]["message"]
    text = run("text").splitlines()
    assert text[0].startswith("warning: <string>:5: DeprecationWarning: an old call")
    assert text[1:] == ["warning: urllib3.connectionpool: Connection pool is full",
                        "ours, at INFO"]


def test_a_failing_command_with_v_is_json_lines_and_its_traceback_inside_one(
    unreachable_endpoint: str, tmp_path: Path
) -> None:
    config = tmp_path / "etcdops.toml"
    config.write_text(f'[etcd]\nendpoints = ["{unreachable_endpoint}"]\ndial_timeout = "200ms"\n')
    result = etcdops_run("compact", "-v", "-c", str(config))
    assert result.returncode == 13
    error = json_lines(result.stderr)[-1]
    assert error["level"] == "error" and error["exit_code"] == 13
    assert "Traceback (most recent call last)" in error["traceback"]


# --- no secret in any log line or argv --------------------------------------------------

PASSWORD = "pw-h3-Zq8rT1-never-logged"


@pytest.fixture
def etcd_tls_auth(tmp_path: Path, tls_files: TLSFiles) -> Iterator[LocalCluster]:
    """A TLS-only etcd that requires client certificates and a user and password as well."""
    with LocalCluster.single(tmp_path / "etcd-tls-auth", tls=tls_files) as cluster:
        etcdctl = [
            str(find_binary("etcdctl")), f"--endpoints={cluster.client_urls[0]}",
            f"--cacert={tls_files.ca}", f"--cert={tls_files.client_cert}",
            f"--key={tls_files.client_key}",
        ]
        for words in (["user", "add", "root", "--new-user-password", PASSWORD],
                      ["user", "grant-role", "root", "root"], ["auth", "enable"],
                      ["put", "/registry/pods/default/web-1", "{}", "--user", f"root:{PASSWORD}"]):
            subprocess.run(etcdctl + words, check=True, capture_output=True, timeout=30)
        yield cluster


class ArgvScanner:
    """Reads every process's argv from /proc while a command runs."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._scan, daemon=True)

    def __enter__(self) -> ArgvScanner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _scan(self) -> None:
        while not self._done.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        argv = (entry / "cmdline").read_bytes()
                    except OSError:  # gone already
                        continue
                    self.seen[int(entry.name)] = argv.replace(b"\0", b" ").decode(errors="replace")
            self._done.wait(0.01)


def test_no_secret_in_the_logs_or_argv_of_a_full_run(
    etcd_tls_auth: LocalCluster, tls_files: TLSFiles, s3: S3Env, age_identity: AgeIdentity,
    tmp_path: Path,
) -> None:
    password_file = tmp_path / "etcd-password"
    password_file.write_text(PASSWORD + "\n")
    config = tmp_path / "etcdops.toml"
    config.write_text(
        'cluster = "secrets"\n'
        f'[etcd]\nendpoints = ["{etcd_tls_auth.client_urls[0]}"]\n'
        f'cacert = "{tls_files.ca}"\ncert = "{tls_files.client_cert}"\n'
        f'key = "{tls_files.client_key}"\nuser = "root"\npassword_file = "{password_file}"\n'
        f'[encryption]\nrecipients = ["{age_identity.recipient}"]\n'
        f'identity_file = "{age_identity.path}"\n'
        f'[local]\ndir = "{tmp_path / "backups"}"\n'
        f'[s3]\nbucket = "{s3.primary.bucket}"\nregion = "{s3.primary.region}"\n'
        f'prefix = "{s3.primary.prefix}"\nendpoint_url = "{s3.endpoint_url}"\n'
        f'[s3.replica]\nbucket = "{s3.replica.bucket}"\nregion = "{s3.replica.region}"\n'
        f'endpoint_url = "{s3.endpoint_url}"\n'
    )
    env = os.environ | {"ETCDOPS_LOG_FORMAT": "json"}
    logs: list[str] = []
    commands = [["snapshot", "save"], ["snapshot", "list"], ["snapshot", "prune"],
                ["snapshot", "verify", "latest", "--drill"]]
    with ArgvScanner() as scanner:
        for words in commands:
            result = subprocess.run(
                [sys.executable, "-m", "etcdops", *words, "-v", "-c", str(config)],
                capture_output=True, text=True, timeout=60, env=env,
            )
            assert result.returncode == 0, result.stderr
            logs += result.stderr.splitlines() + result.stdout.splitlines()
    records = [json.loads(line) for line in logs if line.startswith("{") and line.endswith("}")]
    assert {r.get("command") for r in records} >= {" ".join(words[:2]) for words in commands}
    assert any(r.get("backup_id") for r in records)
    assert any(r["level"] == "debug" for r in records)  # -v: the most there is to log
    key_body = "".join(
        line for line in tls_files.client_key.read_text().splitlines() if "-----" not in line
    )
    age_secret = next(
        line for line in age_identity.path.read_text().splitlines()
        if line.startswith("AGE-SECRET-KEY-")
    )
    secrets = {"password": PASSWORD, "TLS key": key_body, "age identity": age_secret}
    pieces = {name: [s[i:i + 16] for i in range(0, len(s) - 15, 16)] or [s]
              for name, s in secrets.items()}
    text = "\n".join(logs)
    for name, chunks in pieces.items():
        assert not [c for c in chunks if c in text], f"the {name} is in the logs"
    # the drill's etcdutl and throwaway etcd were seen, and no argv holds a secret
    argvs = scanner.seen.values()
    assert any("etcdutl" in argv and "snapshot restore" in argv for argv in argvs)
    assert any("etcd " in argv and "--data-dir" in argv for argv in argvs)
    for name, secret in secrets.items():
        assert not [argv for argv in argvs if secret in argv], f"the {name} is in an argv"
