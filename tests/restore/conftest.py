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


@pytest.fixture
def bind_mount():
    """mount --bind SOURCE TARGET (read-only if asked), as root does on a real host; every
    mount made is unmounted at teardown."""
    import subprocess

    mounted = []

    def mount(source, target, *, read_only=False):
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        mounted.append(target)
        if read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=True)
