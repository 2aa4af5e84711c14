"""The contract every store must keep; each store joins the `store` fixture's params."""

import os

import pytest

from etcdops.errors import NotFoundError, UsageError
from etcdops.stores.local import LocalStore


@pytest.fixture(params=["local"])
def store(request, tmp_path):
    return LocalStore(tmp_path / "store")


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


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "", "a/b/", "sp ace"])
def test_keys_cannot_escape(store, key):
    with pytest.raises(UsageError):
        store.head(key)
