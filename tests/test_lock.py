import subprocess
import sys

import pytest

from etcdops.config import Config, LocalConfig
from etcdops.errors import LockedError
from etcdops.lock import HostLock, job_lock


def test_second_holder_is_refused_with_the_holders_pid(tmp_path):
    path = tmp_path / "job.lock"
    with HostLock(path, "snapshot save"):
        holder = subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; from etcdops.lock import HostLock\n"
             "from etcdops.errors import LockedError\n"
             f"try:\n  HostLock(Path({str(path)!r}), 'snapshot save').__enter__()\n"
             "except LockedError as e:\n  print(e.message); sys.exit(11)\n"],
            capture_output=True, text=True, check=False,
        )
        assert holder.returncode == 11
        assert "another snapshot save is running" in holder.stdout
        assert str(__import__("os").getpid()) in holder.stdout
    with HostLock(path, "snapshot save"):
        pass  # released on exit, so it can be taken again


def test_lock_in_same_process_is_also_exclusive(tmp_path):
    path = tmp_path / "job.lock"
    with HostLock(path, "job"), pytest.raises(LockedError):
        HostLock(path, "job").__enter__()


def test_two_clusters_sharing_a_directory_never_block_each_other(tmp_path):
    # one host serves several clusters (the seed keeps events in an etcd of its own), often
    # with one [local] dir: a lock per directory would skip one cluster's hourly save
    main = Config(cluster="main", local=LocalConfig(dir=tmp_path))
    events = Config(cluster="events", local=LocalConfig(dir=tmp_path))
    with job_lock(main, "snapshot save"), job_lock(events, "snapshot save"):
        with pytest.raises(LockedError, match="another snapshot save of cluster main is"):
            job_lock(main, "snapshot save").__enter__()
        with job_lock(main, "defrag"):  # and the jobs of one cluster each have their own
            pass
