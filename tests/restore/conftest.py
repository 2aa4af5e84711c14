"""Fixtures the restore tests share: a backup of etcd_loaded, and an empty scratch directory."""

import pytest

from etcdops.backup.save import save_snapshot
from etcdops.report import LogReporter


@pytest.fixture
def saved(backup_config, etcd_loaded):
    """The manifest of a local backup of etcd_loaded."""
    return save_snapshot(backup_config, LogReporter()).manifest


@pytest.fixture
def scratch(tmp_path):
    """Where scratch directories go: empty before, and it must be empty after."""
    path = tmp_path / "scratch"
    path.mkdir()
    return path
