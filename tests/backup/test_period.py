"""One backup per cluster per period across nodes: `etcdops snapshot save` processes, one per
"node" (each with its own local store, as on its own host), against one three-member etcd."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pytest
from typer.testing import CliRunner

from etcdops.backup import period as period_module
from etcdops.backup.period import UNELECTED, Period, save_once_per_period
from etcdops.cli.main import app
from etcdops.config import Config, EncryptionConfig, LocalConfig, S3Config
from etcdops.config.settings import MetricsConfig, ScheduleConfig
from etcdops.errors import EtcdUnavailableError
from etcdops.etcd.election import Holder, Term
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.metrics.textfile import textfile_path
from tests.faultproxy import FaultProxy, Faults
from tests.fixtures.etcd import fill_until_nospace
from tests.metrics.test_textfile import samples

EVERY = 7 * 86400.0  # snapshot_every: a period no test run straddles
TTL = 5  # election_ttl, the shortest the configuration allows
# enough data that a save through the slow proxy streams for seconds
FILL_VALUE = b"v" * (32 * 1024)
FILL_BATCHES, FILL_BATCH = 4, 16


class Setup(NamedTuple):
    etcd: LocalCluster
    base: Path
    recipient: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A three-member cluster holding 2 MiB, and an age recipient, for the whole module."""
    from etcdops.crypto.keys import generate_identity_file

    base = tmp_path_factory.mktemp("period")
    recipient = str(generate_identity_file(base / "identity.txt"))
    with LocalCluster.three(base / "etcd") as etcd:
        with EtcdSession(etcd.etcd_config()) as session:
            for batch in range(FILL_BATCHES):
                session.put_many([
                    (f"/registry/configmaps/fill/{batch}-{i}".encode(), FILL_VALUE)
                    for i in range(FILL_BATCH)
                ])
        yield Setup(etcd, base, recipient)


class Node(NamedTuple):
    """One control-plane node's etcdops: its config file and its own local store."""

    toml: Path
    backups: Path

    def save(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "etcdops", "snapshot", "save", "--config", str(self.toml),
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def manifests(self) -> list[Path]:
        return sorted(self.backups.rglob("*.manifest.json"))


def nodes(setup: Setup, cluster: str, endpoints: list[str] | None = None, extra: str = "",
          count: int = 3) -> list[Node]:
    """count nodes of one cluster; each lists its own member first, as a node's config would."""
    made = []
    for index in range(count):
        urls = endpoints or setup.etcd.client_urls[index:] + setup.etcd.client_urls[:index]
        home = setup.base / cluster / f"node-{index}"
        home.mkdir(parents=True, exist_ok=True)
        toml = home / "etcdops.toml"
        toml.write_text(
            f'cluster = "{cluster}"\n'
            f"[etcd]\nendpoints = {json.dumps(urls)}\ndial_timeout = \"2s\"\n"
            f'[encryption]\nrecipients = ["{setup.recipient}"]\n'
            f'[local]\ndir = "{home / "backups"}"\n'
            f'[schedule]\nsnapshot_every = "{int(EVERY)}s"\nelection_ttl = "{TTL}s"\n'
            + extra
        )
        made.append(Node(toml, home / "backups"))
    return made


def finished(process: subprocess.Popen[str]) -> tuple[int, dict, str]:
    """The exit code, the JSON document and stderr of a save run with -o json."""
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, json.loads(stdout), stderr


def period_key(cluster: str) -> bytes:
    return Period.of(cluster, datetime.now(UTC), EVERY).key


def holder(setup: Setup, cluster: str) -> dict | None:
    with EtcdSession(setup.etcd.etcd_config()) as session:
        taken = session.holder(period_key(cluster))
    return json.loads(taken.value) if taken else None



def fresh_cluster(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"  # a cluster of its own: a period no one took yet


def test_three_nodes_saving_at_once_take_exactly_one_backup_each_round(setup):
    for round_ in range(3):
        cluster = fresh_cluster(f"round{round_}")
        group = nodes(setup, cluster)
        processes = [node.save("-o", "json") for node in group]  # the same second, every node
        runs = [finished(process) for process in processes]
        assert [code for code, _, _ in runs] == [0, 0, 0], [stderr for _, _, stderr in runs]
        saved = [(p, doc) for p, (_, doc, _) in zip(processes, runs, strict=True)
                 if not doc["skipped"]]
        assert len(saved) == 1, runs
        winner, backup = saved[0]
        assert backup["elected"] and backup["id"]
        assert sum(len(node.manifests()) for node in group) == 1
        for _, doc, _ in runs:
            if doc["skipped"]:
                # each loser names the winner, whether it was still saving or done
                assert doc["holder"]["pid"] == winner.pid and doc["holder"]["host"]
                assert doc["backup"] is None
                assert doc["period"]["key"] == period_key(cluster).decode()
        # the period stays done after the save, with its backup, for every node
        assert holder(setup, cluster)["backup_id"] == backup["id"]
        late = group[round_].save()
        stdout, stderr = late.communicate(timeout=60)
        assert late.returncode == 0, stderr
        assert stdout.strip() == (
            f"period {Period.of(cluster, datetime.now(UTC), EVERY).label} of cluster {cluster} "
            f"already has backup {backup['id']} by {socket.gethostname()} (pid {winner.pid}): "
            "nothing to do"
        )
        assert sum(len(node.manifests()) for node in group) == 1


WAITING = "waiting for it to finish or its lease to expire"


def read_until(process: subprocess.Popen[str], text: str) -> str:
    """The first line of the process's stderr that holds text (the rest stays to be read)."""
    for line in process.stderr:
        if text in line:
            return line
    pytest.fail(f"no {text!r} line: {process.communicate()}")


@contextlib.contextmanager
def slow_winner(setup: Setup, cluster: str) -> Iterator[tuple[subprocess.Popen[str], Node,
                                                                FaultProxy]]:
    """A node saving through a slow proxy, already streaming (so holding the period)."""
    host, port = setup.etcd.client_urls[0].removeprefix("http://").split(":")
    slow = FaultProxy(host, int(port), Faults(delay_per_chunk=0.2))
    doomed, = nodes(setup, cluster, endpoints=[slow.url], count=1)
    process = doomed.save("-o", "json")
    try:
        read_until(process, "streaming snapshot")
        assert holder(setup, cluster)["pid"] == process.pid
        yield process, doomed, slow
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
        slow.close()


def test_a_winner_killed_mid_save_is_taken_over_by_a_node_waiting_once_its_lease_expires(setup):
    cluster = fresh_cluster("killed")
    other = nodes(setup, cluster)[1]
    with slow_winner(setup, cluster) as (process, doomed, _):
        waiter = other.save("-o", "json")
        line = read_until(waiter, WAITING)
        assert f"(pid {process.pid}) since " in line
        # --no-wait: what the period's key says, at once
        started = time.monotonic()
        refused = CliRunner().invoke(app, ["snapshot", "save", "-o", "json", "--no-wait",
                                           "--config", str(other.toml)])
        assert time.monotonic() - started < TTL
        assert refused.exit_code == 0, refused.output
        doc = json.loads(refused.stdout)
        assert doc["skipped"] and doc["holder"]["pid"] == process.pid
        assert doc["holder"]["backup_id"] is None and doc["waited_seconds"] == 0
        assert "already taken by" in doc["message"]
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
        killed_at = datetime.now(UTC)
        assert holder(setup, cluster)["pid"] == process.pid  # the dead node's lease lives on
    code, doc, stderr = finished(waiter)
    assert code == 0, stderr
    assert not doc["skipped"] and doc["elected"] and doc["waited_seconds"] > 0
    assert [m.name for m in other.manifests()] == [f"{doc['id']}.manifest.json"]
    assert doomed.manifests() == []
    assert holder(setup, cluster)["backup_id"] == doc["id"]
    assert holder(setup, cluster)["pid"] == waiter.pid
    # since it took the key, not since it started waiting
    assert datetime.fromisoformat(holder(setup, cluster)["started_at"]) >= killed_at


def test_a_winner_that_fails_mid_save_is_taken_over_at_once_by_a_node_waiting(setup):
    cluster = fresh_cluster("broken")
    other = nodes(setup, cluster)[1]
    with slow_winner(setup, cluster) as (process, doomed, slow):
        waiter = other.save("-o", "json")
        read_until(waiter, WAITING)
        # one byte of the stream damaged: the trailer's check (or gRPC's framing) fails the save
        slow.faults.flip_at = slow.server_bytes + 1024
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode not in (0, 3), stderr
        assert "gave up period" in stderr
        # revoked as it failed, not left to expire: free, or already the waiter's
        taken = holder(setup, cluster)
        assert taken is None or taken["pid"] == waiter.pid
    code, doc, stderr = finished(waiter)
    assert code == 0, stderr
    assert not doc["skipped"] and doc["elected"]
    assert [m.name for m in other.manifests()] == [f"{doc['id']}.manifest.json"]
    assert doomed.manifests() == []


def campaign_as_another_node(setup: Setup, cluster: str, session: EtcdSession) -> Term:
    someone = Holder("cp-test", 4242, datetime.now(UTC))
    term = session.campaign(period_key(cluster), someone.to_json(), TTL)
    assert isinstance(term, Term)
    return term


def test_a_waiting_node_names_the_backup_the_holder_settles_with(setup):
    cluster = fresh_cluster("settled")
    node, interrupted = nodes(setup, cluster, count=2)
    with EtcdSession(setup.etcd.etcd_config()) as session:
        term = campaign_as_another_node(setup, cluster, session)
        waiters = [node.save("-o", "json"), interrupted.save("-o", "json")]
        for waiter in waiters:
            assert "held by cp-test (pid 4242) since " in read_until(waiter, WAITING)
        # a waiting node stopped by systemd: the CLI's interrupted exit, nothing to clean up
        waiters[1].send_signal(signal.SIGTERM)
        stdout, stderr = waiters[1].communicate(timeout=30)
        assert waiters[1].returncode == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        done = Holder("cp-test", 4242, datetime.now(UTC), "20260101T000000Z-0a0b0c",
                      datetime.now(UTC))
        assert term.settle(done.to_json(), ttl=60)
        code, doc, stderr = finished(waiters[0])
    assert code == 0, stderr
    assert doc["skipped"] and doc["holder"]["backup_id"] == "20260101T000000Z-0a0b0c"
    assert doc["waited_seconds"] > 0
    assert doc["message"].endswith(
        "already has backup 20260101T000000Z-0a0b0c by cp-test (pid 4242): nothing to do"
    )
    assert node.manifests() == [] and interrupted.manifests() == []


def test_a_wait_ends_after_the_snapshot_timeout_with_nothing_done(setup):
    cluster = fresh_cluster("patient")
    config = Config(
        cluster=cluster, etcd=setup.etcd.etcd_config(snapshot_timeout=2.0),
        encryption=EncryptionConfig(recipients=(setup.recipient,)),
        local=LocalConfig(dir=setup.base / cluster / "backups"),
        schedule=ScheduleConfig(snapshot_every=EVERY, election_ttl=TTL),
    )
    events = Events()
    with EtcdSession(setup.etcd.etcd_config()) as session:
        term = campaign_as_another_node(setup, cluster, session)
        started = time.monotonic()
        outcome = save_once_per_period(config, events)
        term.release()
    assert 2.0 <= time.monotonic() - started < 2.0 + TTL
    assert outcome.skipped and outcome.holder.pid == 4242
    assert 1.0 < outcome.waited <= time.monotonic() - started
    assert outcome.summary().startswith(
        f"period {outcome.period.label} of cluster {cluster} is still being taken by cp-test "
        "(pid 4242) since "
    )
    assert outcome.summary().endswith("s for it: nothing to do")
    assert [line for line in events.lines if WAITING in line] == [
        f"period {outcome.period.label} held by cp-test (pid 4242){outcome.holder.since}: "
        + WAITING
    ]
    assert list((setup.base / cluster).rglob("*.manifest.json")) == []


def test_force_takes_a_backup_in_a_period_already_taken(setup):
    cluster = fresh_cluster("forced")
    first, second = nodes(setup, cluster, count=2)
    code, taken, _ = finished(first.save("-o", "json"))
    assert code == 0 and not taken["skipped"]
    code, forced, stderr = finished(second.save("-o", "json", "--force"))
    assert code == 0, stderr
    assert not forced["skipped"] and not forced["elected"] and forced["id"] != taken["id"]
    assert len(second.manifests()) == 1
    assert holder(setup, cluster)["backup_id"] == taken["id"]  # the election is untouched


def test_a_verified_backup_in_the_period_is_enough_without_its_key(setup):
    cluster = fresh_cluster("catalogued")
    node, = nodes(setup, cluster, count=1)
    code, taken, _ = finished(node.save("-o", "json"))
    assert code == 0 and not taken["skipped"]
    with EtcdSession(setup.etcd.etcd_config()) as session:
        session.delete_keys([period_key(cluster)])  # as when the key outlived its lease
    code, doc, stderr = finished(node.save("-o", "json"))
    assert code == 0, stderr
    assert doc["skipped"] and doc["holder"] is None
    assert doc["backup"]["id"] == taken["id"] and doc["backup"]["verified_in"] == ["local"]
    assert f"already has backup {taken['id']}, verified in local" in doc["message"]
    assert len(node.manifests()) == 1


def test_a_failed_save_gives_the_period_up_at_once(setup):
    cluster = fresh_cluster("failed")
    missing = setup.base / "no-such-file"
    broken, = nodes(setup, cluster, extra=f'[backup]\ninclude_files = ["{missing}"]\n', count=1)
    started = time.monotonic()
    code, doc, stderr = finished(broken.save("-o", "json"))
    assert code != 0 and "error" in doc, stderr
    assert "gave up period" in stderr
    assert holder(setup, cluster) is None
    # before its lease could have expired: the key was revoked, not left to time out
    assert time.monotonic() - started < TTL
    healthy = nodes(setup, cluster, count=2)[1]
    code, doc, stderr = finished(healthy.save("-o", "json"))
    assert code == 0 and not doc["skipped"], stderr


def test_a_local_only_save_takes_no_part_in_the_election(setup):
    cluster = fresh_cluster("local")
    first, second = nodes(setup, cluster, count=2)
    assert finished(first.save("-o", "json"))[0] == 0
    code, doc, stderr = finished(second.save("-o", "json", "--local-only"))
    assert code == 0, stderr
    assert not doc["skipped"] and not doc["elected"]
    assert len(second.manifests()) == 1


def test_etcd_unreachable_is_exit_13_before_anything_is_saved(setup, unreachable_endpoint):
    node, = nodes(setup, fresh_cluster("down"), endpoints=[unreachable_endpoint], count=1)
    env = dict(os.environ)
    process = subprocess.run(
        [sys.executable, "-m", "etcdops", "snapshot", "save", "--config", str(node.toml)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert process.returncode == 13
    assert unreachable_endpoint in process.stderr and "Traceback" not in process.stderr
    assert node.manifests() == []


class Events:
    """A reporter that keeps each event line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def event(self, message: str) -> None:
        self.lines.append(message)

    def progress(self, description: str, total: int | None) -> contextlib.nullcontext:
        return contextlib.nullcontext(self)

    def advance(self, amount: int) -> None:
        pass


def test_a_hung_primary_neither_holds_the_period_up_nor_keeps_it(
    setup, s3, s3_proxy, monkeypatch
):
    proxy = s3_proxy()
    proxy.hang()  # lists and uploads alike: a stopped S3 server
    cluster = fresh_cluster("hung")
    primary = dataclasses.replace(
        s3.primary, endpoint_url=proxy.url, read_timeout=60.0, max_attempts=1, deadline=2.0
    )
    config = Config(
        cluster=cluster, etcd=setup.etcd.etcd_config(),
        encryption=EncryptionConfig(recipients=(setup.recipient,)),
        local=LocalConfig(dir=setup.base / cluster / "backups"),
        s3=S3Config(**dataclasses.asdict(primary), replica=s3.replica),
        schedule=ScheduleConfig(snapshot_every=EVERY, election_ttl=TTL),
    )
    monkeypatch.setattr(period_module, "CATALOGUE_BUDGET", 0.5)
    events = Events()
    started = time.monotonic()
    outcome = save_once_per_period(config, events)
    assert time.monotonic() - started < 30  # the catalogue's list alone would take a minute
    assert any("catalogue did not answer within 0.5s" in line for line in events.lines)
    assert outcome.elected and outcome.result is not None
    assert set(outcome.result.failures) == {"primary"}
    assert outcome.result.stored == ("local", "replica")
    # only this host's disk and the replica hold it: another node may reach the primary
    assert holder(setup, cluster) is None
    assert any(line.startswith("gave up period") for line in events.lines)


def test_under_nospace_the_save_goes_on_without_the_election(setup, etcd_tiny_quota,
                                                             etcd3_client):
    fill_until_nospace(etcd3_client(etcd_tiny_quota.client_urls[0]))
    cluster = fresh_cluster("nospace")
    node, = nodes(setup, cluster, endpoints=etcd_tiny_quota.client_urls, count=1)
    code, doc, stderr = finished(node.save("-o", "json"))
    # etcd refuses the election's lease: the save runs all the same, and says so once
    assert code == 0, stderr
    assert not doc["skipped"] and not doc["elected"] and doc["warnings"] == [UNELECTED]
    assert stderr.count(UNELECTED) == 1, stderr
    assert [m.name for m in node.manifests()] == [f"{doc['id']}.manifest.json"]
    with EtcdSession(etcd_tiny_quota.etcd_config()) as session:
        assert session.holder(period_key(cluster)) is None
        assert [alarm.kind for alarm in session.alarms()] == ["NOSPACE"]


def test_a_run_that_fails_before_its_save_counts_as_a_failed_save(
    setup, unreachable_endpoint, tmp_path
):
    cluster = fresh_cluster("counted")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    config = Config(
        cluster=cluster, etcd=setup.etcd.etcd_config(endpoints=(unreachable_endpoint,),
                                                     dial_timeout=0.5),
        encryption=EncryptionConfig(recipients=(setup.recipient,)),
        local=LocalConfig(dir=tmp_path / "backups"),
        schedule=ScheduleConfig(snapshot_every=EVERY, election_ttl=TTL),
        metrics=MetricsConfig(textfile_dir=textfiles),
    )
    path = textfile_path(textfiles, cluster, "snapshot")
    local = frozenset({"cluster": cluster, "store": "local"}.items())

    def counted() -> tuple[float, float]:
        found = samples(path)
        return (found["etcdops_snapshot_attempts_total", local],
                found["etcdops_snapshot_failures_total", local])

    with pytest.raises(EtcdUnavailableError):
        save_once_per_period(config, Events())
    assert counted() == (1, 1)
    assert samples(path)["etcdops_snapshot_period_seconds",
                         frozenset({("cluster", cluster)})] == EVERY
    reachable = dataclasses.replace(config, etcd=setup.etcd.etcd_config())
    assert not save_once_per_period(reachable, Events()).skipped
    assert counted() == (2, 1)  # the save counted itself, once
    assert save_once_per_period(reachable, Events()).skipped
    assert counted() == (2, 1)  # the period was done: nothing ran
