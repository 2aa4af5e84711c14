"""`etcdops journal run` as systemd runs it, a process on a real etcd: SIGTERM publishes the
open segment and exits 0, SIGKILL loses at most the open interval, and of two journals one
writes while the other waits, then takes over once the first is killed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcdops.journal.base import newest_base
from etcdops.stores.configured import open_stores
from tests.fixtures.waiting import wait_for
from tests.journal.journaling import Writer, chain_in, history, journal_config, replayed


class Process:
    """`etcdops journal run -v` on a TOML config, its stderr in a file."""

    def __init__(self, toml: Path, log: Path) -> None:
        self.log = log
        env = dict(os.environ, ETCDOPS_CONFIG=str(toml))
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "etcdops", "journal", "run", "-v", "-o", "json"],
                stdout=subprocess.PIPE, stderr=err, env=env,
            )

    def text(self) -> str:
        return self.log.read_text()

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            assert self.process.poll() is None, self.text()
            found[:] = list(re.finditer(pattern, self.text()))
            return bool(found)

        wait_for(seen, f"{pattern!r} in the journal's log", timeout)
        return found[-1]

    def end(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def setup(journal_etcd, identity, tmp_path) -> Iterator[tuple]:
    config = journal_config(journal_etcd, identity, tmp_path)
    toml = tmp_path / "etcdops.toml"
    toml.write_text(
        f'cluster = "{config.cluster}"\n[etcd]\nendpoints = ["{journal_etcd.client_urls[0]}"]\n'
        f'[encryption]\nrecipients = ["{identity.recipient()}"]\n'
        f'[local]\ndir = "{config.local.dir}"\n[schedule]\nelection_ttl = "5s"\n'
        '[journal]\ninterval = "200ms"\n'
    )
    processes: list[Process] = []

    def start(name: str = "journal", interval: str = "200ms") -> Process:
        toml.write_text(toml.read_text().replace('interval = "200ms"', f'interval = "{interval}"'))
        processes.append(Process(toml, tmp_path / f"{name}.log"))
        return processes[-1]

    yield config, start
    for process in processes:
        process.close()


def chain_of(config):
    base = newest_base(open_stores(config), config.cluster)
    assert base is not None
    return base, chain_in(open_stores(config)["local"], config, base.backup_id, base.revision)


def test_sigterm_publishes_the_open_segment_and_exits_0(setup, client, identity):
    config, start = setup
    journal = start(interval="10m")  # no cut by time: only the stop cuts
    journal.wait_line(r"chain \S+ \(revision \d+\) from revision")
    txn = client.transactions
    client.transaction(compare=[], success=[
        txn.put(f"/registry/pods/default/p{n}", "x") for n in range(3)], failure=[])
    opened = int(journal.wait_line(r"a segment opens at revision (\d+)")[1])
    revision = client.get_response("/").header.revision
    assert opened == revision  # the transaction's revision, in the open segment
    assert journal.end(signal.SIGTERM) == 0
    base, chain = chain_of(config)
    assert chain.findings == () and chain.last_revision == revision
    [replayed_revision] = replayed(open_stores(config)["local"], chain, identity)
    assert len(replayed_revision.changes) == 3
    assert "no longer" not in journal.text()


def test_sigkill_loses_at_most_the_open_interval(setup, client, identity):
    config, start = setup
    journal = start()
    journal.wait_line(r"chain \S+ \(revision \d+\) from revision")
    writer = Writer(client).start()
    journal.wait_line(r"stored in the local store")
    # writes older than the margin below exist
    wait_for(lambda: len(writer.written) > 100
             and writer.moments[-1][0] - writer.moments[0][0] > 3.0, "3 s of writes")
    journal.process.kill()
    killed = time.monotonic()
    journal.process.wait(10)
    writer.finish()
    base, chain = chain_of(config)
    assert chain.findings == ()  # nothing half-published is listed
    store = open_stores(config)["local"]
    assert replayed(store, chain, identity) == history(config, base.revision + 1,
                                                       chain.last_revision)
    # written more than an interval (200 ms) and a margin for the seal and write (a loaded
    # machine's) before the kill: journaled
    older = [revision for moment, revision in writer.moments if moment < killed - 2.0]
    assert older and chain.last_revision >= max(older)


def test_two_journals_one_writes_the_other_takes_over_when_it_is_killed(
    setup, client, identity
):
    config, start = setup
    first = start("first")
    first.wait_line(r"chain \S+ \(revision \d+\) from revision")
    second = start("second")
    second.wait_line(r"is journaling cluster \S+ .*waiting to take over")
    writer = Writer(client).start()
    first.wait_line(r"stored in the local store")
    assert "stored in the" not in second.text()
    first.process.kill()
    first.process.wait(10)
    # its lease (5 s) expires, and the second one resumes after what the first stored
    second.wait_line(r"taking over", timeout=20)
    second.wait_line(r"from revision \d+: resumed")
    second.wait_line(r"stored in the local store")
    last = writer.finish()
    wait_for(lambda: chain_of(config)[1].last_revision >= last, "every write journaled")
    assert second.end(signal.SIGTERM) == 0
    base, chain = chain_of(config)
    assert chain.findings == ()
    assert replayed(open_stores(config)["local"], chain, identity) == history(
        config, base.revision + 1, chain.last_revision)
