"""The revision plan follows what the etcdutl found says in its help, not its version."""

from etcdops.config.settings import RestoreConfig
from etcdops.etcd.binaries import find_binary
from etcdops.restore.revision import RESTART, plan_revision
from tests.restore.standins import bumping_etcdutl


def test_etcd_distros_etcdutl_cannot_bump_so_the_plan_says_what_to_restart():
    etcdutl = find_binary("etcdutl")
    plan = plan_revision(etcdutl, RestoreConfig())
    assert (plan.method, plan.bump, plan.flags) == ("none", 0, ())
    assert plan.revision_after(1234) == 1234
    assert str(etcdutl) in plan.warning and "has no --bump-revision" in plan.warning
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler",
                      "every kubelet", "every kube-proxy"):
        assert component in plan.warning
    assert plan.as_dict(1234) == {
        "method": "none", "bump": 0, "snapshot": 1234, "after_restore": 1234,
        "restart": list(RESTART),
    }


def test_an_etcdutl_whose_help_offers_both_flags_gets_them_with_the_configured_bump(tmp_path):
    etcdutl, _ = bumping_etcdutl(tmp_path)
    plan = plan_revision(etcdutl, RestoreConfig(bump_revision=5000))
    assert plan.flags == ("--bump-revision", "5000", "--mark-compacted")
    assert plan.warning is None
    assert plan.as_dict(10)["after_restore"] == 5010
    assert plan_revision(etcdutl, RestoreConfig()).bump == 1_000_000_000
