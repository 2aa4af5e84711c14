"""`etcdops health` checks against real members, real /metrics pages and real backups."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime, timedelta

from etcdops.backup.catalog import Catalog, combined_view
from etcdops.backup.retention import Condition
from etcdops.backup.save import save_snapshot
from etcdops.config import Config, HealthConfig
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.maintenance.health import (
    FAIL,
    INFO,
    OK,
    WARN,
    backup_freshness,
    check_backups,
    check_cluster,
    check_health,
)
from etcdops.report import LogReporter
from etcdops.stores.configured import open_stores
from etcdops.stores.local import LocalStore
from tests.fixtures.etcd import TINY_QUOTA, fill_until_nospace

# latency on a shared CI disk is not the production target: these pass anywhere
GENEROUS = HealthConfig(wal_fsync_p99=10.0, backend_commit_p99=10.0, compaction_p99=60.0)
IMPOSSIBLE = HealthConfig(wal_fsync_p99=1e-9, backend_commit_p99=1e-9, compaction_p99=1e-9)


def by_key(checks):
    return {(c.subject, c.name): c for c in checks}


def cluster_checks(cluster: LocalCluster, health: HealthConfig, **etcd):
    config = Config(etcd=cluster.etcd_config(dial_timeout=1.0, **etcd), health=health)
    with EtcdSession(config.etcd) as session:
        return check_cluster(session, config)


def test_a_healthy_member_with_a_fresh_backup_passes(backup_config: Config) -> None:
    save_snapshot(backup_config, LogReporter())
    [entry] = Catalog(LocalStore(backup_config.local.dir), backup_config.cluster).entries()
    config = dataclasses.replace(backup_config, health=GENEROUS)
    checks = check_health(config, datetime.now(UTC))
    failed = [c for c in checks if c.failed]
    assert failed == []
    rows = by_key(checks)
    names = {name for _, name in rows}
    assert names >= {"status", "version", "raft", "alarms", "db size", "wal fsync p99",
                     "backend commit p99", "compaction p99", "newest backup"}
    assert rows[("etcd-1", "status")].value.startswith("leader at http://127.0.0.1:")
    assert rows[("etcd-1", "version")].verdict == INFO
    assert rows[("etcd-1", "alarms")].value == "none"
    # etcd's default quota (2 GiB) is lower than the configured 8 GiB: the member's counts
    assert rows[("etcd-1", "db size")].target == "<= 80% of quota 2.0 GiB"
    assert rows[("etcd-1", "wal fsync p99")].verdict == OK
    assert rows[("etcd-1", "wal fsync p99")].target == "< 10.0s"
    assert entry.manifest.id in rows[("backups", "newest backup")].value


def test_latency_targets_are_judged_from_the_real_page(etcd_loaded) -> None:
    rows = by_key(cluster_checks(etcd_loaded.cluster, IMPOSSIBLE))
    for name in ("wal fsync p99", "backend commit p99"):
        assert rows[("etcd-1", name)].verdict == FAIL, name
        assert rows[("etcd-1", name)].value.endswith("since the member started")
    # no compaction has run on this member yet: nothing to judge
    assert rows[("etcd-1", "compaction p99")].verdict == INFO
    assert rows[("etcd-1", "compaction p99")].value.startswith("no data")
    assert rows[("etcd-1", "status")].verdict == OK


def test_nospace_fails_alarms_and_size_against_the_member_quota(
    etcd_tiny_quota: LocalCluster, etcd3_client
) -> None:
    fill_until_nospace(etcd3_client(etcd_tiny_quota.client_urls[0]))
    rows = by_key(cluster_checks(etcd_tiny_quota, GENEROUS))
    assert rows[("etcd-1", "alarms")].value == "NOSPACE"
    assert rows[("etcd-1", "alarms")].verdict == FAIL
    assert rows[("etcd-1", "db size")].target == f"<= 80% of quota {TINY_QUOTA // 1024**2}.0 MiB"
    assert rows[("etcd-1", "db size")].verdict == FAIL
    assert rows[("etcd-1", "status")].verdict == OK  # the alarm is its own row


def test_a_stopped_member_fails_its_row_and_the_others_still_report(
    etcd_cluster3: LocalCluster,
) -> None:
    stopped = etcd_cluster3.members[1]
    stopped.stop()
    rows = by_key(cluster_checks(etcd_cluster3, GENEROUS))
    assert rows[(stopped.name, "status")].verdict == FAIL
    assert stopped.client_url in rows[(stopped.name, "status")].value
    assert (stopped.name, "db size") not in rows
    for name in ("etcd-1", "etcd-3"):
        assert rows[(name, "status")].verdict == OK
        assert rows[(name, "raft")].verdict == OK
        assert rows[(name, "wal fsync p99")].verdict == OK


def test_configured_metrics_urls_are_used(etcd_single: LocalCluster) -> None:
    member = etcd_single.members[0]
    good = by_key(cluster_checks(etcd_single, GENEROUS, metrics_urls=(member.metrics_url,)))
    assert good[("etcd-1", "wal fsync p99")].verdict == OK
    wrong = f"http://127.0.0.1:{member.peer_port}/nothing-here"
    bad = by_key(cluster_checks(etcd_single, GENEROUS, metrics_urls=(wrong,)))
    assert bad[("etcd-1", "metrics")].verdict == FAIL
    assert wrong in bad[("etcd-1", "metrics")].value
    assert ("etcd-1", "wal fsync p99") not in bad  # unknown is not reported as ok


def test_unreachable_cluster_is_one_failed_row(unreachable_endpoint) -> None:
    config = Config(etcd=dataclasses.replace(
        Config().etcd, endpoints=(unreachable_endpoint,), dial_timeout=0.5
    ))
    with EtcdSession(config.etcd) as session:
        [check] = check_cluster(session, config)
    assert (check.subject, check.name, check.verdict) == ("cluster", "reachable", FAIL)
    assert unreachable_endpoint in check.value


def test_backup_freshness_against_the_schedule(backup_config: Config) -> None:
    save_snapshot(backup_config, LogReporter())
    views, _ = combined_view(open_stores(backup_config), backup_config.cluster)
    created = views[-1].manifest.created_at
    hour = 3600.0
    fresh = backup_freshness(views, created + timedelta(minutes=50), hour)
    stale = backup_freshness(views, created + timedelta(minutes=61), hour)
    assert fresh.verdict == OK and fresh.value.startswith("50m00s ago")
    assert fresh.value.endswith("in local)")
    assert stale.verdict == FAIL and stale.target == "< 60m00s old"
    none = backup_freshness([], created, hour)
    assert none.verdict == FAIL and none.value == "no verified backup in any store"
    # a backup whose object is missing does not count, nor one whose bytes are not known good
    for condition in (Condition.DAMAGED, Condition.UNCHECKED):
        entry = dataclasses.replace(views[-1].entries["local"], condition=condition)
        broken = [dataclasses.replace(views[-1], entries={"local": entry})]
        assert backup_freshness(broken, created, hour).verdict == FAIL


def test_a_rewritten_copy_and_a_garbled_manifest_are_warned_and_never_the_newest(
    backup_config: Config,
) -> None:
    first, second, third = (save_snapshot(backup_config, LogReporter()).manifest for _ in "123")
    root = backup_config.local.dir
    shutil.copyfile(root / first.object_key, root / second.object_key)
    (root / third.manifest_key).write_text('{"schema_version": 1, "id": "')
    checks = check_backups(backup_config, datetime.now(UTC))
    [newest] = [c for c in checks if c.name == "newest backup"]
    assert newest.verdict == OK and f"({first.id}, verified in local)" in newest.value
    warned = {c.name: c for c in checks if c.verdict == WARN}
    assert set(warned) == {"manifest", "copies"}
    assert warned["manifest"].value.startswith(f"damaged manifest in local: {third.id}")
    assert warned["copies"].value.startswith(f"{second.id}: local: changed since checked")
    assert not [c for c in checks if c.failed]
