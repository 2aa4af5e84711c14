import stat

import pytest

from etcdops.errors import StorageError
from etcdops.stores.local import LocalStore


def test_objects_are_private_and_temp_files_leave_no_trace(tmp_path):
    store = LocalStore(tmp_path)
    writer = store.open_writer("c/snap.age")
    writer.write(b"x" * 100)
    temps = [p for p in (tmp_path / "c").iterdir()]
    assert len(temps) == 1 and temps[0].name.startswith(".tmp-")
    writer.commit()
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["snap.age"]
    assert stat.S_IMODE((tmp_path / "c" / "snap.age").stat().st_mode) == 0o600


def test_write_to_a_file_path_is_a_storage_error(tmp_path):
    (tmp_path / "c").write_text("I am a file, not a directory")
    with pytest.raises(StorageError, match="cannot create"):
        LocalStore(tmp_path).open_writer("c/x")


def test_a_root_that_is_a_file_cannot_be_listed_or_written_and_says_so(tmp_path):
    root = tmp_path / "backups"
    root.write_text("a file where the backups should be")
    store = LocalStore(root)
    with pytest.raises(StorageError, match=f"cannot list .*: {root} is a file, not a directory"):
        list(store.list("c/snapshots/"))
    with pytest.raises(StorageError, match=f"cannot create .*: {root} is a file, not a directory"):
        store.open_writer("c/snapshots/x.age")
    # a store nothing was written to yet is empty, not broken
    assert list(LocalStore(tmp_path / "absent").list("c/snapshots/")) == []


def test_a_stray_temp_like_file_is_no_unfinished_write(tmp_path):
    # someone else's ".tmp-x" beside the backups: neither listed nor taken apart as one of ours
    store = LocalStore(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".tmp-x").write_bytes(b"not ours")
    writer = store.open_writer("c/a.bin")
    writer.write(b"partial")
    assert [info.key for info in store.unfinished("c/")] == ["c/a.bin"]
    store.abort_unfinished("c/a.bin")
    assert store.unfinished("c/") == []
    assert (tmp_path / "c" / ".tmp-x").read_bytes() == b"not ours"
    writer.abort()
