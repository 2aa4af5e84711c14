"""windows.gaps, case by case: gaps between chains within one etcd history, none across two
(a restored cluster's new history starts below the old one's revisions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from etcdops.backup.catalog import BackupView
from etcdops.backup.manifest import EtcdSource, Manifest
from etcdops.journal.chain import window
from etcdops.journal.listing import ListedSegment
from etcdops.journal.windows import ChainView, gaps

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def backup(name: str, hours: float, revision: int, cluster_id: str = "aa") -> BackupView:
    manifest = Manifest(
        id=name, cluster="c", created_at=T0 + timedelta(hours=hours),
        etcd=EtcdSource("http://127.0.0.1:2379", cluster_id, "m1", "3.5.1", revision, 1, 1, 1),
        snapshot_size=1, snapshot_db_sha256="0" * 64, object_key=f"{name}.db.zst.age",
        object_size=1, object_sha256="0" * 64, compression={}, encryption={},
        tool_version="test",
    )
    return BackupView(manifest, {})


def chain(view: BackupView, last: int) -> ChainView:
    base, first = view.manifest, view.manifest.etcd.revision + 1
    segment = ListedSegment(base.id, first, last, f"{base.id}/{first}", f"{base.id}/{first}.m")
    return ChainView(base.id, base.created_at, window(base.id, first - 1, [segment]),
                     base.created_at + timedelta(minutes=30), last, {"local": 1})


def test_a_chain_that_ends_before_the_next_base_is_a_gap():
    a, b = backup("a", 0, 100), backup("b", 1, 200)
    [gap] = gaps([a, b], {"a": chain(a, 150), "b": chain(b, 250)})
    assert (gap.after, gap.before, gap.first_revision, gap.last_revision) == ("a", "b", 151, 199)


def test_chains_that_meet_leave_no_gap():
    a, b = backup("a", 0, 100), backup("b", 1, 200)
    assert gaps([a, b], {"a": chain(a, 205), "b": chain(b, 250)}) == []


def test_a_restored_clusters_history_below_the_old_ones_revisions_makes_no_false_gap():
    # the old history: a gap between its two chains; then the cluster restored without a bump
    # starts again at revision 50, its journal at 300 now, below every old revision
    old_a, old_b = backup("old-a", 0, 1000, "aa"), backup("old-b", 1, 3000, "aa")
    new = backup("new", 2, 50, "bb")
    chains = {"old-a": chain(old_a, 1100), "old-b": chain(old_b, 3100), "new": chain(new, 300)}
    found = [(g.after, g.before, g.first_revision, g.last_revision)
             for g in gaps([old_a, old_b, new], chains)]
    assert found == [("old-a", "old-b", 1101, 2999)]


def test_a_gap_in_each_history_is_found_in_each():
    old_a, old_b = backup("old-a", 0, 100, "aa"), backup("old-b", 1, 300, "aa")
    new_a, new_b = backup("new-a", 2, 50, "bb"), backup("new-b", 3, 400, "bb")
    chains = {"old-a": chain(old_a, 200), "old-b": chain(old_b, 350),
              "new-a": chain(new_a, 60), "new-b": chain(new_b, 450)}
    found = [(g.after, g.before, g.first_revision, g.last_revision)
             for g in gaps([old_a, old_b, new_a, new_b], chains)]
    assert found == [("old-a", "old-b", 201, 299), ("new-a", "new-b", 61, 399)]
