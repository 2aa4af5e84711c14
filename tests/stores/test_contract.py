"""The contract every store must keep; each store joins the `store` fixture's params."""

import os

import pytest

from etcdops.errors import NotFoundError, UsageError
from etcdops.stores.local import LocalStore
from etcdops.stores.s3 import S3Store
from etcdops.stores.s3_parts import MIN_PART_SIZE

# more than two parts of the S3 stores' part size: a multipart upload, not a single PUT
LARGE = 2 * MIN_PART_SIZE + 123_457


@pytest.fixture(params=["local", "s3-primary", "s3-replica"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    s3 = request.getfixturevalue("s3")
    location = s3.primary if request.param == "s3-primary" else s3.replica
    # S3's smallest part size, so that the 3 MiB objects below are single PUTs, LARGE is not
    return S3Store(location, request.param.removeprefix("s3-"), part_size=MIN_PART_SIZE)


def put_stream(store, key, chunks):
    writer = store.open_writer(key)
    for chunk in chunks:
        writer.write(chunk)
    writer.commit()


def test_stream_put_and_get(store):
    data = os.urandom(3 << 20)
    put_stream(store, "c/snapshots/a.bin", [data[i:i + 65536] for i in range(0, len(data), 65536)])
    with store.open_reader("c/snapshots/a.bin") as reader:
        assert reader.read() == data
    info = store.head("c/snapshots/a.bin")
    assert info.size == len(data)
    assert info.key == "c/snapshots/a.bin"


def test_object_is_invisible_until_commit_and_gone_after_abort(store):
    writer = store.open_writer("c/x.bin")
    writer.write(b"partial")
    assert store.head("c/x.bin") is None
    assert [i.key for i in store.list("c/")] == []
    writer.abort()
    assert store.head("c/x.bin") is None
    assert list(store.list("")) == []



def test_a_write_never_finished_is_listed_as_unfinished(store):
    writer = store.open_writer("c/snapshots/u.bin")
    writer.write(os.urandom(LARGE))  # parts on their way, for S3
    assert [i.key for i in store.unfinished("c/")] == ["c/snapshots/u.bin"]
    assert store.unfinished("d/") == []
    assert list(store.list("")) == []
    writer.abort()
    assert store.unfinished("") == []
    put_stream(store, "c/snapshots/u.bin", [b"complete"])
    assert store.unfinished("") == []


def test_abort_unfinished_drops_the_writes_to_that_key_only(store):
    keys = ("c/a.bin", "c/a.bin.more", "c/b.bin", "c/x-a.bin")
    writers = {key: store.open_writer(key) for key in keys}
    for writer in writers.values():
        writer.write(os.urandom(LARGE))
    store.abort_unfinished("c/a.bin")
    assert [i.key for i in store.unfinished("")] == ["c/a.bin.more", "c/b.bin", "c/x-a.bin"]
    store.abort_unfinished("c/never-written.bin")  # nothing to drop is not an error
    for writer in writers.values():
        writer.abort()
    assert store.unfinished("") == []

def test_overwrite_replaces_whole_object(store):
    store.put_bytes("c/m.json", b"first version, longer")
    store.put_bytes("c/m.json", b"second")
    assert store.get_bytes("c/m.json") == b"second"


def test_list_by_prefix_in_key_order(store):
    for key in ["c/snapshots/2026/01/02/b", "c/snapshots/2026/01/01/a", "d/snapshots/x", "c/other"]:
        store.put_bytes(key, key.encode())
    assert [i.key for i in store.list("c/snapshots/")] == [
        "c/snapshots/2026/01/01/a",
        "c/snapshots/2026/01/02/b",
    ]
    assert [i.key for i in store.list("nothing/")] == []


def test_missing_objects(store):
    assert store.head("c/none") is None
    with pytest.raises(NotFoundError):
        store.open_reader("c/none")
    with pytest.raises(NotFoundError):
        store.get_bytes("c/none")
    store.delete("c/none")  # deleting what is gone already is not an error


def test_delete(store):
    store.put_bytes("c/gone", b"x")
    store.delete("c/gone")
    assert store.head("c/gone") is None


def test_delete_many(store):
    keys = [f"c/{folder}/{name}" for folder in ("a", "b") for name in ("1", "2", "3")]
    for key in keys:
        store.put_bytes(key, key.encode())
    store.delete_many(["c/b/3", "c/a/1", "c/none", "c/a/3"])  # a missing key is no error
    assert [info.key for info in store.list("c/")] == ["c/a/2", "c/b/1", "c/b/2"]
    store.delete_many([])
    assert len(list(store.list("c/"))) == 3


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "", "a/b/", "sp ace"])
def test_keys_cannot_escape(store, key):
    with pytest.raises(UsageError):
        store.head(key)


def test_stream_of_many_parts_reads_back_in_pieces(store):
    data, mib = os.urandom(LARGE), 1 << 20
    put_stream(store, "c/snapshots/big.bin", [data[i:i + mib] for i in range(0, LARGE, mib)])
    assert store.head("c/snapshots/big.bin").size == LARGE
    pieces = []
    with store.open_reader("c/snapshots/big.bin") as reader:
        while piece := reader.read(mib):
            assert len(piece) <= mib
            pieces.append(piece)
    assert b"".join(pieces) == data


def test_abort_of_a_many_part_write_leaves_nothing(store):
    writer = store.open_writer("c/big.bin")
    writer.write(os.urandom(LARGE))
    assert store.head("c/big.bin") is None
    writer.abort()
    writer.abort()  # a second abort (an error path after a failed commit) is harmless
    assert store.head("c/big.bin") is None
    assert list(store.list("")) == []


def test_empty_object(store):
    put_stream(store, "c/empty", [])
    assert store.head("c/empty").size == 0
    assert store.get_bytes("c/empty") == b""


def test_writer_overwrite_keeps_old_object_until_commit(store):
    store.put_bytes("c/m.json", b"old")
    writer = store.open_writer("c/m.json")
    writer.write(b"new, longer")
    assert store.get_bytes("c/m.json") == b"old"
    writer.commit()
    assert store.get_bytes("c/m.json") == b"new, longer"
    writer.abort()  # abort after commit changes nothing
    assert store.get_bytes("c/m.json") == b"new, longer"
    aborted = store.open_writer("c/m.json")
    aborted.write(b"never")
    aborted.abort()
    assert store.get_bytes("c/m.json") == b"new, longer"


def test_list_reports_size_and_aware_time_and_matches_partial_names(store):
    store.put_bytes("c/snapshots/x.db", b"12345")
    store.put_bytes("c/snap-other", b"1")
    store.put_bytes("c/other", b"1")
    infos = list(store.list("c/snap"))
    assert [(i.key, i.size) for i in infos] == [("c/snap-other", 1), ("c/snapshots/x.db", 5)]
    assert all(i.modified.tzinfo is not None for i in infos)


def test_fingerprint_holds_across_reads_and_changes_with_any_rewrite(store):
    store.put_bytes("c/snapshots/f.bin", b"first bytes")
    first = store.head("c/snapshots/f.bin").fingerprint
    assert first
    with store.open_reader("c/snapshots/f.bin") as reader:
        reader.read()
    assert store.head("c/snapshots/f.bin").fingerprint == first
    [listed] = store.list("c/snapshots/")
    assert listed.fingerprint == first
    store.put_bytes("c/snapshots/f.bin", b"other bytes")  # same size, other content
    second = store.head("c/snapshots/f.bin").fingerprint
    assert second not in (None, first)
    put_stream(store, "c/snapshots/f.bin", [os.urandom(LARGE)])
    assert store.head("c/snapshots/f.bin").fingerprint not in (None, first, second)


def test_a_writer_commits_on_a_clean_exit_and_aborts_on_any_other(store):
    with store.open_writer("c/snapshots/kept.bin") as writer:
        writer.write(b"kept")
    assert store.get_bytes("c/snapshots/kept.bin") == b"kept"
    with pytest.raises(KeyboardInterrupt), store.open_writer("c/snapshots/gone.bin") as writer:
        writer.write(b"half")
        raise KeyboardInterrupt
    assert store.head("c/snapshots/gone.bin") is None
    assert store.unfinished("c/") == []
