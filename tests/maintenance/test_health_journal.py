"""`etcdops health`'s journal rows on a real etcd: a real journal run keeping up with a writer,
the same journal stopped while the writes go on, an idle cluster and its first write in a while,
chains of real backups and sealed segments with a gap between them and a hole, and a cluster
restored from a snapshot (a new cluster ID) below the old chain's reach."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.config import Config
from etcdops.crypto.age import Identity
from etcdops.journal.base import newest_base
from etcdops.journal.segment import SegmentBuffer
from etcdops.journal.store import publish, seal
from etcdops.maintenance.health import FAIL, OK, WARN, check_health
from etcdops.report import LogReporter
from etcdops.stores.configured import open_stores
from tests.fixtures.waiting import wait_for
from tests.journal.journaling import Journal, Writer, chain_in, history, journal_config
from tests.maintenance.test_health import GENEROUS


def journal_rows(config: Config, **options: object) -> dict[str, object]:
    checks = check_health(dataclasses.replace(config, health=GENEROUS), datetime.now(UTC),
                          **options)
    return {c.name: c for c in checks if c.subject == "journal"}


def newest_chain(config: Config):
    base = newest_base(open_stores(config), config.cluster)
    assert base is not None
    return chain_in(open_stores(config)["local"], config, base.backup_id, base.revision)


def seconds_since(moment: datetime | None) -> float:
    assert moment is not None
    return (datetime.now(UTC) - moment).total_seconds()


def test_no_journal_no_rows(journal_etcd, identity, tmp_path):
    config = journal_config(journal_etcd, identity, tmp_path)
    save_snapshot(config, LogReporter())
    assert journal_rows(config) == {}


def test_a_journal_keeping_up_passes_and_once_stopped_under_writes_fails(
    journal_etcd, identity, client, tmp_path
):
    config = journal_config(journal_etcd, identity, tmp_path, rpo_target=1.0)
    save_snapshot(config, LogReporter())
    journal = Journal(config)
    writer = Writer(client).start()
    wait_for(lambda: len(newest_chain(config).path) >= 3, "three segments while writing")
    # keeping up is judged against a target a busy machine meets too
    rows = journal_rows(dataclasses.replace(
        config, journal=dataclasses.replace(config.journal, rpo_target=5.0)))
    assert {name: row.verdict for name, row in rows.items()} == {
        "lag": OK, "chain": OK, "chains": OK}, rows
    assert rows["lag"].target == "<= 5.0s ([journal] rpo_target)"
    assert "segments, revisions" in rows["chain"].value
    assert rows["chains"].value == "1 chain with segments, no gap"
    journal.finish()
    # the writes go on with no journal: once the newest stored change is older than the target
    wait_for(lambda: seconds_since(newest_chain(config).last_change_at) > 1.5,
             "the stored changes older than the target")
    toml = config_file(config, tmp_path)
    result = CliRunner().invoke(app, ["health", "-o", "json", "--config", str(toml)])
    writer.finish()
    assert result.exit_code == 13, result.output
    doc = json.loads(result.stdout)
    [lag] = [c for c in doc["checks"] if (c["subject"], c["name"]) == ("journal", "lag")]
    assert lag["verdict"] == FAIL
    assert f"store's journal at {newest_chain(config).last_revision}" in lag["value"]
    assert [f for f in doc["failed"] if f.startswith("journal lag")], doc["failed"]


def test_an_idle_cluster_has_no_lag_and_its_first_write_is_waited_for(
    journal_etcd, identity, client, tmp_path
):
    # the target is what health waits for the first write after idling: one a busy machine's
    # journal (a segment every 0.2 s) meets, so the test does not time the machine
    config = journal_config(journal_etcd, identity, tmp_path, rpo_target=4.0)
    save_snapshot(config, LogReporter())
    journal = Journal(config)
    try:
        current = client.put("/registry/pods/idle/a", "1").header.revision
        wait_for(lambda: newest_chain(config).last_revision >= current, "the write journaled")
        # idle for longer than the target: nothing is missing, so nothing lags
        wait_for(lambda: seconds_since(newest_chain(config).last_change_at) > 4.5,
                 "idle longer than the target")
        rows = journal_rows(config)
        assert rows["lag"].verdict == OK and rows["lag"].value.startswith("0s: etcd's revision")
        # a write now: the newest stored change is old, but the journal stores this one at once
        client.put("/registry/pods/idle/b", "2")
        rows = journal_rows(config)
        assert rows["lag"].verdict == OK, rows["lag"]
        assert "after health read it" in rows["lag"].value
    finally:
        journal.finish()


def test_a_gap_between_chains_warns_and_a_hole_in_the_newest_fails(
    journal_etcd, identity, client, tmp_path
):
    config = journal_config(journal_etcd, identity, tmp_path)
    store = open_stores(config)["local"]
    first = save_snapshot(config, LogReporter()).manifest
    for number in range(10):
        client.put(f"/registry/pods/gap/{number}", "x")
    second = save_snapshot(config, LogReporter()).manifest
    for number in range(10):
        last = client.put(f"/registry/pods/gap/{number}", "y").header.revision
    # the first chain ends 4 revisions in; the second holds 3, then skips 2
    start, start2 = first.etcd.revision, second.etcd.revision
    stored(config, store, identity, first.id, start + 1, start + 4)
    stored(config, store, identity, second.id, start2 + 1, start2 + 3)
    stored(config, store, identity, second.id, start2 + 6, start2 + 8)
    assert last > start2 + 8
    rows = check_health(dataclasses.replace(config, health=GENEROUS), datetime.now(UTC),
                        journal_wait=False)
    journal = {(c.name, c.verdict): c.value for c in rows if c.subject == "journal"}
    gap = journal[("chains", WARN)]
    assert gap.startswith(f"revisions {start + 5} to {start2 - 1} are in no chain")
    assert f"the next starts at backup {second.id}" in gap
    assert journal[("chain", FAIL)] == (
        f"chain {second.id}: no segment holds revisions {start2 + 4} to {start2 + 5}: it "
        f"proves revisions only up to {start2 + 3}")
    [lag] = [value for (name, _), value in journal.items() if name == "lag"]
    assert f"store's journal at {start2 + 3} (chain {second.id})" in lag


def stored(config: Config, store, identity: Identity, base_id: str, first: int,
           last: int) -> None:
    """etcd's own revisions first to last sealed as one segment of a chain and published
    (whatever the chain holds before it)."""
    buffer = SegmentBuffer()
    for revision in history(config, first, last):
        buffer.add(revision)
    publish(store, seal(buffer, cluster=config.cluster, base_backup_id=base_id,
                        follows=first - 1,
                        recipients=[identity.recipient()], level=1))


def config_file(config: Config, tmp_path: Path) -> Path:
    """The config as the TOML an operator writes, with latency targets any disk meets."""
    path = tmp_path / "etcdops.toml"
    endpoints = ", ".join(f'"{e}"' for e in config.etcd.endpoints)
    path.write_text(
        f'cluster = "{config.cluster}"\n'
        f"[etcd]\nendpoints = [{endpoints}]\n"
        f'[encryption]\nrecipients = ["{config.encryption.recipients[0]}"]\n'
        f'[local]\ndir = "{config.local.dir}"\n'
        f'[journal]\nrpo_target = "{config.journal.rpo_target}s"\n'
        '[health]\nwal_fsync_p99 = "10s"\nbackend_commit_p99 = "10s"\n'
    )
    return path


def test_after_a_restore_of_the_cluster_the_lag_is_judged_on_the_new_history(
    journal_etcd, identity, client, tmp_path, etcd3_client
):
    from tests.journal.restoring import plain_snapshot, restored

    config = journal_config(journal_etcd, identity, tmp_path, rpo_target=1.0)
    old = save_snapshot(config, LogReporter()).manifest
    snapshot = tmp_path / "old.db"
    assert plain_snapshot(journal_etcd.members[0], snapshot) == old.etcd.revision
    for number in range(20):
        reach = client.put(f"/registry/pods/old/{number}", "x").header.revision
    store = open_stores(config)["local"]
    stored(config, store, identity, old.id, old.etcd.revision + 1, reach)
    member = restored(snapshot, tmp_path / "restored")
    try:
        config = dataclasses.replace(config, etcd=member.etcd_config())
        new = save_snapshot(config, LogReporter()).manifest
        restored_client = etcd3_client(member.client_url)
        for number in range(5):
            current = restored_client.put(f"/registry/pods/new/{number}", "y").header.revision
        assert current < reach  # the old chain reaches past the restored cluster's revision
        rows = journal_rows(config, journal_wait=False)
        assert (f"etcd is at revision {current}, the local store's journal at "
                f"{new.etcd.revision} (chain {new.id})") in rows["lag"].value
        assert rows["chain"].value.startswith(f"chain {new.id}: no segment yet")
        stored(config, store, identity, new.id, new.etcd.revision + 1, current)
        rows = journal_rows(config, journal_wait=False)
        assert rows["lag"].verdict == OK
        assert rows["lag"].value == (f"0s: etcd's revision {current} is journaled (chain "
                                     f"{new.id} in local)")
        assert rows["chains"].value == "1 chain with segments, no gap"
    finally:
        member.stop()
