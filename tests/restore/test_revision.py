"""The revision plans: what etcdutl's help offers decides the flags, and the write rate that a
snapshot's samples show decides how far a staging etcd advances the revision, from the newest
revision that the backups and journal chains name."""

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from etcdops.etcd.binaries import find_binary
from etcdops.restore.revision import (
    GAP_FLOOR,
    RESTART,
    Seen,
    etcdutl_bumps,
    flags_plan,
    newest_seen,
    no_flags,
    over_budget,
    restart_warning,
    staged_plan,
    unbumped_plan,
    write_rate,
)
from tests.restore.standins import bumping_etcdutl


def test_etcd_distros_etcdutl_cannot_bump_and_one_whose_help_offers_both_flags_can(tmp_path):
    etcdutl = find_binary("etcdutl")
    assert not etcdutl_bumps(etcdutl)
    assert etcdutl_bumps(bumping_etcdutl(tmp_path)[0])
    assert str(etcdutl) in no_flags(etcdutl) and "has no --bump-revision" in no_flags(etcdutl)


def test_the_flags_plan_passes_both_flags_with_the_bump():
    plan = flags_plan(5000)
    assert plan.flags == ("--bump-revision", "5000", "--mark-compacted")
    assert plan.warning is None
    assert plan.as_dict(10) == {
        "method": "etcdutl --bump-revision --mark-compacted", "bump": 5000, "snapshot": 10,
        "after_restore": 5010, "restart": [],
    }


def test_a_staged_plan_passes_no_flags_and_says_how_far_the_staging_etcd_went():
    plan = staged_plan(1234)
    assert (plan.method, plan.flags, plan.warning) == ("staging etcd", (), None)
    assert plan.as_dict(100) == {
        "method": "staging etcd", "bump": 1234, "snapshot": 100, "after_restore": 1334,
        "restart": [],
    }


def test_without_a_bump_the_warning_names_every_component_to_restart_and_why():
    warning = restart_warning("because of this")
    plan = unbumped_plan(warning)
    assert "went back to the snapshot's (because of this)" in warning
    assert "restart kube-apiserver, kube-controller-manager, kube-scheduler, every kubelet and " \
           "every kube-proxy" in warning
    assert plan.as_dict(7) == {
        "method": "none", "bump": 0, "snapshot": 7, "after_restore": 7, "restart": list(RESTART),
    }
    # the caller (dr run) advanced the revision itself: nothing to restart
    assert unbumped_plan(None).as_dict(7)["restart"] == []


def test_the_write_rate_is_the_average_from_the_oldest_point_to_the_newest():
    rate = write_rate([(1300.0, 4000), (1000.0, 1000), (1100.0, 1500)])
    assert rate is not None
    assert (rate.per_second, rate.points, rate.span) == (10.0, 3, 300.0)
    # a day old at 10 revisions/s: twice the 864,000 revisions it may have missed, and the floor
    assert rate.gap(86_400) == 2 * 864_000 + GAP_FLOOR
    assert rate.gap(-5) == GAP_FLOOR  # a clock behind the backup's: no age, the floor only


@pytest.mark.parametrize("points", [[], [(1000.0, 5)], [(1000.0, 5), (1000.0, 9)]])
def test_fewer_than_two_points_in_time_give_no_rate(points):
    assert write_rate(points) is None


def test_revisions_that_went_back_between_points_count_as_no_writes():
    rate = write_rate([(1000.0, 9000), (1100.0, 50)])  # a restore without a bump in between
    assert rate is not None and rate.per_second == 0 and rate.gap(3600) == GAP_FLOOR


def test_over_budget_says_the_gap_the_estimate_and_the_budget():
    reason = over_budget(1_200_000, 5000.0, 60.0)
    assert reason == (
        "advancing it by the expected 1,200,000 revisions on a staging etcd would take about "
        "4m00s at 5,000 writes/s, over [restore] bump_budget 60.0s"
    )


def _view(backup_id: str, revision: int, created: float) -> SimpleNamespace:
    """What newest_seen reads of a BackupView."""
    return SimpleNamespace(manifest=SimpleNamespace(
        id=backup_id, etcd=SimpleNamespace(revision=revision),
        created_at=datetime.fromtimestamp(created, UTC)))


def _chain(last: int, listed: int | None, seen: float | None) -> SimpleNamespace:
    """What newest_seen reads of a ChainView."""
    return SimpleNamespace(
        window=SimpleNamespace(last_revision=last), listed_last_revision=listed,
        last_change_at=None if seen is None else datetime.fromtimestamp(seen, UTC))


@pytest.mark.parametrize(("chains", "expected"), [
    ({}, Seen(2000.0, 500)),  # the newest backup
    ({"a": _chain(400, 400, 1500.0)}, Seen(2000.0, 500)),  # a chain short of the newer backup
    ({"b": _chain(900, 900, 2600.0)}, Seen(2600.0, 900)),  # the newest backup's chain
    # past a hole: revisions named were seen all the same, at the time of the last proven
    ({"b": _chain(700, 950, 2400.0)}, Seen(2400.0, 950)),
    # the newest change's time unknown (its manifest unreadable): the base's, the older
    ({"b": _chain(900, 900, None)}, Seen(2000.0, 900)),
])
def test_the_newest_seen_is_the_furthest_any_backup_or_chain_names(chains, expected):
    views = [_view("a", 100, 1000.0), _view("b", 500, 2000.0)]
    assert newest_seen(views, chains) == expected


def test_of_two_points_at_one_revision_the_older_counts():
    views = [_view("a", 500, 1000.0), _view("b", 500, 2000.0)]
    assert newest_seen(views, {}) == Seen(1000.0, 500)
