"""`snapshot list` with the journal, through the CLI on real backups and sealed segments in the
local store and moto's two regions: each chain's window across the stores, a hole, the gaps
between chains, the orphans, and no gap where there is no journal."""

from __future__ import annotations

import json
from datetime import timedelta

from typer.testing import CliRunner

from etcdops.cli.main import app
from etcdops.journal.listing import list_chains
from tests.journal.chains import NOW, H, Timeline


def listed(t: Timeline, *args: str):
    done = CliRunner().invoke(app, ["snapshot", "list", "--config", str(t.toml), *args])
    assert done.exit_code == 0, done.output
    return done


def journal_of(doc) -> dict[str, dict]:
    return {backup["id"]: backup["journal"] for backup in doc["backups"]}


def drop_segment(t: Timeline, base: str, index: int, stores=None) -> None:
    """Delete a chain's index-th segment (manifest, then object) from the stores named."""
    for name, store in t.stores().items():
        if stores is None or name in stores:
            segment = list_chains(store, t.config.cluster)[base].segments[index]
            store.delete(segment.manifest_key)
            store.delete(segment.object_key)


def test_list_shows_each_chains_window_and_the_gap_between_chains(timeline):
    t = timeline
    doc = json.loads(listed(t, "-o", "json").stdout)
    assert set(doc) >= {"backups", "damaged", "unreachable"}  # the keys it always had
    assert all({"id", "stores", "copies", "verified"} <= set(b) for b in doc["backups"])
    windows = journal_of(doc)
    a, b, c, d = (windows[m.id] for m in (t.a, t.b, t.c, t.d))
    assert a["from"] == t.a.created_at.isoformat()
    assert a["last_revision"] == t.b.etcd.revision - 4 and a["segments"] == 2
    # the last change seen: six revisions ten minutes apart from 50 h before NOW
    assert a["until"] == (NOW - 50 * H + timedelta(minutes=50)).isoformat()
    assert b["last_revision"] == t.c.etcd.revision  # b's chain meets c: no gap
    assert c["last_revision"] == t.d.etcd.revision
    assert d["last_revision"] == t.d.etcd.revision + 10
    assert d["holes"] == [] and d["stores"] == {"local": 2, "primary": 2, "replica": 2}
    assert doc["journal_gaps"] == [{
        "after": t.a.id, "before": t.b.id, "first_revision": t.b.etcd.revision - 3,
        "last_revision": t.b.etcd.revision - 1, "since": a["until"],
        "until": t.b.created_at.isoformat(),
    }]
    assert doc["orphan_chains"] == {name: [t.old_orphan, t.new_orphan]
                                    for name in ("local", "primary", "replica")}
    shown = listed(t).stdout
    text = " ".join(shown.split())
    assert "journal: what each chain can restore" in text
    [gap] = [line for line in shown.splitlines() if "(gap)" in line]
    assert f" {t.b.etcd.revision - 3}-{t.b.etcd.revision - 1} " in gap and "in no chain" in gap
    assert (f"chain {t.old_orphan} has no base backup in local, primary, replica: not "
            "restorable") in text


def test_a_window_reads_every_store_and_stops_at_a_hole(timeline):
    t = timeline
    # the local store lost d's last segment: the other stores hold it, a restore reads them
    drop_segment(t, t.d.id, 1, stores={"local"})
    d = journal_of(json.loads(listed(t, "-o", "json").stdout))[t.d.id]
    assert d["last_revision"] == t.d.etcd.revision + 10
    assert d["stores"] == {"local": 1, "primary": 2, "replica": 2}
    local = journal_of(json.loads(listed(t, "-o", "json", "--store", "local").stdout))
    assert local[t.d.id]["last_revision"] == t.d.etcd.revision + 5

    # c's first segment is in no store: its chain proves nothing past its base, and the
    # points from there to d cannot be restored
    drop_segment(t, t.c.id, 0)
    doc = json.loads(listed(t, "-o", "json").stdout)
    c = journal_of(doc)[t.c.id]
    assert c["last_revision"] == t.c.etcd.revision and c["segments"] == 0
    assert c["listed_last_revision"] == t.d.etcd.revision
    [hole] = c["holes"]
    assert (hole["first_revision"], hole["last_revision"]) == (
        t.c.etcd.revision + 1, t.c.etcd.revision + 5)
    assert c["until"] is None
    assert [(g["after"], g["before"], g["first_revision"], g["last_revision"])
            for g in doc["journal_gaps"]] == [
        (t.a.id, t.b.id, t.b.etcd.revision - 3, t.b.etcd.revision - 1),
        (t.c.id, t.d.id, t.c.etcd.revision + 1, t.d.etcd.revision - 1)]
    windows_table = listed(t).stdout.split("journal: what each chain can restore")[1]
    [row] = [line for line in windows_table.splitlines() if t.c.id in line]
    assert "hole:" in row


def test_listing_reads_no_segment_body(timeline):
    t = timeline
    before = json.loads(listed(t, "-o", "json").stdout)
    for store in t.stores().values():
        for folder in list_chains(store, t.config.cluster).values():
            for segment in folder.segments:
                store.delete(segment.object_key)  # every body gone, the manifests left
    after = json.loads(listed(t, "-o", "json").stdout)
    assert journal_of(after) == journal_of(before)
    assert after["journal_gaps"] == before["journal_gaps"]


def test_backups_without_a_journal_show_no_window_and_no_gap(timeline):
    t = timeline
    for store in t.stores().values():
        for folder in list_chains(store, t.config.cluster).values():
            folder.delete(store)
    doc = json.loads(listed(t, "-o", "json").stdout)
    assert set(journal_of(doc).values()) == {None}
    assert doc["journal_gaps"] == [] and doc["orphan_chains"] == {}
    assert "journal" not in listed(t).stdout
