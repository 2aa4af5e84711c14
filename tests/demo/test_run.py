"""`etcdops demo` as a real process: the whole job, the disaster and the recovery, the
namespace deleted and restored to the moment before, then nothing left behind (no etcd, no
files)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

STEPS = [
    "start etcd", "start S3", "compact", "load objects", "generate key", "snapshot save",
    "snapshot list", "snapshot status", "snapshot fetch", "after the backup", "disaster",
    "dr run", "check", "primary back", "journal run", "workload", "namespace deleted",
    "restore --at", "namespace back",
]
RECOVERY_STEPS = ["stop", "restore", "start", "nodes", "pods", "controllers"]


def etcdops_command() -> list[str]:
    script = Path(sys.executable).with_name("etcdops")
    return [str(script)] if script.exists() else [sys.executable, "-m", "etcdops"]


def processes_under(directory: Path) -> list[str]:
    """Command lines of the live processes that name a path under directory (etcd members)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited meanwhile
        if state != "Z" and any(str(directory).encode() in word for word in argv):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*etcdops_command(), "demo", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )


def test_demo_runs_the_whole_job_the_disaster_and_the_recovery_then_cleans_up():
    done = run_demo("--objects", "600", "--output", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == STEPS
    detail = {name: step["detail"] for name, step in steps.items()}
    assert detail["start etcd"].startswith("three members at ")
    assert detail["start etcd"].count("http://127.0.0.1:") == 3
    assert "600 Kubernetes objects" in detail["load objects"]
    assert "in local, primary, replica" in detail["snapshot save"]
    assert "read from the replica region: integrity ok" in detail["snapshot status"]

    # the disaster: every member's data dir gone, the primary region down
    disaster = steps["disaster"]["facts"]
    assert len(disaster["removed"]) == 3
    assert "SIGKILL" in detail["disaster"] and "unreachable" in detail["disaster"]

    # dr run: from the replica region, every step ok, both targets met
    recovery = report["recovery"]
    assert recovery["completed"] is True and recovery["error"] is None
    assert [s["name"] for s in recovery["steps"]] == RECOVERY_STEPS
    assert {s["name"]: s["verdict"] for s in recovery["steps"]} == dict.fromkeys(
        RECOVERY_STEPS, "ok"
    )
    assert recovery["restore_time"]["target_seconds"] == 300
    assert recovery["recovery_time"]["target_seconds"] == 600
    assert recovery["restore_time"]["met"] is True and recovery["recovery_time"]["met"] is True
    assert recovery["restore_time"]["seconds"] <= recovery["recovery_time"]["seconds"]
    assert recovery["targets_missed"] == []
    assert recovery["backup"]["store"] == "replica"
    assert any("primary" in note for note in recovery["backup"]["fallbacks"])
    assert 0 < recovery["data_loss_window_seconds"] < 120
    assert len(recovery["members"]) == 3
    nodes = next(s for s in recovery["steps"] if s["name"] == "nodes")["detail"]
    assert nodes.startswith(f"{_expected_nodes(600)} node leases renewed")
    assert "2 of 2 required keys exist" in next(
        s for s in recovery["steps"] if s["name"] == "controllers"
    )["detail"]
    simulated = steps["dr run"]["facts"]["simulated"]
    assert simulated["heartbeats"] >= 1 and simulated["pods_updated"] > 0
    assert len(simulated["recreated"]) == 2  # lost with the backup's age, put back

    # everything that existed before the disaster is back, under a later revision
    check = steps["check"]["facts"]
    assert check["same_keys"] is True and check["keys_after"] == check["keys_before"] == 603
    assert check["restored_at"] > check["revision_before"]
    assert check["old_revision_compacted"] is True
    assert recovery["warnings"] == []  # the revision was advanced: nothing to restart

    # the point in time: the deleted namespace back from the journal, as it was
    rewind = report["rewind"]
    assert rewind["namespace"] == "production" and rewind["deleted_keys"] > 0
    assert rewind["workload"]["writes"] > 0 and rewind["journal"]["segments"] > 0
    restore, replay, back = rewind["restore"], rewind["replay"], rewind["check"]
    # a backup of the recovered cluster, not the one dr run restored
    assert restore["backup_id"] == rewind["base_backup_id"] != recovery["backup"]["id"]
    assert rewind["target"] == rewind["deleted_at"]
    assert replay["from_revision"] == rewind["base_revision"]
    assert replay["events"] >= replay["revisions"] > 0
    first_delete, last_delete = rewind["delete_revisions"]
    assert replay["to_revision"] == restore["revision"]["snapshot"] == first_delete - 1
    # advanced past the delete, as dr run's restore was past the disaster
    assert back["revision"] == restore["revision"]["after_restore"] > last_delete
    assert back["restored_keys"] == rewind["deleted_keys"] and back["same_values"] is True
    assert back["since_backup"]["created"] > 0 and back["since_backup"]["rolled_out"] > 0
    assert any("lease" in warning for warning in restore["warnings"])

    # nothing is left: no etcd, no files
    workdir = Path(report["workdir"])
    assert not workdir.exists()
    assert processes_under(workdir) == []


def _expected_nodes(objects: int) -> int:
    from etcdops.demo.sample import sample_nodes

    return len(sample_nodes(objects))


def test_demo_text_prints_the_steps_and_the_recovery_timing_against_the_targets():
    done = run_demo("--objects", "300", "-q")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # table cells wrap at the terminal's width
    for name in ("disaster", "dr run", "check", "namespace deleted", "restore --at",
                 "namespace back"):
        assert f"│ {name} " in text
    assert "Recovery of " in text  # dr run's own report
    for step in ("restore", "start", "nodes", "pods", "controllers"):
        assert f"│ {step} " in text
    assert "restore time" in text and "(target 5m00s): met" in text
    assert "recovery time" in text and "(target 10m00s): met" in text
    assert "data-loss window" in text and "read from the replica store" in text
    assert "restore latest --at " in text
    assert re.search(r"the moment before the delete -> [\d,]+ after the restore \(bumped: "
                     r"staging etcd\)", text), text
    assert "objects back, each with the value it had before the delete" in text
    assert "demo files removed" in text
    assert done.stderr == ""  # no warning: the revision was advanced, no target missed


def test_demo_keep_leaves_the_plan_the_state_and_the_restored_members_stopped():
    done = run_demo("--objects", "50", "--keep", "-o", "json", "-q")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    workdir = Path(report["workdir"])
    try:
        plan = workdir / "dr-plan.toml"
        assert 'source = "auto"' in plan.read_text()
        state = json.loads((workdir / "dr-plan.toml.state.json").read_text())
        assert state["completed_at"] and state["store"] == "replica"
        assert (workdir / "restore.db").stat().st_size > 0
        for member in ("etcd-1", "etcd-2", "etcd-3"):
            data = workdir / "etcd" / member / "data"
            assert (data / "member" / "snap" / "db").is_file()
            assert oct(data.stat().st_mode & 0o777) == "0o700"
        # the local backup was lost with the hosts; their new disks hold the scene's only
        first = report["recovery"]["backup"]["id"]
        snapshots = workdir / "backups" / "demo" / "snapshots"
        local = [path.name for path in snapshots.rglob("*.manifest.json")]
        assert local == [f"{report['rewind']['base_backup_id']}.manifest.json"] != [first]
        rewound = workdir / "rewind" / "data"  # the point-in-time restore's member, stopped
        assert (rewound / "member" / "snap" / "db").is_file()
        assert processes_under(workdir) == []
    finally:
        shutil.rmtree(workdir)


def sigterm_at(tmp_path, objects: str, line_starting: str, *, check=None, timeout=60) -> None:
    """Run the demo with TMPDIR in tmp_path, SIGTERM it once it logs a line holding
    line_starting (after check(), if given, passes): it exits 130 and leaves nothing behind."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    demo = subprocess.Popen(
        [*etcdops_command(), "demo", "--objects", objects],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    seen = []
    try:
        assert demo.stderr is not None
        for line in demo.stderr:
            seen.append(line)
            if line_starting in line:
                if check is not None:
                    check()
                demo.send_signal(signal.SIGTERM)
                break
        else:
            raise AssertionError(f"the demo never logged {line_starting!r}:\n" + "".join(seen))
        demo.stderr.read()
        assert demo.wait(timeout=timeout) == 130
    finally:
        demo.kill()
        demo.wait()
    assert processes_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_the_recovery_stops_every_member_and_removes_everything(tmp_path):
    def members_running() -> None:
        # the members run detached from here on: only the demo's cleanup stops them
        assert processes_under(tmp_path), "the restored members should be running"

    sigterm_at(tmp_path, "300", "step 2 (Start control plane components): ok",
               check=members_running)


def test_sigterm_while_the_journal_follows_the_workload_stops_it_and_removes_everything(
    tmp_path,
):
    # the journal runs on its thread while the workload writes
    sigterm_at(tmp_path, "100", "a workload writes for", timeout=90)
