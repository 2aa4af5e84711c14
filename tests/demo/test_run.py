import json
import shutil
import subprocess
import sys
from pathlib import Path


def etcdops_command() -> list[str]:
    script = Path(sys.executable).with_name("etcdops")
    return [str(script)] if script.exists() else [sys.executable, "-m", "etcdops"]


def test_demo_runs_the_whole_job_as_a_real_process_and_cleans_up():
    done = subprocess.run(
        [*etcdops_command(), "demo", "--objects", "400", "--output", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    steps = {s["name"]: s["detail"] for s in report["steps"]}
    assert list(steps) == [
        "start etcd", "start S3", "load objects", "generate key", "snapshot save",
        "snapshot list", "snapshot status", "snapshot fetch",
    ]
    assert "400 Kubernetes objects" in steps["load objects"]
    assert "in local, primary, replica" in steps["snapshot save"]
    assert "verified in local, primary, replica" in steps["snapshot list"]
    assert "read from the replica region: integrity ok" in steps["snapshot status"]
    assert "400 keys" in steps["snapshot status"]
    assert not Path(report["workdir"]).exists()


def test_demo_keep_leaves_the_backup_to_look_at():
    done = subprocess.run(
        [*etcdops_command(), "demo", "--objects", "50", "--keep", "-o", "json", "-q"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    workdir = Path(json.loads(done.stdout)["workdir"])
    try:
        assert list(workdir.glob("backups/demo/snapshots/*/*/*/*.manifest.json"))
        assert (workdir / "restore.db").stat().st_size > 0
    finally:
        shutil.rmtree(workdir)
