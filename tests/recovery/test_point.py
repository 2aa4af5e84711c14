"""`etcdops dr run` to a point in time, on real parts: a three-member cluster with a history of
every kind of write, a full backup in the middle (local store, moto's primary and replica), the
journal's segments from etcd's watch in every store; the restored three members each hold
exactly etcd's own state at the point (read on the original before any compaction), an
interrupted run resumes to the same point, a changed point is refused, the dry run plans the
point (and `latest` is the newest journaled one) without staging it."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import etcd3
import pytest
from typer.testing import CliRunner

from etcdops.backup.manifest import Manifest
from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.config import Config, EncryptionConfig, LocalConfig, S3Config, S3Location
from etcdops.crypto.keys import configured_recipients, generate_identity_file
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.journal.manifest import SegmentManifest
from etcdops.journal.segment import SegmentBuffer
from etcdops.journal.store import chain_manifests, publish, seal
from etcdops.recovery.state import seconds_between
from etcdops.report import LogReporter
from etcdops.restore.revision import STAGING
from etcdops.stores.configured import open_stores
from tests.fixtures.waiting import wait_for
from tests.recovery.conftest import (
    ETCDOPS,
    Member,
    SavedBackup,
    _buckets,
    config_toml,
    fake_aws,
    listing,
    plan_toml,
    rebuilt_hosts,
    waiting_command,
)
from tests.restore.history import (
    State,
    record,
    save_with_writes,
    state_at,
    state_header,
    write_after,
    write_before,
)

PRIMARY, REPLICA = "drpoint-primary", "drpoint-replica"  # apart from test_run's backups
PER_SEGMENT = 4  # revisions per segment
STEP = timedelta(milliseconds=20)  # between two revisions, as the journal saw them


class Journaled(NamedTuple):
    saved: SavedBackup  # the base backup in every store; its cluster stopped
    segments: list[SegmentManifest]  # the chain after it, as the stores hold it
    marks: dict[str, int]  # revisions of interest in the history
    states: dict[int, State]  # etcd's own state at each revision from the first backup's on
    earlier: Manifest | None = None  # a backup before the base, its chain in every store too


@pytest.fixture(scope="module")
def journaled(moto_server, tmp_path_factory) -> Iterator[Journaled]:
    yield from _journaled(moto_server, tmp_path_factory.mktemp("journaled"), "drpoint",
                          (PRIMARY, REPLICA))


@pytest.fixture(scope="module")
def journaled_twice(moto_server, tmp_path_factory) -> Iterator[Journaled]:
    """An earlier backup before the base, whose save saw three writes land in its snapshot
    after the status it recorded its revision from; each backup's chain in every store."""
    yield from _journaled(moto_server, tmp_path_factory.mktemp("twice"), "drtwice",
                          ("drtwice-primary", "drtwice-replica"), earlier=True)


def _journaled(
    moto_server: str, base: Path, name: str, buckets: tuple[str, str], *, earlier: bool = False
) -> Iterator[Journaled]:
    primary, replica = buckets
    with pytest.MonkeyPatch.context() as patch:
        fake_aws(patch, base)
        _buckets(moto_server, primary, replica)
        identity = base / "identity.txt"
        recipient = generate_identity_file(identity)
        cluster = LocalCluster.three(base / "cluster")
        with cluster:
            port = int(cluster.client_urls[0].rsplit(":", 1)[1])
            client = etcd3.client(host="127.0.0.1", port=port, timeout=10)
            write_before(client)
            s3 = {"region": "us-east-1", "endpoint_url": moto_server, "max_attempts": 1,
                  "connect_timeout": 1.0}
            config = Config(
                cluster=name, etcd=cluster.etcd_config(),
                encryption=EncryptionConfig(recipients=(str(recipient),), identity_file=identity),
                local=LocalConfig(dir=base / "backups"),
                s3=S3Config(bucket=primary, **s3, replica=S3Location(
                    bucket=replica, **(s3 | {"region": "us-west-2"}))),
            )
            stores = open_stores(config)
            backups = []
            if earlier:
                backups.append(save_snapshot(
                    config, LogReporter(), stores=stores,
                    clock=lambda: datetime.now(UTC) - timedelta(minutes=1)).manifest)
                client.put("/registry/pods/default/between", "b")
            backups.append(save_with_writes(config, client, 3 if earlier else 0, stores=stores))
            marks, _late = write_after(client)
            with EtcdSession(cluster.etcd_config()) as session:
                chains = [(backup, record(session, backup.etcd.revision + 1, marks["end"]))
                          for backup in backups]
            states = {revision: state_at(client, revision)
                      for revision in range(backups[0].etcd.revision, marks["end"] + 1)}
            client.close()
        for backup, revisions in chains:
            _publish(config, stores, backup, revisions)
        manifest = backups[-1]
        segments, damaged = chain_manifests(stores["local"], config.cluster, manifest.id)
        assert not damaged and len(segments) > 4
        saved = SavedBackup(cluster, config, manifest, {}, identity, identity, moto_server)
        yield Journaled(saved, segments, marks, states, backups[0] if earlier else None)


def _publish(config: Config, stores, base: Manifest, revisions) -> None:
    """revisions sealed as base's chain, PER_SEGMENT to a segment, STEP apart from base's time,
    in every store."""
    moments = iter(base.created_at + STEP * n for n in range(1, len(revisions) + 1))
    follows = base.etcd.revision
    for index in range(0, len(revisions), PER_SEGMENT):
        buffer = SegmentBuffer(clock=lambda: next(moments))
        for revision in revisions[index:index + PER_SEGMENT]:
            buffer.add(revision)
        sealed = seal(buffer, cluster=config.cluster, base_backup_id=base.id,
                      follows=follows, recipients=configured_recipients(config.encryption),
                      level=3)
        for name in stores:
            publish(stores[name], sealed)
        follows = sealed.manifest.last_revision


@pytest.fixture
def journal(journaled, monkeypatch, tmp_path) -> Journaled:
    """The journaled backup, with the fake AWS environment for this test and its CLI."""
    fake_aws(monkeypatch, tmp_path)
    return journaled


def dr_run(config: Path, plan: Path, *args: str):
    return CliRunner().invoke(
        app, ["dr", "run", "--plan", str(plan), "--config", str(config), *args]
    )


def dr_run_to_revision(saved: SavedBackup, target: int, tmp_path: Path, launcher):
    """`dr run --revision target -o json` of three rebuilt hosts from saved's stores, which
    must succeed: the hosts' cluster and the CLI's result."""
    cluster = rebuilt_hosts(tmp_path / "hosts")
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster), checks_command="true")
    result = dr_run(config, plan, "--revision", str(target), "-o", "json")
    assert result.exit_code == 0, result.output
    return cluster, result


def member_states(cluster: LocalCluster) -> list[tuple[int, State]]:
    """Each member's own revision and every key it serves, with its revisions and lease."""
    found = []
    for url in cluster.client_urls:
        client = etcd3.client(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]), timeout=10)
        try:
            found.append((state_header(client), state_at(client)))
        finally:
            client.close()
    return found


def segment_of(segments: list[SegmentManifest], revision: int) -> SegmentManifest:
    return next(s for s in segments if s.first_revision <= revision <= s.last_revision)


def test_dr_run_revision_gives_every_member_etcds_own_state_at_that_revision(
    journal, tmp_path, launcher
):
    saved, marks = journal.saved, journal.marks
    target = marks["txn"]  # a transaction of several keys, inside a segment
    cluster, result = dr_run_to_revision(saved, target, tmp_path, launcher)
    report = json.loads(result.stdout)

    # every member: exactly etcd's own state at the revision (values, create and mod
    # revisions, versions, leases), advanced on a staging etcd (no etcdutl here bumps it)
    # past the newest journaled revision, which clients saw
    expected = journal.states[target]
    assert expected != journal.states[target - 1] != journal.states[marks["end"]]
    revision = report["revision"]
    assert revision["method"] == STAGING and revision["restart"] == []
    assert revision["after_restore"] > marks["end"]
    assert member_states(cluster) == [(revision["after_restore"], expected)] * 3

    point = report["point"]
    assert point["target"] == f"revision {target}"
    assert point["base"] == report["backup"]["id"] == saved.manifest.id
    assert point["revision"] == point["reached"] == report["revision"]["snapshot"] == target
    replayed = target - saved.manifest.etcd.revision
    assert point["replayed"]["revisions"] == replayed and point["replayed"]["events"] >= replayed
    assert point["segments"] == len([s for s in journal.segments if s.first_revision <= target])
    assert point["gap"] is None
    # the data lost is what came after the point, not after the backup
    segment = segment_of(journal.segments, target)
    assert segment.last_revision != target  # inside a segment: its first change bounds it
    assert point["as_of"] == segment.first_change_at.isoformat()
    assert report["data_loss_window_seconds"] == pytest.approx(
        seconds_between(point["as_of"], report["declared_at"]), abs=0.001)
    assert f"with {replayed} journal revisions replayed to revision {target} restored on 3 " \
        "members" in report["steps"][1]["detail"]
    assert all(step["verdict"] == "ok" for step in report["steps"])
    assert not [p for m in cluster.members for p in m.data_dir.parent.glob(".etcdops-*")]


def test_a_revision_inside_the_bases_snapshot_is_restored_from_the_backup_before_it(
    journaled_twice, monkeypatch, tmp_path, launcher
):
    fake_aws(monkeypatch, tmp_path)
    saved, earlier = journaled_twice.saved, journaled_twice.earlier
    assert earlier is not None
    # the base's save recorded revision R; three writes landed in its snapshot after it
    target = saved.manifest.etcd.revision + 2
    cluster, result = dr_run_to_revision(saved, target, tmp_path, launcher)
    report = json.loads(result.stdout)
    after = report["revision"]["after_restore"]
    assert after > max(journaled_twice.states)
    assert member_states(cluster) == [(after, journaled_twice.states[target])] * 3
    # the recovery's backup is the one planned (its files, checked before the stop step);
    # the point says which backup it was replayed from
    point = report["point"]
    assert report["backup"]["id"] == saved.manifest.id
    assert point["base"] == earlier.id and point["base_revision"] == earlier.etcd.revision
    assert point["reached"] == target
    assert point["replayed"]["revisions"] == target - earlier.etcd.revision
    assert f"revisions from backup {earlier.id}'s chain replayed" in report["steps"][1]["detail"]
    state = json.loads((tmp_path / "plan.toml.state.json").read_text())
    assert state["backup_id"] == saved.manifest.id and state["point"]["base"] == earlier.id
    assert f"past revision {target} planned for revision {target}" in result.stderr


def test_an_interrupted_run_resumes_to_the_same_point_and_a_changed_point_is_refused(
    journal, tmp_path, launcher
):
    saved, segments = journal.saved, journal.segments
    chosen, other = segments[-2], segments[1]  # after the late lease; before it
    cluster = rebuilt_hosts(tmp_path / "hosts")
    marker, go = tmp_path / "start-command.pid", tmp_path / "go"
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=[waiting_command(marker, go), *launcher.commands(cluster)],
                     checks_command="true",
                     top=(f'at = "{chosen.last_change_at.isoformat()}"',))
    process = subprocess.Popen(
        [ETCDOPS, "dr", "run", "--plan", str(plan), "--config", str(config), "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip(), "step 2's command")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    state_file = tmp_path / "plan.toml.state.json"
    recorded = state_file.read_bytes()
    state = json.loads(recorded)
    assert set(state["steps"]) == {"stop", "restore"}
    assert state["point"]["reached"] == chosen.last_revision
    assert json.loads(out)["point"] == state["point"]  # the report so far says it too
    # and a dry run of the resume reports what step 1 did, not a fresh plan
    dry = dr_run(config, plan, "--dry-run", "-o", "json")
    assert json.loads(dry.stdout)["point"] == state["point"], dry.output

    # another moment on the command line: refused, nothing touched
    before = listing(tmp_path / "hosts")
    changed = dr_run(config, plan, "--at", other.last_change_at.isoformat())
    assert changed.exit_code == 10, changed.output
    assert changed.stderr.count("\n") == 1 and "changed since the recovery" in changed.stderr
    assert f"point was at {chosen.last_change_at.isoformat()}" in changed.stderr
    assert "--at" in changed.stderr  # the hint names the flags too
    assert state_file.read_bytes() == recorded and listing(tmp_path / "hosts") == before

    go.touch()
    result = dr_run(config, plan, "-o", "json")  # the plan's own `at`: the same point
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [step["verdict"] for step in report["steps"]][:2] == [
        "skipped (resumed: done before)"] * 2
    assert report["point"]["reached"] == chosen.last_revision
    assert report["point"]["as_of"] == chosen.last_change_at.isoformat()
    # keys on a lease granted after the base: the report says what becomes of them
    assert "lease(s)" in report["point"]["lease_warning"]
    assert report["point"]["lease_warning"] in report["warnings"]
    after = report["revision"]["after_restore"]
    assert report["revision"]["snapshot"] == chosen.last_revision < after
    assert member_states(cluster) == [(after, journal.states[chosen.last_revision])] * 3


def test_the_dry_run_plans_the_newest_journaled_point_and_refuses_one_out_of_reach(
    journal, tmp_path, s3_proxy
):
    saved, marks = journal.saved, journal.marks
    cluster = rebuilt_hosts(tmp_path / "hosts")
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=["true"], checks_command="true")
    before = listing(tmp_path)
    result = dr_run(config, plan, "--dry-run", "-o", "json")  # backup = "latest"
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(check["ok"] for check in report["prerequisites"]), report["prerequisites"]
    (check,) = [c for c in report["prerequisites"] if c["check"] == "point"]
    assert f"revision {marks['end']} (the newest journaled point)" in check["detail"]
    point = report["point"]
    assert point["revision"] == marks["end"] == journal.segments[-1].last_revision
    assert point["replayed"] is None and point["reached"] is None  # planned, not staged
    assert point["segments"] == len(journal.segments)
    assert listing(tmp_path) == before  # no state file, no staging etcd left, nothing moved
    # a point behind the newest: the revision check says how far the staging etcd goes
    behind = dr_run(config, plan, "--dry-run", "--revision", str(marks["txn"]), "-o", "json")
    assert behind.exit_code == 0, behind.output
    (check,) = [c for c in json.loads(behind.stdout)["prerequisites"]
                if c["check"] == "revision"]
    assert (f"advances the revision first past revision {marks['end']:,}, the newest its "
            f"journal and backups name ({marks['end'] - marks['txn']:,} after the point)"
            ) in check["detail"]

    beyond = dr_run(config, plan, "--dry-run", "--revision", str(marks["end"] + 1))
    assert beyond.exit_code == 2, beyond.output
    assert "after the newest journaled revision" in beyond.stderr
    both = dr_run(config, plan, "--revision", "5", "--at", "2026-11-25T09:13:00Z")
    assert both.exit_code == 2 and "--revision and --at name two targets" in both.stderr
    assert listing(tmp_path) == before

    # the primary region down: planned from the replica, and the store that could not be
    # listed is not asked again for each backup's chain (each ask waits out its timeouts)
    proxy = s3_proxy()
    proxy.refuse(lambda request: True, 503, "ServiceUnavailable", "the region is down")
    down = config_toml(tmp_path / "down.toml", saved, local_dir=tmp_path / "lost-disk",
                       primary_url=proxy.url)
    result = dr_run(down, plan, "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["point"]["revision"] == marks["end"]
    assert proxy.count(lambda request: True) > 0
    assert proxy.count(lambda request: "/journal/" in (request.param("prefix") or "")) == 0
