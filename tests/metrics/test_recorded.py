"""What the jobs record in their metrics files, run for real: a save through the CLI, a drill,
a compaction that sees NOSPACE."""

import dataclasses
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.config import Config, DefragConfig, LocalConfig, RetentionConfig
from etcdops.config.settings import MetricsConfig
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.journal.prune import prune
from etcdops.maintenance.compaction import compact
from etcdops.maintenance.defrag import defragment_cluster
from etcdops.report import LogReporter
from etcdops.restore.drill import verify_backup
from etcdops.stores.configured import open_stores
from tests.fixtures.etcd import fill_until_nospace
from tests.fixtures.system import require_system_package
from tests.metrics.test_textfile import config, samples
from tests.recovery.conftest import aws, launcher, saved_backup  # noqa: F401 (fixtures)
from tests.recovery.test_run import old_hosts  # noqa: F401 (a fixture)

LAST_SUCCESS = [f"etcdops_snapshot_last_success_{name}" for name in
                ("timestamp_seconds", "duration_seconds", "size_bytes", "revision")]


def test_snapshot_save_writes_the_file_and_a_failed_save_keeps_the_last_success(
    backup_toml, etcd_loaded, unreachable_endpoint, tmp_path
):
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    env = {"ETCDOPS_METRICS_TEXTFILE_DIR": str(textfiles), "ETCDOPS_ETCD_DIAL_TIMEOUT": "1s"}

    def save(*args):
        return CliRunner().invoke(
            app, ["snapshot", "save", "--local-only", "-o", "json", "--config", str(backup_toml),
                  *args], env=env
        )

    saved = save()
    assert saved.exit_code == 0, saved.output
    manifest = json.loads(saved.stdout)
    path = textfiles / "etcdops_test_snapshot.prom"
    local = frozenset({"cluster": "test", "store": "local"}.items())
    first = samples(path)
    assert first["etcdops_snapshot_last_success_revision", local] == manifest["etcd"]["revision"]
    assert first["etcdops_snapshot_last_success_size_bytes", local] == manifest["object_size"]
    assert first["etcdops_snapshot_failures_total", local] == 0
    assert first["etcdops_snapshot_period_seconds", frozenset({("cluster", "test")})] == 3600

    failed = save("--endpoints", unreachable_endpoint)
    assert failed.exit_code == 13, failed.output
    after = samples(path)
    for name in LAST_SUCCESS:
        assert after[name, local] == first[name, local], name
    assert after["etcdops_snapshot_attempts_total", local] == 2
    assert after["etcdops_snapshot_failures_total", local] == 1

    promtool = require_system_package("promtool", "prometheus")
    checked = subprocess.run([promtool, "check", "metrics"], input=path.read_bytes(),
                             capture_output=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""  # no lint complaint either


def test_a_drill_records_its_result(backup_config, tmp_path):
    save_snapshot(backup_config, LogReporter())
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    recorded = dataclasses.replace(backup_config, metrics=MetricsConfig(textfiles))
    drilled = verify_backup(recorded, "latest", LogReporter(), drill=True)
    assert drilled.verified
    found = samples(textfiles / "etcdops_test_drill.prom")
    cluster = frozenset({("cluster", "test")})
    assert found["etcdops_drill_verified", cluster] == 1
    assert found["etcdops_drill_attempts_total", cluster] == 1
    assert found["etcdops_drill_failures_total", cluster] == 0
    assert found["etcdops_drill_last_success_duration_seconds", cluster] > 0


def test_a_compaction_exports_the_nospace_alarm(
    etcd_tiny_quota: LocalCluster, etcd3_client, tmp_path
):
    client = etcd3_client(etcd_tiny_quota.members[0].client_url)
    fill_until_nospace(client)
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    configured = reaching(etcd_tiny_quota, textfiles)
    with EtcdSession(configured.etcd) as session:
        result = compact(session, configured.compaction, retain=0.0, metrics=configured)
    found = samples(textfiles / "etcdops_main_compaction.prom")
    cluster = frozenset({("cluster", "main")})
    assert found["etcdops_compaction_nospace_alarms", cluster] == 1 == result.nospace_alarms
    assert found["etcdops_compaction_revision", cluster] == result.target_revision > 1
    assert found["etcdops_compaction_attempts_total", cluster] == 1


def test_a_prune_counts_its_deletions_per_store(backup_config, tmp_path):
    for _ in range(3):
        save_snapshot(backup_config, LogReporter())
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    recorded = dataclasses.replace(backup_config, metrics=MetricsConfig(textfiles))
    later = datetime.now(UTC) + timedelta(days=30)
    policy = RetentionConfig(keep_min=1)
    stores = open_stores(recorded)
    prune(stores, "test", policy, later, LogReporter(), dry_run=True, metrics=recorded)
    assert list(textfiles.iterdir()) == []
    report = prune(stores, "test", policy, later, LogReporter(), metrics=recorded)
    assert len(report.stores[0].deleted) == 2
    found = samples(textfiles / "etcdops_test_prune.prom")
    local = frozenset({"cluster": "test", "store": "local"}.items())
    assert found["etcdops_prune_deletions_total", local] == 2
    assert found["etcdops_prune_failures_total", local] == 0


def test_a_defragmentation_counts_the_bytes_it_reclaimed(
    etcd_single: LocalCluster, etcd3_client, tmp_path
):
    client = etcd3_client(etcd_single.members[0].client_url)
    for round_ in range(5):  # overwritten, so that the compaction frees most of the file
        for key in range(20):
            client.put(f"/registry/configmaps/churn/c-{key}", bytes([round_]) * 100_000)
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    configured = dataclasses.replace(
        reaching(etcd_single, textfiles), defrag=DefragConfig(free_threshold=1024**2),
        local=LocalConfig(dir=tmp_path / "state"),
    )
    with EtcdSession(configured.etcd) as session:
        compact(session, configured.compaction, retain=0.0, physical=True)
        noon = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # outside the 02:00-05:00 window
        skipped = defragment_cluster(session, configured, LogReporter(), now=noon)
        assert skipped.skipped
        path = textfiles / "etcdops_main_defrag.prom"
        cluster = frozenset({("cluster", "main")})
        assert samples(path)["etcdops_defrag_attempts_total", cluster] == 1  # the file is fresh
        report = defragment_cluster(session, configured, LogReporter(), now=noon, force=True)
    [done] = report.done
    found = samples(path)
    assert found["etcdops_defrag_attempts_total", cluster] == 2
    assert found["etcdops_defrag_reclaimed_bytes_total", cluster] == (
        done.size_before - done.size_after
    ) > 1024**2


def test_a_dry_run_records_nothing(etcd_single: LocalCluster, tmp_path):
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    configured = reaching(etcd_single, textfiles)
    with EtcdSession(configured.etcd) as session:
        compact(session, configured.compaction, dry_run=True, metrics=configured)
        assert list(textfiles.iterdir()) == []
        compact(session, configured.compaction, metrics=configured)
    assert [p.name for p in textfiles.iterdir()] == ["etcdops_main_compaction.prom"]


def reaching(cluster: LocalCluster, textfiles: Path) -> Config:
    """The configuration of cluster 'main' on a local etcd, its metrics in textfiles."""
    return dataclasses.replace(config(textfiles), etcd=cluster.etcd_config())


def test_a_recovery_records_each_step_it_ran_and_its_failure(
    aws, tmp_path, old_hosts, launcher  # noqa: F811 (the fixtures imported above)
):
    from tests.recovery.conftest import Member, config_toml, plan_toml

    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    config = config_toml(tmp_path / "etcdops.toml", aws, local_dir=tmp_path / "lost-disk",
                         extra=f'[metrics]\ntextfile_dir = "{textfiles}"')
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in old_hosts.members],
                     start=launcher.commands(old_hosts), stop=["exit 3"])
    result = CliRunner().invoke(
        app, ["dr", "run", "--plan", str(plan), "--config", str(config), "-q", "-o", "json"]
    )
    assert result.exit_code == 1, result.output
    found = samples(textfiles / f"etcdops_{aws.config.cluster}_recovery.prom")
    cluster = frozenset({("cluster", aws.config.cluster)})
    assert found["etcdops_recovery_failures_total", cluster] == 1
    step = frozenset({("cluster", aws.config.cluster), ("step", "stop")})
    assert found["etcdops_recovery_step_duration_seconds", step] > 0
    assert not [labels for name, labels in found if ("step", "restore") in labels]
