"""KV calls against real etcd processes: counting keys, and what etcd3 reads back."""

from __future__ import annotations

from etcdops.etcd.session import EtcdSession


def test_count_keys_now_and_at_an_older_revision(etcd_loaded) -> None:
    cluster, objects = etcd_loaded
    with EtcdSession(cluster.etcd_config()) as session:
        before = session.status(cluster.client_urls[0]).revision
        assert session.count_keys() == len(objects)
        revision = session.put_many([(b"/registry/pods/default/extra", b"{}")])
        assert revision == before + 1
        assert session.count_keys() == len(objects) + 1
        assert session.count_keys(revision=before) == len(objects)


def test_the_etcd3_library_sees_the_same_data(etcd_loaded, etcd3_client) -> None:
    cluster, objects = etcd_loaded
    client = etcd3_client(cluster.client_urls[0])
    assert {meta.key: value for value, meta in client.get_prefix("/registry/")} == objects


def test_a_compacted_revision_is_no_longer_readable(etcd_single) -> None:
    with EtcdSession(etcd_single.etcd_config()) as session:
        first = session.put_many([(b"/registry/pods/default/a", b"1")])
        second = session.put_many([(b"/registry/pods/default/a", b"2")])
        assert session.readable_at(first)
        assert session.compact(second, physical=True, timeout=5.0)
        assert not session.readable_at(first)
        assert session.readable_at(second)
        # compacting to a revision etcd already dropped is no error, only nothing to do
        assert not session.compact(first, physical=False, timeout=5.0)


def test_prefix_pages_read_one_prefix_with_values_at_one_revision(etcd_loaded) -> None:
    cluster, objects = etcd_loaded
    prefix = b"/registry/pods/"
    pods = {key: value for key, value in objects.items() if key.startswith(prefix)}
    with EtcdSession(cluster.etcd_config()) as session:
        pages = session.prefix_pages(prefix, page_size=9)
        first = next(pages)
        session.put_many([(b"/registry/pods/zz/after-the-first-page", b"{}")])
        rest = list(pages)
        assert list(session.prefix_pages(b"/registry/nothing-here/")) == []
    read = [kv for page in [first, *rest] for kv in page]
    assert [(kv.key, kv.value) for kv in read] == sorted(pods.items())  # pinned, key order
    assert all(1 <= len(page) <= 9 for page in [first, *rest]) and len(rest) > 2
