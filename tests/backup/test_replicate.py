"""`snapshot replicate`: copying to the replica region what a save could not put there."""

import json

from typer.testing import CliRunner

from etcdops.cli.main import app
from tests.backup.two_regions import assert_listing_honest, toml_for, with_s3


def test_replica_region_down_is_partial_and_replicate_heals_it(
    backup_config, s3, s3_proxy, tmp_path
):
    dead = s3_proxy()
    dead.down()
    broken = toml_for(with_s3(backup_config, s3, replica_url=dead.url), tmp_path / "broken.toml")
    runner = CliRunner()
    saved = runner.invoke(app, ["snapshot", "save", "-o", "json", "--config", str(broken)])
    assert saved.exit_code == 3, saved.output
    doc = json.loads(saved.stdout)
    assert doc["stored_in"] == ["local", "primary"]
    assert "replica" in doc["failed"]
    assert doc["durations"]["total"] >= doc["durations"]["replica_copy"]  # the failed attempt
    assert "warning: backup" in saved.stderr and "replica" in saved.stderr
    assert_listing_honest(with_s3(backup_config, s3))

    healthy = toml_for(with_s3(backup_config, s3), tmp_path / "healthy.toml")
    listed = json.loads(runner.invoke(app, ["snapshot", "list", "-o", "json", "--config",
                                            str(healthy)]).stdout)
    assert listed["backups"][0]["stores"] == {"local": None, "primary": None}
    healed = runner.invoke(app, ["snapshot", "replicate", "--missing", "-o", "json",
                                 "--config", str(healthy)])
    assert healed.exit_code == 0, healed.output
    assert json.loads(healed.stdout)["copied"] == [{"id": doc["id"], "store": "replica"}]
    listed = json.loads(runner.invoke(app, ["snapshot", "list", "-o", "json", "--config",
                                            str(healthy)]).stdout)
    assert listed["backups"][0]["stores"] == {"local": None, "primary": None, "replica": None}
    again = runner.invoke(app, ["snapshot", "replicate", "--missing", "-o", "json",
                                "--config", str(healthy)])
    assert json.loads(again.stdout)["copied"] == []


def test_server_side_copy_is_a_store_capability_not_a_type(backup_config, tmp_path):
    """Any store that says it can copy another's objects is asked to, S3 or not."""
    import shutil

    from etcdops.backup.catalog import Catalog
    from etcdops.backup.checks import COPIED
    from etcdops.backup.replicate import copy_backup
    from etcdops.backup.save import save_snapshot
    from etcdops.report import LogReporter
    from etcdops.stores.local import LocalStore

    class SameDiskCopy(LocalStore):
        copied: list[str] = []

        def can_copy_from(self, source):
            return isinstance(source, LocalStore)

        def copy_from(self, source, key, size):
            self.copied.append(key)
            (self.root / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.root / key, self.root / key)

    manifest = save_snapshot(backup_config, LogReporter()).manifest
    source = LocalStore(backup_config.local.dir)
    target = SameDiskCopy(tmp_path / "other", "other")
    copy_backup(manifest, source, target, LogReporter())
    assert target.copied == [manifest.object_key]
    [copy] = Catalog(target, backup_config.cluster).entries()
    assert copy.verified and copy.check.method == COPIED
