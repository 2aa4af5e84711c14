"""The plain snapshot exists only inside a 0700 directory, and only for the block."""

import dataclasses
import hashlib
import stat
import tempfile
from pathlib import Path

import pytest

from etcdops.crypto.age import Identity
from etcdops.errors import CryptoError, IntegrityError
from etcdops.etcd.etcdutl import snapshot_status
from etcdops.report import LogReporter
from etcdops.restore.plaintext import plaintext_snapshot, scratch_directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_plaintext_is_checked_private_and_gone_after_the_block(backup_config, saved, scratch):
    with plaintext_snapshot(backup_config, "latest", LogReporter(), under=scratch) as plain:
        path, status = plain
        assert path.parent.parent == scratch
        assert (mode(path.parent), mode(path)) == (0o700, 0o600)
        data = path.read_bytes()
        assert hashlib.sha256(data[:-32]).digest() == data[-32:]  # etcd's trailer kept
        assert status.backup_id == saved.id and status.store == "local"
        assert status.db_sha256 == saved.snapshot_db_sha256
        assert snapshot_status(path, None).revision == saved.etcd.revision
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_or_an_interrupt_in_the_block_removes_it(backup_config, saved, scratch, error):
    with pytest.raises(error), plaintext_snapshot(
        backup_config, saved.id, LogReporter(), under=scratch
    ) as plain:
        assert plain.path.is_file()
        raise error
    assert list(scratch.iterdir()) == []


def test_without_under_it_goes_in_the_system_temporary_directory(backup_config, saved):
    with plaintext_snapshot(backup_config, "latest", LogReporter()) as plain:
        assert plain.path.parent.parent == Path(tempfile.gettempdir())
        directory = plain.path.parent
    assert not directory.exists()


def test_a_corrupt_object_leaves_nothing(backup_config, saved, scratch):
    path = backup_config.local.dir / saved.object_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError), plaintext_snapshot(
        backup_config, "latest", LogReporter(), under=scratch
    ):
        pytest.fail("a corrupt backup was decoded")
    assert list(scratch.iterdir()) == []


def test_a_wrong_identity_leaves_nothing(backup_config, saved, scratch, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(str(Identity.generate()) + "\n")
    config = dataclasses.replace(
        backup_config, encryption=dataclasses.replace(backup_config.encryption, identity_file=other)
    )
    with pytest.raises(CryptoError), plaintext_snapshot(
        config, "latest", LogReporter(), under=scratch
    ):
        pytest.fail("decoded with a wrong identity")
    assert list(scratch.iterdir()) == []


HOLDER = """
import sys, pathlib
from etcdops.report import LogReporter
from etcdops.restore.plaintext import scratch_directory
with scratch_directory(pathlib.Path(sys.argv[1]), "plaintext", LogReporter()) as directory:
    (directory / "snapshot.db").write_bytes(b"the whole cluster in the clear")
    print(directory, flush=True)
    sys.stdin.read()  # until the test closes it, or kills this process
"""


def test_a_scratch_directory_left_by_a_killed_run_goes_with_the_next_one_made_there(tmp_path):
    import subprocess
    import sys

    from tests.fixtures.waiting import wait_for

    def holder() -> tuple[subprocess.Popen, Path]:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return process, Path(process.stdout.readline().strip())

    alive, in_use = holder()
    killed, abandoned = holder()  # its own sweep leaves the live run's directory alone
    killed.kill()  # SIGKILL: no block ends, nothing is removed
    killed.wait()
    not_ours = tmp_path / ".etcdops-not-a-scratch-directory"  # no lock file: never touched
    not_ours.mkdir()
    assert abandoned.is_dir() and (abandoned / "snapshot.db").is_file()
    events = Events()
    with scratch_directory(tmp_path, "drill", events) as mine:
        assert not abandoned.exists()
        assert in_use.is_dir() and not_ours.is_dir()  # a live run's and a stranger's stay
        assert mine.is_dir()
    assert events.lines == [f"removing {abandoned}, left by a run that was killed (it may hold "
                            "a plaintext snapshot)"]
    alive.stdin.close()  # its block ends: it removes its own
    alive.wait(timeout=30)
    wait_for(lambda: not in_use.exists(), "the live run removing its directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == [not_ours.name]


class Events:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def progress(self, description: str, total: int | None):
        raise AssertionError("no progress expected")

    def event(self, message: str) -> None:
        self.lines.append(message)
