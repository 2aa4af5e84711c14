"""The restore drill and `snapshot verify` on real backups of etcd_loaded: what a restored,
running copy holds, that nothing is left behind on success or failure, and the exit codes."""

import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyrage
import pytest
import zstandard
from pyrage import x25519
from typer.testing import CliRunner

from etcdops.backup.readback import snapshot_status
from etcdops.cli.main import app
from etcdops.errors import EtcdopsError, IntegrityError, ToolError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.etcdutl import run_etcdutl
from etcdops.etcd.session import EtcdSession
from etcdops.report import LogReporter
from etcdops.restore.drill import PHASES, verify_backup


@pytest.fixture
def cli(backup_toml):
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [*args, "--config", str(backup_toml)])


def etcd_processes_under(path: Path) -> list[int]:
    """Processes running an etcd whose command line names a directory under path."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited while we looked
        if argv and argv[0].endswith(b"etcd") and any(str(path).encode() in a for a in argv):
            found.append(int(entry.name))
    return found


class Watching(LogReporter):
    """Looks at the scratch directory and the processes when the drill reports a step, and
    can fail the drill right there."""

    def __init__(self, scratch: Path, fail_at: str | None = None,
                 error: BaseException | None = None) -> None:
        self.scratch, self.fail_at, self.error = scratch, fail_at, error
        self.seen: dict[str, tuple[dict[str, int], list[int]]] = {}

    def event(self, message: str) -> None:
        super().event(message)
        step = message.split(" ")[0]
        modes = {p.name.split("-")[1]: stat.S_IMODE(p.stat().st_mode)
                 for p in self.scratch.iterdir()}
        self.seen[step] = (modes, etcd_processes_under(self.scratch))
        if self.fail_at is not None and message.startswith(self.fail_at):
            raise self.error


def assert_nothing_left(scratch: Path) -> None:
    assert list(scratch.iterdir()) == []
    assert etcd_processes_under(scratch) == []


def expected_types(objects: dict[bytes, bytes]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in objects:
        kind = key.split(b"/")[2].decode()  # b"", b"registry", then the type
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def expected_namespaces(objects: dict[bytes, bytes]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in objects:
        parts = key.split(b"/")[2:]  # b"", b"registry", then the path
        if len(parts) == 3:
            counts[parts[1].decode()] = counts.get(parts[1].decode(), 0) + 1
    return counts


def test_drill_counts_what_was_backed_up_and_leaves_nothing(
    backup_config, saved, etcd_loaded, scratch
):
    watching = Watching(scratch)
    result = verify_backup(backup_config, saved.id, watching, drill=True, under=scratch)
    drill = result.drill
    assert result.verified and not drill.problems
    assert result.how.startswith("restore drill (age authentication, etcd sha256 trailer")
    assert drill.inventory.by_type() == expected_types(etcd_loaded.objects)
    assert drill.inventory.by_namespace() == expected_namespaces(etcd_loaded.objects)
    assert drill.inventory.total == saved.etcd.keys == len(etcd_loaded.objects)
    assert drill.manifest_keys == saved.etcd.keys
    assert drill.counted_at == saved.etcd.revision
    assert drill.revision >= saved.etcd.revision
    assert list(drill.phases) == list(PHASES)
    assert all(seconds > 0 for seconds in drill.phases.values())
    # while it ran: the plaintext and the drill's directories, 0700, then etcd on the data dir
    restoring_dirs, restoring_etcd = watching.seen["etcdutl"]
    assert restoring_dirs == {"drill": 0o700, "plaintext": 0o700} and restoring_etcd == []
    counting_dirs, counting_etcd = watching.seen["counting"]
    assert counting_dirs == {"drill": 0o700}  # the plaintext went once restored
    assert len(counting_etcd) == 1
    assert_nothing_left(scratch)
    document = result.as_dict()
    assert document["verified"] is True and document["drill"]["keys"] == saved.etcd.keys
    assert json.loads(json.dumps(document))["drill"]["inventory"]["total"] == saved.etcd.keys


@pytest.mark.parametrize(("fail_at", "error"), [
    ("etcdutl snapshot restore", KeyboardInterrupt()),
    ("starting a throwaway etcd", EtcdopsError("injected failure")),
    ("counting keys", KeyboardInterrupt()),
    ("counting keys", ToolError("injected failure")),
], ids=["ctrl-c while restoring", "error before etcd starts", "ctrl-c while etcd runs",
        "error while etcd runs"])
def test_a_failed_drill_leaves_nothing(backup_config, saved, scratch, fail_at, error):
    watching = Watching(scratch, fail_at, error)
    with pytest.raises(type(error)):
        verify_backup(backup_config, saved.id, watching, drill=True, under=scratch)
    step = fail_at.split(" ")[0]
    assert watching.seen[step][0]  # there was something to clean up when it failed
    assert_nothing_left(scratch)


WRITING_ETCDUTL = """#!{python}
import os, sys
data = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--data-dir="))
os.makedirs(data, exist_ok=True)
with open({pid!r}, "w") as file:
    file.write(str(os.getpid()))
for count in range(10**9):  # until killed: a restore that writes into its data dir
    open(os.path.join(data, f"f{{count}}"), "w").close()
"""


@pytest.fixture
def writing_etcdutl(tmp_path):
    """(a stand-in etcdutl that writes into its --data-dir until killed, its pid file)."""
    pid_file = tmp_path / "etcdutl.pid"
    etcdutl = tmp_path / "etcdutl-writing"
    etcdutl.write_text(WRITING_ETCDUTL.format(python=sys.executable, pid=str(pid_file)))
    etcdutl.chmod(0o755)
    return etcdutl, pid_file


def interrupt_when_written(pid_file: Path) -> threading.Thread:
    """Ctrl-C this process (the CLI turns SIGTERM into the same) once the stand-in runs."""

    def interrupt() -> None:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the stand-in etcdutl never started"
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    return thread


def test_an_interrupted_etcdutl_is_reaped_before_anyone_removes_its_dir(writing_etcdutl,
                                                                        tmp_path):
    etcdutl, pid_file = writing_etcdutl
    thread = interrupt_when_written(pid_file)
    with pytest.raises(KeyboardInterrupt):
        run_etcdutl(etcdutl, ["snapshot", "restore", f"--data-dir={tmp_path / 'data'}"])
    thread.join()
    # not still running, not a zombie: nothing writes into the directory the caller removes
    assert not Path(f"/proc/{pid_file.read_text()}").exists()


def test_ctrl_c_during_the_drills_restore_leaves_nothing(
    backup_config, saved, scratch, writing_etcdutl
):
    etcdutl, pid_file = writing_etcdutl
    config = dataclasses.replace(
        backup_config, etcd=dataclasses.replace(backup_config.etcd, etcdutl=str(etcdutl))
    )
    thread = interrupt_when_written(pid_file)
    with pytest.raises(KeyboardInterrupt):
        verify_backup(config, saved.id, LogReporter(), drill=True, under=scratch)
    thread.join()
    assert not Path(f"/proc/{pid_file.read_text()}").exists()
    assert_nothing_left(scratch)


def test_drill_of_a_corrupt_backup_is_an_integrity_error(backup_config, saved, scratch):
    path = backup_config.local.dir / saved.object_key
    data = bytearray(path.read_bytes())
    data[data.index(b"\n--- ") + 200] ^= 0x01  # a payload byte: age's authentication fails
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        verify_backup(backup_config, saved.id, LogReporter(), drill=True, under=scratch)
    assert_nothing_left(scratch)


def test_drill_of_a_file_without_manifest_counts_without_comparing(
    backup_config, saved, etcd_loaded, scratch, tmp_path
):
    copy = tmp_path / "copied.db.zst.age"
    shutil.copy(backup_config.local.dir / saved.object_key, copy)
    result = verify_backup(backup_config, str(copy), LogReporter(), drill=True, under=scratch)
    assert result.verified
    assert result.drill.manifest_keys is None
    assert result.drill.inventory.by_type() == expected_types(etcd_loaded.objects)
    assert result.drill.counted_at == result.drill.revision
    assert any("no manifest" in note for note in result.drill.notes)
    assert_nothing_left(scratch)


def test_verify_without_drill_is_the_integrity_read(backup_config, saved):
    result = verify_backup(backup_config, saved.id, LogReporter())
    assert result.verified and result.drill is None
    assert result.how == (
        "integrity read (age authentication, etcd sha256 trailer, manifest sizes and sha256)"
    )
    assert result.as_dict()["backup_id"] == saved.id


def test_cli_verify_and_drill(cli, saved, scratch):
    plain = cli("snapshot", "verify", "latest", "-o", "json")
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["how"].startswith("integrity read")
    assert cli("snapshot", "verify", "latest", "--scratch-dir", str(scratch)).exit_code == 2
    drilled = cli("snapshot", "verify", saved.id, "--drill", "--scratch-dir", str(scratch))
    assert drilled.exit_code == 0, drilled.output
    text = " ".join(drilled.stdout.split())
    assert f"backup {saved.id} in local store: verified by restore drill" in text
    for phase in ("decode", "etcdutl restore", "etcd start", "inventory"):
        assert phase in text
    assert "pods" in text and "cluster-scoped" in text and "top namespaces:" in text
    assert f"keys {saved.etcd.keys}, the manifest says {saved.etcd.keys}" in text
    assert_nothing_left(scratch)


def test_cli_drill_exits_15_on_a_corrupt_backup(cli, backup_config, saved, scratch):
    path = backup_config.local.dir / saved.object_key
    data = bytearray(path.read_bytes())
    data[len(data) - 20] ^= 0x01  # the last chunk
    path.write_bytes(bytes(data))
    result = cli("snapshot", "verify", saved.id, "--drill", "--scratch-dir", str(scratch))
    assert result.exit_code == 15, result.output
    assert "error:" in result.stderr and "Traceback" not in result.output
    assert cli("snapshot", "verify", saved.id).exit_code == 15
    assert_nothing_left(scratch)


def test_cli_drill_exits_15_when_the_keys_differ_from_the_manifest(
    cli, backup_config, saved, scratch
):
    # a manifest that says one key more than the backup holds
    manifest_path = backup_config.local.dir / saved.manifest_key
    document = json.loads(manifest_path.read_text())
    document["etcd"]["keys"] += 1
    manifest_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    result = cli("snapshot", "verify", saved.id, "--drill", "--scratch-dir", str(scratch),
                 "-o", "json")
    assert result.exit_code == 15, result.output
    report = json.loads(result.stdout)
    assert report["verified"] is False
    assert report["drill"]["keys"] == saved.etcd.keys
    assert report["drill"]["manifest_keys"] == saved.etcd.keys + 1
    assert f"holds {saved.etcd.keys} keys" in result.stderr
    text = cli("snapshot", "verify", saved.id, "--drill", "--scratch-dir", str(scratch))
    assert text.exit_code == 15
    assert "NOT VERIFIED: the restored etcd holds" in " ".join(text.stdout.split())
    assert_nothing_left(scratch)


# --- snapshot status of an encrypted file without its manifest --------------------------------


def test_status_of_an_encrypted_file_alone_reads_revision_and_keys(
    backup_config, saved, tmp_path, monkeypatch
):
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # where its plaintext goes
    copy = tmp_path / "out-of-s3" / saved.object_key.rsplit("/", 1)[1]
    copy.parent.mkdir()
    shutil.copy(backup_config.local.dir / saved.object_key, copy)  # the object, no manifest

    seen: list[dict[str, int]] = []

    class Looking(LogReporter):
        def progress(self, description, total):
            seen.append({p.name: stat.S_IMODE(p.stat().st_mode) for p in private.iterdir()})
            return super().progress(description, total)

    status = snapshot_status(backup_config, str(copy), Looking())
    assert status.kind == "encrypted file" and status.backup_id is None
    assert status.revision == saved.etcd.revision
    assert status.keys > saved.etcd.keys  # bbolt entries: etcd's own meta keys too
    assert status.keys_counted == "bbolt entries, as etcdutl counts them"
    assert status.checks[-1] == "etcdutl snapshot status"
    assert [list(modes.values()) for modes in seen] == [[0o700]]
    assert list(private.iterdir()) == []


def test_cli_status_of_an_encrypted_file_alone(cli, backup_config, saved, tmp_path):
    copy = tmp_path / "snapshot.db.zst.age"
    shutil.copy(backup_config.local.dir / saved.object_key, copy)
    result = cli("snapshot", "status", str(copy), "-o", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["revision"] == saved.etcd.revision
    assert document["keys"] > saved.etcd.keys


def test_status_of_a_stock_etcdctl_zstd_age_file(backup_config, etcd_loaded, age_identity,
                                                 tmp_path):
    # what an operator's own pipeline makes: etcdctl snapshot save | zstd | age -r
    plain = tmp_path / "etcdctl.db"
    url = etcd_loaded.cluster.client_urls[0]
    subprocess.run([str(find_binary("etcdctl")), f"--endpoints={url}", "snapshot", "save",
                    str(plain)], check=True, capture_output=True, timeout=60)
    with EtcdSession(etcd_loaded.cluster.etcd_config()) as session:
        revision = session.status(url).revision
    stock = tmp_path / "stock.db.zst.age"
    compressed = zstandard.ZstdCompressor().compress(plain.read_bytes())
    stock.write_bytes(pyrage.encrypt(compressed, [x25519.Recipient.from_str(
        age_identity.recipient)]))
    status = snapshot_status(backup_config, str(stock), LogReporter())
    assert status.kind == "encrypted file"
    assert status.revision == revision
    assert status.keys > len(etcd_loaded.objects)


# --- the keys-only paged read the drill counts with -------------------------------------------


def test_key_pages_read_every_key_once_at_one_revision(etcd_loaded):
    with EtcdSession(etcd_loaded.cluster.etcd_config()) as session:
        pages = session.key_pages(7)
        first = next(pages)
        session.put_many([(b"/registry/pods/default/after-the-first-page", b"{}")])
        rest = [page for page in pages]
    keys = first + [key for page in rest for key in page]
    assert keys == sorted(etcd_loaded.objects)  # the later write is not in the pinned read
    assert all(1 <= len(page) <= 7 for page in [first, *rest])
