"""The revision plans: what etcdutl's help offers decides the flags, and the write rate that a
snapshot's samples show decides how far a staging etcd advances the revision."""

import pytest

from etcdops.etcd.binaries import find_binary
from etcdops.restore.revision import (
    GAP_FLOOR,
    RESTART,
    etcdutl_bumps,
    flags_plan,
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
