"""The election of a job's taker against a real etcd: create-if-absent under a lease, the lease
kept alive past its TTL (through a hung member too), revoked, handed over to a record, and lost
(noticed by its expiry, with the run's log fields)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count

import pytest

from etcdops.errors import EtcdUnavailableError
from etcdops.etcd.election import Holder, Taken, Term, election_key
from etcdops.etcd.local import LocalCluster, LocalEtcd
from etcdops.etcd.session import EtcdSession
from etcdops.report import log_scope, note, scope_fields
from tests.faultproxy import FaultProxy
from tests.fixtures.waiting import wait_for

_keys = count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One member for the module: each test elects under keys of its own."""
    with LocalCluster.single(tmp_path_factory.mktemp("election")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three members, for the tests that stop one."""
    with LocalCluster.three(tmp_path_factory.mktemp("election-three")) as cluster:
        yield cluster


@contextlib.contextmanager
def hung(member: LocalEtcd) -> Iterator[None]:
    """The member stopped (SIGSTOP): its port still accepts connections, nothing answers."""
    assert member.process is not None
    os.kill(member.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(member.process.pid, signal.SIGCONT)


@pytest.fixture
def session(etcd: LocalCluster) -> Iterator[EtcdSession]:
    with EtcdSession(etcd.etcd_config()) as opened:
        yield opened


@pytest.fixture
def key() -> bytes:
    return f"/etcdops/periods/test/job/{next(_keys)}".encode()


def test_only_the_first_campaign_takes_the_key_and_release_frees_it(etcd, session, key):
    leases_before = set(session.lease_ids(etcd.client_urls[0]))
    with EtcdSession(etcd.etcd_config()) as other:
        term = session.campaign(key, b"node-a", ttl=10)
        assert isinstance(term, Term)
        lost = other.campaign(key, b"node-b", ttl=10)
        assert lost == Taken(b"node-a", term.create_revision)
        # the loser's lease was revoked at once: only the winner's is left
        assert set(session.lease_ids(etcd.client_urls[0])) - leases_before == {term.lease}
        term.release()
        assert session.holder(key) is None
        assert term.lease not in session.lease_ids(etcd.client_urls[0])
        again = other.campaign(key, b"node-b", ttl=10)
        assert isinstance(again, Term)
        assert other.holder(key) == Taken(b"node-b", again.create_revision)
        again.release()


def test_of_many_concurrent_campaigns_exactly_one_wins(etcd, key):
    contenders = 8
    barrier = threading.Barrier(contenders)
    outcomes: list[Term | Taken] = []
    sessions = [EtcdSession(etcd.etcd_config()) for _ in range(contenders)]

    def campaign(index: int) -> None:
        sessions[index].holder(key)  # connect first, so that the campaigns start together
        barrier.wait()
        outcomes.append(sessions[index].campaign(key, f"node-{index}".encode(), ttl=10))

    threads = [threading.Thread(target=campaign, args=(i,)) for i in range(contenders)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        winners = [o for o in outcomes if isinstance(o, Term)]
        assert len(outcomes) == contenders and len(winners) == 1
        taken = {o for o in outcomes if isinstance(o, Taken)}
        assert taken == {sessions[0].holder(key)}
        winners[0].release()
    finally:
        for opened in sessions:
            opened.close()


def test_the_keep_alive_keeps_the_key_past_its_ttl_where_a_bare_lease_expires(session, key):
    since = time.monotonic()
    # a TTL long enough that a loaded machine's stall is not a missed renewal
    term = session.campaign(key, b"kept", ttl=4)
    assert isinstance(term, Term)
    bare_key = key + b"-bare"
    bare, ttl = session.grant_lease(4)
    assert isinstance(session.put_if_absent(bare_key, b"bare", bare), int)

    def bare_gone() -> bool:
        assert session.holder(key) is not None, "the kept key expired"
        return session.holder(bare_key) is None

    # the same TTL: the lease nobody renews takes its key with it, the kept one does not
    wait_for(bare_gone, "the bare lease's key expiring", timeout=4 * ttl)

    def kept_for(seconds: float) -> bool:
        assert session.holder(key) is not None, "the kept key expired"
        return time.monotonic() - since > seconds

    wait_for(lambda: kept_for(2 * term.kept.ttl), "two TTLs passing", timeout=3 * term.kept.ttl)
    assert term.lost is None
    term.release()
    assert session.holder(key) is None


def test_settle_moves_the_key_to_a_lease_of_its_own_with_the_new_value(
    etcd, session, key, etcd3_client
):
    term = session.campaign(key, b"running", ttl=5)
    assert isinstance(term, Term)
    assert term.settle(b"done", ttl=120)
    assert session.holder(key) == Taken(b"done", term.create_revision)
    _, meta = etcd3_client(etcd.client_urls[0]).get(key)
    assert meta.lease_id not in (0, term.lease)
    assert term.lease not in session.lease_ids(etcd.client_urls[0])
    assert meta.lease_id in session.lease_ids(etcd.client_urls[0])
    session.revoke_lease(meta.lease_id)


def test_a_lost_lease_is_noticed_and_settle_then_writes_nothing(etcd, session, key):
    noticed: list[str] = []
    term = session.campaign(key, b"node-a", ttl=3, on_lost=noticed.append)
    assert isinstance(term, Term)
    with EtcdSession(etcd.etcd_config()) as other:
        # as when node a stalled past its TTL: etcd drops the lease, node b takes the key
        assert other.revoke_lease(term.lease)
        assert not other.revoke_lease(term.lease)  # a lease already gone is no error
        winner = other.campaign(key, b"node-b", ttl=10)
        assert isinstance(winner, Term)
        wait_for(lambda: bool(noticed), "the keep-alive noticing", timeout=2 * term.kept.ttl)
        assert term.lost == noticed[0] and "expired or was revoked" in noticed[0]
        leases = set(session.lease_ids(etcd.client_urls[0]))
        assert not term.settle(b"node-a done", ttl=60)
        assert other.holder(key) == Taken(b"node-b", winner.create_revision)
        assert set(session.lease_ids(etcd.client_urls[0])) == leases  # the new lease revoked
        winner.release()


def test_a_holder_reads_back_what_it_wrote_and_names_a_foreign_value_too() -> None:
    started = datetime(2026, 1, 15, 3, 0, 5, tzinfo=UTC)
    me = Holder.me(started)
    assert (me.host, me.pid) == (socket.gethostname(), os.getpid())
    done = Holder("cp-2", 4242, started, "20260115T030005Z-0a0b0c", started)
    assert Holder.from_json(done.to_json()) == done
    assert f"{done.who}{done.since}" == "cp-2 (pid 4242) since 2026-01-15 03:00:05Z"
    foreign = Holder.from_json(b"locked by a script")
    assert foreign.host == "an unknown holder (b'locked by a script')" and foreign.since == ""
    assert election_key("prod", "snapshot", "2026-01-15T03:00:00Z") == (
        b"/etcdops/periods/prod/snapshot/2026-01-15T03:00:00Z"
    )


def test_let_go_frees_the_key_and_says_why_when_it_cannot(etcd, session, key) -> None:
    term = session.campaign(key, b"node-a", ttl=5)
    assert isinstance(term, Term)
    assert term.let_go() is None
    assert session.holder(key) is None
    host, port = etcd.client_urls[0].removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    with EtcdSession(etcd.etcd_config(endpoints=(proxy.url,), dial_timeout=2.0)) as far:
        held = far.campaign(key, b"node-a", ttl=5)
        assert isinstance(held, Term)
        proxy.close()  # etcd unreachable from this node from now on: no exception, a reason
        why = held.let_go()
    assert why is not None
    assert why.endswith(f"; it is free once its lease of {held.kept.ttl}s expires"), why
    wait_for(lambda: session.holder(key) is None, "the lease expiring", timeout=3 * held.kept.ttl)


def test_a_hung_member_costs_a_renewal_not_the_lease(three, key) -> None:
    noticed: list[str] = []
    # the hung member first, as on its own node; a renewal waiting command_timeout (30 s) on
    # it would outlast the 5 s lease
    with EtcdSession(three.etcd_config()) as session, EtcdSession(
        three.etcd_config(endpoints=tuple(three.client_urls[1:]))
    ) as others:
        term = session.campaign(key, b"node-a", ttl=5, on_lost=noticed.append)
        assert isinstance(term, Term) and term.value == b"node-a"
        with hung(three.members[0]):
            since = time.monotonic()

            def held_for(seconds: float) -> bool:
                with contextlib.suppress(EtcdUnavailableError):  # a leader election under way
                    assert others.holder(key) is not None, "the key expired"
                return time.monotonic() - since > seconds

            wait_for(lambda: held_for(2 * term.kept.ttl), "two TTLs passing",
                     timeout=3 * term.kept.ttl)
        # the same key, never expired and taken again: renewed through the other members
        assert others.holder(key) == Taken(b"node-a", term.create_revision)
        assert noticed == [] and term.lost is None
        term.release()
        assert others.holder(key) is None


def test_a_lease_no_member_renews_is_lost_at_its_expiry_not_when_a_call_times_out(
    three, key
) -> None:
    noticed: list[tuple[float, str]] = []
    member = three.members[0]
    with EtcdSession(member.etcd_config()) as session:  # command_timeout: 30 s
        asked = time.monotonic()
        term = session.campaign(
            key, b"node-a", ttl=4, on_lost=lambda why: noticed.append((time.monotonic(), why))
        )
        assert isinstance(term, Term)
        with hung(member):
            wait_for(lambda: noticed, "the lease counted lost", timeout=3 * term.kept.ttl)
        lost_at, why = noticed[0]
        # by the expiry (the margin a loaded machine's late wake-up), not after the 30 s
        # command timeout: the saver is told about when another node can take the key
        assert lost_at - asked <= term.kept.ttl + 3.0, lost_at - asked
        assert why.startswith(f"lease {term.lease:x} could not be renewed before it expired: ")
        assert "did not finish a lease keep-alive within" in why, why
        assert term.lost == why
        term.let_go()


def test_on_lost_runs_with_the_log_fields_of_the_run_that_campaigned(session, key) -> None:
    seen: list[dict] = []
    with log_scope(cluster="prod", command="snapshot save"):
        term = session.campaign(key, b"node-a", ttl=3,
                                on_lost=lambda why: seen.append(scope_fields()))
        assert isinstance(term, Term)
        note(backup_id="20260115T030005Z-0a0b0c")  # known once the save is under way
        assert session.revoke_lease(term.lease)  # as etcd does to a lease that lapsed
        wait_for(lambda: seen, "the keep-alive noticing", timeout=2 * term.kept.ttl)
    assert seen == [{"cluster": "prod", "command": "snapshot save",
                     "backup_id": "20260115T030005Z-0a0b0c"}]
