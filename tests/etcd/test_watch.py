"""The watch stream against real etcd: whole revisions in order, checked against etcd's own
history; progress; compaction; fragments of a large catch-up; failover on a three-member
cluster when the watched member is killed; closing leaves no thread behind."""

from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcdops.errors import EtcdUnavailableError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.etcd.watch import (
    Change,
    ChangeKind,
    ChangeStream,
    Progress,
    Revision,
    WatchCompacted,
)
from tests.fixtures.waiting import wait_for

PUT, DELETE = ChangeKind.PUT, ChangeKind.DELETE


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One single-member cluster for the module: each test writes under its own prefix, from
    its own revision on."""
    with LocalCluster.single(tmp_path_factory.mktemp("watch") / "etcd") as cluster:
        yield cluster


@pytest.fixture
def session(etcd: LocalCluster) -> Iterator[EtcdSession]:
    with EtcdSession(etcd.etcd_config()) as session:
        yield session


def now(session: EtcdSession) -> int:
    return session.status(session.endpoints[0]).revision


def read(stream: ChangeStream, until: int, timeout: float = 15.0) -> list[Revision | Progress]:
    """Items until a Revision at or beyond `until`; the stream is closed if that takes longer
    than timeout, so a missing revision fails the test instead of hanging it."""
    guard = threading.Timer(timeout, stream.close)
    guard.start()
    items: list[Revision | Progress] = []
    try:
        for item in stream:
            items.append(item)
            if isinstance(item, Revision) and item.revision >= until:
                return items
    finally:
        guard.cancel()
    raise AssertionError(f"the stream ended at revision {stream.position}, before {until}")


def revisions(items: list[Revision | Progress]) -> list[Revision]:
    return [item for item in items if isinstance(item, Revision)]


def test_every_put_delete_and_transaction_arrives_as_one_revision(
    etcd: LocalCluster, session: EtcdSession, etcd3_client
) -> None:
    client = etcd3_client(etcd.client_urls[0])
    a, b, c = b"/watch/kinds/a", b"/watch/kinds/b", b"/watch/kinds/c"
    lease = client.lease(600)
    first = now(session) + 1
    client.put(a, b"1")
    client.put(a, b"2", lease=lease)
    client.transaction(compare=[], success=[
        client.transactions.put(b, b"x"), client.transactions.put(c, b"y"),
        client.transactions.delete(a),
    ], failure=[])
    client.delete(b)
    with session.changes(first) as stream:
        items = read(stream, first + 3)
    assert items == [
        Revision(first, (Change(PUT, a, b"1", first, first, 1, 0),)),
        Revision(first + 1, (Change(PUT, a, b"2", first, first + 1, 2, lease.id),)),
        Revision(first + 2, (
            Change(PUT, b, b"x", first + 2, first + 2, 1, 0),
            Change(PUT, c, b"y", first + 2, first + 2, 1, 0),
            Change(DELETE, a, b"", 0, first + 2, 0, 0),
        )),
        Revision(first + 3, (Change(DELETE, b, b"", 0, first + 3, 0, 0),)),
    ]


def random_writes(session: EtcdSession, rng: random.Random, count: int, prefix: bytes,
                  written: dict[int, set[tuple[bytes, ChangeKind, bytes]]]) -> None:
    """count writes of random shapes (one put, a transaction of puts, deletes of keys that
    exist), each recorded by the revision etcd gave it."""
    for step in range(count):
        live = sorted({key for changes in written.values() for key, kind, _ in changes
                       if kind is PUT} - {key for changes in written.values()
                                          for key, kind, _ in changes if kind is DELETE})
        if live and rng.random() < 0.2:
            keys = rng.sample(live, min(len(live), rng.randint(1, 3)))
            written[session.delete_keys(keys)] = {(key, DELETE, b"") for key in keys}
            continue
        keys = rng.sample(range(40), rng.randint(1, 4))
        items = [(prefix + b"%d" % key, b"v%d-%d" % (step, key)) for key in keys]
        written[session.put_many(items)] = {(key, PUT, value) for key, value in items}


def test_history_then_live_equals_what_was_written_and_etcd_own_history(
    etcd: LocalCluster, session: EtcdSession, etcd3_client
) -> None:
    client = etcd3_client(etcd.client_urls[0])
    rng = random.Random(13)
    written: dict[int, set[tuple[bytes, ChangeKind, bytes]]] = {}
    first = now(session) + 1
    random_writes(session, rng, 60, b"/watch/history/", written)  # before the watch: replayed
    with session.changes(first) as stream:
        items = read(stream, max(written))
        live = threading.Thread(
            target=random_writes, args=(session, rng, 60, b"/watch/history/", written)
        )
        live.start()  # while the stream is open: delivered live
        live.join()
        items += read(stream, max(written))
    delivered = revisions(items)
    assert [r.revision for r in delivered] == list(range(first, max(written) + 1))
    assert {r.revision: {(c.key, c.kind, c.value) for c in r.changes}
            for r in delivered} == written
    for revision in delivered:  # each change as etcd's history has it at its revision
        for change in revision.changes:
            at = client.get_response(change.key, revision=revision.revision).kvs
            if change.kind is DELETE:
                assert len(at) == 0
                assert len(client.get_response(change.key, revision=revision.revision - 1).kvs)
                continue
            assert [(kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                    for kv in at] == [(change.value, change.create_revision,
                                       change.mod_revision, change.version, change.lease)]


def test_progress_says_nothing_happened_and_never_overtakes_a_revision(
    session: EtcdSession,
) -> None:
    current = now(session)
    with session.changes(current + 1) as stream:
        stream.progress()
        assert read_one(stream) == Progress(current)  # no writes: caught up at the current one
        last = session.put_revisions(session.endpoints[0], b"/watch/progress/burst", 200)
        # asked while most of the burst is still to be delivered: etcd 3.5 may answer before
        # the burst's last events, with its revision then, the burst's last
        stream.progress()
        items = read(stream, last)
        while not isinstance(items[-1], Progress):
            items.append(read_one(stream))
    assert [r.revision for r in revisions(items)] == list(range(current + 1, last + 1))
    assert [item for item in items if isinstance(item, Progress)] == [Progress(last)]


def read_one(stream: ChangeStream, timeout: float = 15.0) -> Revision | Progress:
    guard = threading.Timer(timeout, stream.close)
    guard.start()
    try:
        return next(stream)
    finally:
        guard.cancel()


def test_a_compacted_start_raises_with_the_compact_revision(session: EtcdSession) -> None:
    first = session.put_many([(b"/watch/compacted/a", b"1")])
    compacted = session.put_many([(b"/watch/compacted/a", b"2")])
    assert session.compact(compacted, physical=True, timeout=5.0)
    with session.changes(first) as stream, pytest.raises(WatchCompacted) as raised:
        read(stream, compacted)
    assert raised.value.compact_revision == compacted
    assert raised.value.revision == first
    assert f"revision {first}" in raised.value.message
    # from the compact revision on, the history is still there
    with session.changes(compacted) as stream:
        assert revisions(read(stream, compacted))[0].changes[0].value == b"2"


def test_a_catch_up_larger_than_grpc_messages_arrives_in_whole_revisions(
    session: EtcdSession,
) -> None:
    # 6 transactions of three 450 KiB values: 8 MiB that etcd would send as one message, over
    # grpc's 4 MiB receive limit; its fragments (2 MiB) cut revisions in the middle
    value = b"z" * (450 * 1024)
    written = {}
    for txn in range(6):
        items = [(b"/watch/large/%d-%d" % (txn, key), value + b"%d" % key) for key in range(3)]
        written[session.put_many(items)] = items
    with session.changes(min(written)) as stream:
        delivered = revisions(read(stream, max(written)))
    assert {r.revision: [(c.key, c.value) for c in r.changes] for r in delivered} == written


def test_closing_from_another_thread_ends_the_stream_and_its_threads(
    session: EtcdSession,
) -> None:
    current = now(session)  # the session's own calls done before the threads are counted
    before = set(threading.enumerate())
    stream = session.changes(current + 1)
    written = session.put_many([(b"/watch/close/a", b"1")])
    assert read_one(stream).revision == written
    closer = threading.Timer(0.3, stream.close)  # while next() waits for a change
    closer.start()
    started = time.monotonic()
    assert list(stream) == []
    assert time.monotonic() - started < 5
    wait_for(lambda: set(threading.enumerate()) <= before, "the watch's threads end", 10)
    # leaving a with block in the middle of the stream ends it the same way
    with session.changes(written) as stream:
        assert read_one(stream).revision == written
    wait_for(lambda: set(threading.enumerate()) <= before, "the watch's threads end", 10)


def test_no_endpoint_answering_is_etcd_unavailable(unreachable_endpoint: str, etcd) -> None:
    config = etcd.etcd_config(endpoints=(unreachable_endpoint,), dial_timeout=0.3,
                              command_timeout=1.0)
    started = time.monotonic()
    with EtcdSession(config) as session, session.changes(5) as stream, pytest.raises(
        EtcdUnavailableError
    ) as raised:
        next(stream)
    assert time.monotonic() - started < 5
    assert "resumed the watch from revision 5" in raised.value.message
    assert unreachable_endpoint in raised.value.message


def test_a_killed_member_is_replaced_and_a_lost_quorum_ends_the_watch(tmp_path: Path) -> None:
    with LocalCluster.three(tmp_path / "etcd3") as cluster:
        config = cluster.etcd_config(dial_timeout=1.0, command_timeout=3.0)
        with EtcdSession(config) as probe:
            leader = next(s.endpoint for s in probe.statuses() if s.is_leader)
            first = now(probe) + 1
        # the leader first: killing it leaves the others without a leader for a moment too
        endpoints = (leader, *(url for url in cluster.client_urls if url != leader))
        written: dict[int, bytes] = {}
        stop = threading.Event()
        writer = threading.Thread(target=write_until, args=(config, stop, written))
        with EtcdSession(cluster.etcd_config(endpoints=endpoints, command_timeout=3.0,
                                             dial_timeout=1.0)) as session:
            stream = session.changes(first)
            writer.start()
            try:
                wait_for(lambda: len(written) >= 20, "20 writes")
                items = read(stream, min(written) + 19)
                killed = next(m for m in cluster.members if m.client_url == stream.endpoint)
                assert killed.client_url == leader and killed.process is not None
                killed.process.kill()
                killed.process.wait()
                count = len(written)
                wait_for(lambda: len(written) >= count + 30, "30 writes after the kill")
            finally:
                stop.set()
                writer.join()
            items += read(stream, max(written))
            delivered = revisions(items)
            # every revision exactly once, in order: the watch sees every key
            assert [r.revision for r in delivered] == list(range(first, max(written) + 1))
            values = {r.revision: r.changes[0].value for r in delivered}
            assert {rev: values[rev] for rev in written} == written
            assert stream.endpoint != killed.client_url
            # one member of three left: no leader, etcd cancels the stream, nobody resumes it
            next(m for m in cluster.members if m.running and m.client_url != stream.endpoint
                 ).process.kill()
            started = time.monotonic()
            with pytest.raises(EtcdUnavailableError) as raised:
                read(stream, max(written) + 1, timeout=30)
            assert time.monotonic() - started < 25
            assert f"from revision {max(written) + 1}" in raised.value.message
            stream.close()


def write_until(config, stop: threading.Event, written: dict[int, bytes]) -> None:
    """One put at a time until stop, each value recorded by its revision; failures (no
    leader for a moment) retried."""
    with EtcdSession(config) as session:
        count = 0
        while not stop.is_set():
            value = b"w%d" % count
            try:
                written[session.put_many([(b"/watch/failover/key", value)])] = value
                count += 1
            except EtcdUnavailableError:
                stop.wait(0.05)


def test_a_frozen_member_is_given_up_after_command_timeout(etcd: LocalCluster) -> None:
    config = etcd.etcd_config(command_timeout=1.0)
    member = etcd.members[0]
    assert member.process is not None
    with EtcdSession(config) as session, session.changes(now(session) + 1,
                                                         progress_every=0.2) as stream:
        written = session.put_many([(b"/watch/frozen/a", b"1")])
        assert read_one(stream).revision == written
        member.process.send_signal(signal.SIGSTOP)  # the connection stays open, silent
        try:
            started = time.monotonic()
            with pytest.raises(EtcdUnavailableError) as raised:
                read(stream, written + 1)
            assert time.monotonic() - started < 6
        finally:
            member.process.send_signal(signal.SIGCONT)
    assert "did not answer the watch within 1s" in raised.value.message


def test_a_restarted_member_resumes_the_watch_with_a_new_auth_token(etcd_auth) -> None:
    cluster, config, _ = etcd_auth
    with EtcdSession(config) as session:
        first = session.put_many([(b"/watch/auth/a", b"1")])
        with session.changes(first) as stream:
            assert read_one(stream).revision == first
            cluster.stop()  # its simple tokens go with it
            cluster.start()
            with EtcdSession(config) as writer:  # a token of the restarted member
                second = writer.put_many([(b"/watch/auth/a", b"2")])
            items = read(stream, second)
    assert [(r.revision, r.changes[0].value) for r in revisions(items)] == [(second, b"2")]


def test_a_user_who_may_not_read_every_key_is_refused(etcd_auth, tmp_path: Path) -> None:
    cluster, config, password = etcd_auth
    etcdctl = [str(find_binary("etcdctl")), f"--endpoints={cluster.client_urls[0]}",
               f"--user=root:{password}"]
    subprocess.run([*etcdctl, "user", "add", "reader:reader-pw"], check=True,
                   capture_output=True, timeout=30)
    password_file = tmp_path / "reader-password"
    password_file.write_text("reader-pw\n")
    reader = dataclasses.replace(config, user="reader", password_file=password_file)
    with EtcdSession(reader) as session, session.changes(1) as stream, pytest.raises(
        EtcdUnavailableError
    ) as raised:
        next(stream)
    assert "refused to watch every key to user 'reader'" in raised.value.message
    assert "root role" in (raised.value.hint or "")
