"""The command line as operators and automation use it: exit codes, one-line errors, JSON."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from etcdops.cli.main import app
from etcdops.lock import job_lock
from tests.fixtures.waiting import wait_for


@pytest.fixture
def cli(backup_toml):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [*args, "--config", str(backup_toml)])

    return invoke


def test_help_lists_every_exit_code():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for code in ["0 ok", "2 usage", "3 partial", "10 configuration", "11 locked", "12 key",
                 "13 etcd", "14 storage", "15 integrity", "16 a recovery target", "130"]:
        assert code in " ".join(result.output.split())


def test_help_imports_no_heavy_modules():
    code = (
        "import sys\n"
        "from etcdops.cli.main import app\n"
        "heavy = ('grpc', 'etcd3', 'boto3', 'cryptography', 'zstandard', 'rich.progress')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_save_json_prints_the_manifest_and_list_shows_it(cli, etcd_loaded):
    saved = cli("snapshot", "save", "--local-only", "--output", "json")
    assert saved.exit_code == 0, saved.output
    manifest = json.loads(saved.stdout)
    assert manifest["etcd"]["keys"] == len(etcd_loaded.objects)
    listed = cli("snapshot", "list", "-o", "json")
    assert listed.exit_code == 0
    [entry] = json.loads(listed.stdout)["backups"]
    assert entry["id"] == manifest["id"]
    assert entry["verified"] is True
    assert entry["stores"] == {"local": None}
    assert manifest["stored_in"] == ["local"] and manifest["failed"] == {}
    status = cli("snapshot", "status", manifest["id"][:12], "-o", "json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["integrity"] == "ok"
    text = cli("snapshot", "list")
    assert manifest["id"] in text.stdout


def test_endpoints_flag_overrides_the_file(tmp_path, backup_config, age_identity):
    config = tmp_path / "other.toml"
    config.write_text(
        f'[etcd]\nendpoints = ["http://127.0.0.1:9"]\ndial_timeout = "1s"\n'
        f'[encryption]\nrecipients = ["{age_identity.recipient}"]\n'
        f'[local]\ndir = "{backup_config.local.dir}"\n'
    )
    runner = CliRunner()
    unreachable = runner.invoke(app, ["snapshot", "save", "--config", str(config)])
    assert unreachable.exit_code == 13
    endpoint = backup_config.etcd.endpoints[0]
    result = runner.invoke(
        app, ["snapshot", "save", "--config", str(config), "--endpoints", endpoint]
    )
    assert result.exit_code == 0, result.output


def test_keys_generate_is_private_and_never_overwrites(tmp_path):
    out = tmp_path / "id.txt"
    first = CliRunner().invoke(app, ["keys", "generate", "--out", str(out), "-o", "json"])
    assert first.exit_code == 0
    assert json.loads(first.stdout)["recipient"].startswith("age1")
    assert out.stat().st_mode & 0o777 == 0o600
    before = out.read_text()
    again = CliRunner().invoke(app, ["keys", "generate", "--out", str(out)])
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.stderr
    assert out.read_text() == before


def test_bad_config_exits_10_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "etcdops.toml"
    bad.write_text('[etcd]\nendpoints = "http://x:2379"\ntimeout = "5s"\n')
    result = CliRunner().invoke(app, ["snapshot", "list", "--config", str(bad)])
    assert result.exit_code == 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{bad}:3" in lines[0] and "etcd.timeout" in lines[0]
    assert "Traceback" not in result.output
    verbose = CliRunner().invoke(app, ["snapshot", "list", "--config", str(bad), "-v"])
    assert verbose.exit_code == 10
    assert "Traceback" in verbose.stderr


def test_errors_in_json_mode_are_a_json_document(tmp_path):
    bad = tmp_path / "etcdops.toml"
    bad.write_text("cluster = \n")
    result = CliRunner().invoke(app, ["snapshot", "list", "--config", str(bad), "-o", "json"])
    assert result.exit_code == 10
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 10
    assert error["type"] == "ConfigError"


def test_second_save_on_a_host_exits_11(cli, backup_config, etcd_loaded):
    with job_lock(backup_config, "snapshot save"):
        result = cli("snapshot", "save")
    assert result.exit_code == 11
    assert "another snapshot save of cluster test is running" in result.stderr


def test_unreachable_etcd_exits_13_naming_the_endpoint_in_time(tmp_path, age_identity):
    config = tmp_path / "etcdops.toml"
    config.write_text(
        f'[etcd]\nendpoints = ["http://127.0.0.1:9"]\ndial_timeout = "1s"\n'
        f'[encryption]\nrecipients = ["{age_identity.recipient}"]\n'
        f'[local]\ndir = "{tmp_path}/backups"\n'
    )
    started = time.monotonic()
    result = CliRunner().invoke(app, ["snapshot", "save", "--config", str(config)])
    assert result.exit_code == 13
    assert "127.0.0.1:9" in result.stderr
    assert time.monotonic() - started < 10


def test_fetch_refuses_to_overwrite_and_exits_2(cli, backup_config, etcd_loaded, tmp_path):
    assert cli("snapshot", "save").exit_code == 0
    out = tmp_path / "existing.db"
    out.write_text("precious")
    result = cli("snapshot", "fetch", "latest", "--out", str(out))
    assert result.exit_code == 2
    assert out.read_text() == "precious"


def test_damaged_backup_exits_15(cli, backup_config, etcd_loaded):
    saved = json.loads(cli("snapshot", "save", "-o", "json").stdout)
    path = backup_config.local.dir / saved["object_key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = cli("snapshot", "status", saved["id"])
    assert result.exit_code == 15
    assert len(result.stderr.strip().splitlines()) == 1


def test_sigterm_during_save_exits_130_and_leaves_no_partial_object(
    backup_toml, backup_config, etcd_loaded, slow_etcd_proxy
):
    env = dict(os.environ, ETCDOPS_ETCD_ENDPOINTS=slow_etcd_proxy.url)
    process = subprocess.Popen(
        [sys.executable, "-m", "etcdops", "snapshot", "save", "--config", str(backup_toml)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # the proxy makes the stream take seconds: signal once the save says it is streaming
    # (after the lines before it, such as the one saying it was elected to take the period)
    said = [process.stderr.readline()]
    while said[-1] and "streaming snapshot" not in said[-1]:
        said.append(process.stderr.readline())
    assert "streaming snapshot" in said[-1], said
    wait_for(lambda: list(backup_config.local.dir.rglob(".tmp-*")), "a partial object to clean up")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    leftovers = [p.name for p in backup_config.local.dir.rglob("*") if p.is_file()]
    assert [n for n in leftovers if not n.startswith(".etcdops")] == []


def test_wrong_identity_exits_12(cli, backup_toml, tmp_path, etcd_loaded):
    assert cli("snapshot", "save").exit_code == 0
    other = tmp_path / "other-identity.txt"
    assert CliRunner().invoke(app, ["keys", "generate", "--out", str(other)]).exit_code == 0
    result = CliRunner().invoke(
        app, ["snapshot", "status", "latest", "--config", str(backup_toml)],
        env={"ETCDOPS_ENCRYPTION_IDENTITY_FILE": str(other)},
    )
    assert result.exit_code == 12
    assert "no identity given matches" in result.stderr


def test_a_file_that_is_not_a_snapshot_exits_15_in_status_and_fetch(tmp_path, backup_toml):
    junk = tmp_path / "zeros.db"
    junk.write_bytes(bytes(1 << 20))
    out = tmp_path / "out.db"
    runner = CliRunner()
    for args in (["status", str(junk)], ["fetch", str(junk), "--out", str(out)]):
        result = runner.invoke(app, ["snapshot", *args, "--config", str(backup_toml)])
        assert result.exit_code == 15, result.output
        assert f"{junk} is not an etcd snapshot" in result.stderr
        assert "plain snapshot" not in result.stderr
    assert not out.exists()
    for ref, what in ((str(tmp_path), "is a directory"), ("/dev/zero", "is a character device")):
        result = runner.invoke(app, ["snapshot", "status", ref, "--config", str(backup_toml)])
        assert result.exit_code == 2
        assert f"{ref} {what}, not a snapshot file" in result.stderr


def test_fetch_latest_out_latest_then_latest_is_still_the_backup(
    cli, etcd_loaded, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    saved = json.loads(cli("snapshot", "save", "-o", "json").stdout)
    assert cli("snapshot", "fetch", "latest", "--out", "latest").exit_code == 0
    status = json.loads(cli("snapshot", "status", "latest", "-o", "json").stdout)
    assert (status["kind"], status["backup_id"]) == ("backup", saved["id"])
    plain = json.loads(cli("snapshot", "status", "./latest", "-o", "json").stdout)
    assert plain["kind"] == "plain snapshot"


def test_a_local_dir_that_is_a_file_exits_14_naming_it(tmp_path, age_identity):
    store = tmp_path / "backups"
    store.write_text("a file where the backups should go")
    config = tmp_path / "etcdops.toml"
    config.write_text(
        f'[etcd]\nendpoints = ["http://127.0.0.1:9"]\ndial_timeout = "1s"\n'
        f'[encryption]\nrecipients = ["{age_identity.recipient}"]\n'
        f'[local]\ndir = "{store}"\n'
    )
    for command in (["list"], ["save", "--local-only"]):
        result = CliRunner().invoke(app, ["snapshot", *command, "--config", str(config)])
        assert result.exit_code == 14, (command, result.output)
        assert f"{store} is a file, not a directory" in result.stderr
        assert "File exists" not in result.stderr
        assert "no backups" not in result.stdout  # the store was not read: nothing is known


def test_an_ssh_recipient_is_refused_as_one_with_the_toml_entry(tmp_path, age_identity):
    config = tmp_path / "etcdops.toml"
    config.write_text(
        f'[etcd]\nendpoints = ["http://127.0.0.1:9"]\n'
        f'[encryption]\nrecipients = ["{age_identity.recipient}",\n'
        f'  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx2bGBnn0sxvj0qB ops@host"]\n'
        f'[local]\ndir = "{tmp_path}/backups"\n'
    )
    result = CliRunner().invoke(app, ["snapshot", "save", "--config", str(config)])
    assert result.exit_code == 12
    assert "[encryption] recipients entry 2: SSH recipients are not supported" in result.stderr
    assert f"{config}:4: [encryption] recipients" in result.stderr  # the file's line of the list
    assert "age1" in result.stderr and "mixed upper and lower case" not in result.stderr


def test_an_identity_file_others_can_read_gets_a_warning(cli, backup_config, etcd_loaded):
    assert cli("snapshot", "save").exit_code == 0
    identity = backup_config.encryption.identity_file
    assert "warning" not in cli("snapshot", "status", "latest").stderr
    identity.chmod(0o640)
    result = cli("snapshot", "status", "latest")
    assert result.exit_code == 0
    assert f"warning: identity file {identity} is open to group or others" in result.stderr
    assert f"chmod 600 {identity}" in result.stderr


def test_list_at_80_columns_cuts_no_header(cli, etcd_loaded):
    assert cli("snapshot", "save").exit_code == 0
    listed = cli("snapshot", "list")  # not a terminal: rich lays it out for 80 columns
    assert listed.exit_code == 0
    assert "…" not in listed.stdout
    words = listed.stdout.split()
    for header in ["id", "created", "revision", "stored"]:
        assert header in words


@pytest.mark.parametrize("width", [60, 80, 120])
def test_tables_cut_no_header_and_no_value_at_any_width(width):
    from rich.console import Console

    from etcdops.cli.render import table

    console = Console(width=width, record=True, file=io.StringIO())
    columns = ["id", "created", "revision", "keys", "snapshot", "stored", "stores", "verified"]
    rows = [
        ["20261125T020000Z-3fa9c1", "2h 3m ago", 123456789, 3001, "12.3 MiB", "2.1 MiB",
         "local primary replica", "yes"],
        ["20261125T030000Z-3fa9c2", "1h ago", 123999, 3001, "12.3 MiB", "2.1 MiB",
         "local primary", "NO: primary: object is 12 bytes, its manifest says 2200000"],
    ]
    console.print(table("backups of prod", columns, rows))
    checks = ["member", "check", "value", "target", "verdict"]
    console.print(table("etcd health", checks, [
        ["http://127.0.0.1:23790", "wal fsync p99", "3.2 ms", "< 10 ms", "OK"],
        ["backups", "newest good backup age", "12m", "< 1h10m", "OK"],
    ]))
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    words = text.split()
    for word in [*columns, *checks, "123456789", "2200000", "20261125T030000Z-3fa9c2",
                 "http://127.0.0.1:23790", "replica", "1h10m"]:
        assert word in words, (word, text)


def test_verify_that_fell_back_warns_under_quiet_and_exits_partial(
    backup_config, s3, etcd_loaded, tmp_path
):
    from etcdops.backup.save import save_snapshot
    from etcdops.report import LogReporter
    from tests.backup.two_regions import corrupt_primary_copy, toml_for, with_s3

    config = with_s3(backup_config, s3)
    manifest = save_snapshot(config, LogReporter()).manifest
    toml = toml_for(config, tmp_path / "etcdops.toml")
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [*args, "-q", "--config", str(toml)])

    assert run("snapshot", "verify", "latest").exit_code == 0  # every copy good: no fallback
    corrupt_primary_copy(config, s3, manifest)
    said = f"warning: backup {manifest.id} in primary store failed ("
    for args in (("verify", "latest"), ("verify", "latest", "--drill")):
        result = run("snapshot", *args)
        assert result.exit_code == 3, result.output
        assert result.stderr.startswith(said), result.stderr
        assert f"reading backup {manifest.id} in replica store" in result.stderr
    status = run("snapshot", "status", "latest")  # a report of the copy read: still 0
    assert status.exit_code == 0 and status.stderr.startswith(said)
