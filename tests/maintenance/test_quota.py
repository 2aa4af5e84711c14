"""The quota and NOSPACE rules, against the numbers at their edges and a real etcd's NOSPACE."""

from etcdops.etcd.local import LocalCluster
from etcdops.etcd.maintenance import Alarm
from etcdops.etcd.session import EtcdSession
from etcdops.maintenance.quota import (
    NOSPACE,
    above_share,
    is_nospace_error,
    nospace_alarms,
    share_text,
)
from tests.fixtures.etcd import fill_until_nospace

GiB = 1024**3


def test_above_share_is_strict_and_exact() -> None:
    quota = 8 * GiB
    assert not above_share(quota * 80 // 100, quota, 80)  # exactly 80 % is not above
    assert above_share(quota * 80 // 100 + 1, quota, 80)  # one byte more is
    assert not above_share(quota, quota, 100)
    assert share_text(80, quota) == "80% of quota 8.0 GiB"


def test_nospace_as_a_real_etcd_reports_it(etcd_tiny_quota: LocalCluster, etcd3_client) -> None:
    fill_until_nospace(etcd3_client(etcd_tiny_quota.client_urls[0]))
    with EtcdSession(etcd_tiny_quota.etcd_config()) as session:
        alarms = session.alarms()
        [status] = session.statuses()
    assert nospace_alarms([*alarms, Alarm(status.member_id, "CORRUPT")]) == alarms
    assert [alarm.kind for alarm in alarms] == [NOSPACE]
    assert status.errors and all(is_nospace_error(error) for error in status.errors)
    assert not is_nospace_error(f"memberID:{status.member_id} alarm:CORRUPT")
