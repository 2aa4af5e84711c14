"""`etcdops restore` as operators run it: the report, JSON, one-line errors and exit codes,
and Ctrl-C/SIGTERM during the download or etcdutl leaving the host as it was."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.etcd.local import free_port
from etcdops.report import LogReporter
from tests.backup.two_regions import toml_for, with_s3
from tests.restore.standins import sleeping_etcdutl


@pytest.fixture
def host(tmp_path):
    """Where the member's data dir goes: an old data dir in it, to be moved aside."""
    base = tmp_path / "host"
    (base / "etcd" / "member").mkdir(parents=True)
    (base / "etcd" / "member" / "old").write_text("old data")
    return base


def member_args(data_dir: Path, name: str = "cp-1") -> list[str]:
    peer = f"http://127.0.0.1:{free_port()}"
    return ["--data-dir", str(data_dir), "--name", name, "--initial-cluster", f"{name}={peer}",
            "--initial-advertise-peer-urls", peer]


def listing(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*"))


def invoke(toml: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["restore", *args, "--config", str(toml)], env=env)


def test_the_text_report_names_the_token_to_share_and_warns_what_to_restart(
    backup_toml, saved, host
):
    # wide enough that no temporary path is folded mid-word
    result = invoke(backup_toml, "latest", *member_args(host / "etcd"), env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert f"backup {saved.id} from the local store as member cp-1" in out
    assert "moved aside" in out and "data.etcdops-" not in out and "etcd.etcdops-" in out
    assert "--initial-cluster-token test-restore-" in out and saved.id in out
    assert f"{saved.etcd.revision} (not bumped)" in out
    assert "download and decode" in out and "etcdutl" in out
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "restart kube-apiserver" in warnings[0]


def test_json_is_the_result_document(backup_toml, saved, host):
    result = invoke(backup_toml, saved.id, *member_args(host / "etcd"),
                    "--initial-cluster-token", "recovery-1", "--from", "local", "-o", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["backup_id"] == saved.id and document["store"] == "local"
    assert document["initial_cluster_token"] == "recovery-1"
    assert document["token_generated"] is False
    assert document["data_dir"] == str(host / "etcd")
    assert (Path(document["moved_aside"]) / "member" / "old").read_text() == "old data"
    assert document["revision"]["snapshot"] == saved.etcd.revision
    assert set(document["durations"]) == {"download_decode", "etcdutl", "total"}
    assert document["warnings"] and document["fallbacks"] == []


@pytest.mark.parametrize(("case", "code"), [
    ("bad initial cluster", 2), ("data dir is a file", 2), ("wrong identity", 12),
    ("corrupt object", 15), ("missing etcdutl", 1),
])
def test_each_refusal_is_one_line_and_its_exit_code(
    backup_toml, backup_config, saved, host, tmp_path, case, code
):
    args, env = ["latest", *member_args(host / "etcd")], {}
    if case == "bad initial cluster":
        args[args.index("--initial-cluster") + 1] = "cp-2=http://127.0.0.1:1"
    elif case == "data dir is a file":
        (host / "file").write_text("x")
        args[args.index("--data-dir") + 1] = str(host / "file")
    elif case == "wrong identity":
        assert CliRunner().invoke(app, ["keys", "generate", "--out",
                                        str(tmp_path / "other.txt")]).exit_code == 0
        env["ETCDOPS_ENCRYPTION_IDENTITY_FILE"] = str(tmp_path / "other.txt")
    elif case == "corrupt object":
        path = backup_config.local.dir / saved.object_key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        env["ETCDOPS_ETCD_ETCDUTL"] = str(tmp_path / "no-etcdutl")
    before = listing(host)
    result = invoke(backup_toml, *args, env=env)
    assert result.exit_code == code, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    if case == "missing etcdutl":
        assert "[etcd] etcdutl" in result.stderr
    assert listing(host) == before


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("during", ["download", "etcdutl"])
def test_sigterm_leaves_the_data_dir_as_it_was_and_no_temporary_files(
    backup_config, etcd_loaded, s3, s3_proxy, host, tmp_path, during
):
    save_snapshot(with_s3(backup_config, s3), LogReporter())
    proxy = s3_proxy()
    env = dict(os.environ)
    if during == "download":
        # the primary answers listings but never sends the object: the download hangs
        proxy.hang(lambda r: r.method == "GET" and r.path.endswith(".db.zst.age"))

        def started() -> bool:  # the plaintext's file is open, waiting for bytes
            return bool(list(host.glob(".etcdops-restore-*/.etcdops-plaintext-*/.tmp-*")))
    else:
        etcdutl, ready = sleeping_etcdutl(tmp_path / "bin")
        env["ETCDOPS_ETCD_ETCDUTL"] = str(etcdutl)
        started = ready.exists
    toml = toml_for(with_s3(backup_config, s3, primary_url=proxy.url), tmp_path / "r.toml")
    before = listing(host)
    process = subprocess.Popen(
        [sys.executable, "-m", "etcdops", "restore", "latest", *member_args(host / "etcd"),
         "--from", "primary", "--config", str(toml)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: started() or process.poll() is not None, f"the {during} start")
        assert process.poll() is None, process.communicate()
        assert list(host.glob(".etcdops-restore-*")), "no working directory to clean up"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert f"interrupted; {host / 'etcd'} is as it was" in stderr
    assert listing(host) == before
