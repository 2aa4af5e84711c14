"""The target data dir: refused before any work when it cannot be replaced, moved aside intact
when it holds data, and left as it was when the swap fails."""

import os
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etcdops.errors import LockedError, StorageError, UsageError
from etcdops.restore.datadir import aside_path, check_target, swap_in

MOMENT = datetime(2026, 12, 1, 12, 30, 5, tzinfo=UTC)


def built_dir(tmp_path: Path) -> Path:
    built = tmp_path / "work" / "data"
    (built / "member" / "snap").mkdir(parents=True)
    (built / "member" / "snap" / "db").write_bytes(b"restored")
    return built


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("existing", ["absent", "empty"])
def test_an_absent_or_empty_data_dir_is_replaced_and_private(tmp_path, existing):
    target_path = tmp_path / "etcd"
    if existing == "empty":
        target_path.mkdir(mode=0o755)
    target = check_target(target_path)
    assert not target.occupied
    assert swap_in(built_dir(tmp_path), target, MOMENT) is None
    assert tree(target_path) == {"member/snap/db": b"restored"}
    assert stat.S_IMODE(target_path.stat().st_mode) == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etcd", "work"]


def test_an_existing_data_dir_is_moved_aside_intact_under_a_free_name(tmp_path):
    target_path = tmp_path / "etcd"
    (target_path / "member" / "wal").mkdir(parents=True)
    (target_path / "member" / "wal" / "0.wal").write_bytes(b"old wal")
    before = tree(target_path)
    taken = tmp_path / "etcd.etcdops-20261201T123005Z"
    taken.mkdir()  # a restore in the same second before this one
    target = check_target(target_path)
    assert target.occupied
    aside = swap_in(built_dir(tmp_path), target, MOMENT)
    assert aside == tmp_path / "etcd.etcdops-20261201T123005Z-2"
    assert tree(aside) == before
    assert tree(target_path) == {"member/snap/db": b"restored"}
    assert list(taken.iterdir()) == []


def test_a_symlinked_data_dir_is_restored_where_it_points(tmp_path):
    real = tmp_path / "disk" / "etcd"
    real.mkdir(parents=True)
    link = tmp_path / "etcd"
    link.symlink_to(real)
    target = check_target(link)
    assert target.path == real
    swap_in(built_dir(tmp_path / "disk"), target, MOMENT)
    assert link.is_symlink() and tree(link) == {"member/snap/db": b"restored"}


def test_a_data_dir_that_fills_before_the_swap_is_left_as_it_is(tmp_path):
    target_path = tmp_path / "etcd"
    target_path.mkdir()
    target = check_target(target_path)
    (target_path / "started meanwhile").write_text("x")
    built = built_dir(tmp_path)
    with pytest.raises(StorageError, match="cannot put the restored data dir in place"):
        swap_in(built, target, MOMENT)
    assert tree(target_path) == {"started meanwhile": b"x"}
    assert tree(built) == {"member/snap/db": b"restored"}  # the caller's to remove


def test_a_file_or_a_missing_parent_is_a_usage_error(tmp_path):
    (tmp_path / "etcd").write_text("not a dir")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        check_target(tmp_path / "etcd")
    with pytest.raises(UsageError, match="does not exist"):
        check_target(tmp_path / "nowhere" / "etcd")


def test_a_mount_point_is_refused():
    with pytest.raises(StorageError, match="is a mount point") as caught:
        check_target(Path("/proc"))
    assert "/proc/data" in caught.value.hint


def test_the_data_dir_of_a_running_etcd_is_refused(etcd_single):
    member = etcd_single.members[0]
    with pytest.raises(LockedError, match="an etcd is running on"):
        check_target(member.data_dir)
    etcd_single.stop()
    assert check_target(member.data_dir).occupied


def test_aside_names_never_collide(tmp_path):
    target = tmp_path / "etcd"
    first = aside_path(target, MOMENT)
    assert first.name == "etcd.etcdops-20261201T123005Z"
    first.write_text("")
    assert aside_path(target, MOMENT).name == "etcd.etcdops-20261201T123005Z-2"



def test_a_failed_rename_after_the_move_aside_puts_the_old_data_dir_back(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to make the rename fail")
    target_path = tmp_path / "etcd"
    (target_path / "member").mkdir(parents=True)
    (target_path / "member" / "old").write_text("old data")
    target = check_target(target_path)
    # built on another filesystem, the rename into place fails (EXDEV) after the move aside
    elsewhere = Path(tempfile.mkdtemp(dir=shm))
    try:
        with pytest.raises(StorageError) as caught:
            swap_in(elsewhere, target, MOMENT)
    finally:
        elsewhere.rmdir()
    assert "nothing was changed" in caught.value.hint
    assert tree(target_path) == {"member/old": b"old data"}
    assert [p.name for p in tmp_path.iterdir()] == ["etcd"]


def test_a_bind_mount_from_the_same_filesystem_is_a_mount_point_too(tmp_path, bind_mount):
    (tmp_path / "disk").mkdir()
    (tmp_path / "etcd").mkdir()
    target = bind_mount(tmp_path / "disk", tmp_path / "etcd")
    assert not os.path.ismount(target)  # what os.path.ismount misses
    with pytest.raises(StorageError, match="is a mount point"):
        check_target(target)
