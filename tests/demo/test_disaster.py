"""The demo's disaster pieces: the plan dr run follows, the start scripts, what is lost."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from etcdops.demo.disaster import (
    keyspace,
    recovery_plan,
    start_scripts,
    written_after_backup,
)
from etcdops.demo.sample import load_kubernetes_objects
from etcdops.errors import EtcdopsError
from etcdops.etcd.local import LocalCluster, stop_launched
from etcdops.etcd.session import EtcdSession
from etcdops.recovery.plan import load_plan
from etcdops.restore.inventory import classify


def test_the_plan_is_the_issue_shape_for_the_three_members(tmp_path: Path) -> None:
    cluster = LocalCluster.three(tmp_path / "etcd")
    scripts = [script for script, _ in start_scripts(cluster)]
    lost = list(written_after_backup())
    path = tmp_path / "plan.toml"
    path.write_text(recovery_plan(cluster, scripts, "20260101T000000Z-abcdef", 7, lost))
    plan = load_plan(path)  # dr run's own reader: unknown keys, types, duplicates
    assert (plan.backup, plan.source) == ("20260101T000000Z-abcdef", "auto")
    assert (plan.targets.restore, plan.targets.recovery) == (300.0, 600.0)
    assert [(m.name, m.peer_url, m.client_url, m.data_dir, m.exec) for m in plan.members] == [
        (m.name, m.peer_url, m.client_url, m.data_dir, "") for m in cluster.members
    ]
    assert plan.initial_cluster == cluster.initial_cluster
    assert plan.steps.stop.commands == ()
    assert plan.steps.start.commands == tuple(f"sh {script}" for script in scripts)
    assert plan.steps.nodes.expect == 7 and plan.steps.pods.min_updated == 0.9
    assert plan.steps.controllers.require_keys == tuple(key.decode() for key in lost)
    assert {plan.steps.start.timeout, plan.steps.nodes.timeout, plan.steps.pods.timeout,
            plan.steps.controllers.timeout} == {60.0}


def test_a_start_script_runs_its_member_detached_and_its_pid_file_stops_it(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster.single(tmp_path / "etcd")
    [(script, pid_file)] = start_scripts(cluster)
    assert script.stat().st_mode & 0o777 == 0o700
    try:
        assert subprocess.run(["sh", str(script)], timeout=30).returncode == 0
        pid = int(pid_file.read_text())
        _wait_for_leader(cluster)
        # run again while it runs: nothing to do, the same member
        assert subprocess.run(["sh", str(script)], timeout=30).returncode == 0
        assert int(pid_file.read_text()) == pid
    finally:
        stop_launched(pid_file)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _wait_for_leader(cluster: LocalCluster) -> None:
    deadline = time.monotonic() + 20
    config = cluster.etcd_config(dial_timeout=0.5)
    while True:
        try:
            with EtcdSession(config) as session:
                if session.status(cluster.client_urls[0]).leader_id:
                    return
        except EtcdopsError:
            pass
        assert time.monotonic() < deadline, "the launched member never had a leader"
        time.sleep(0.1)


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_what_is_written_after_the_backup_is_kubernetes_shaped() -> None:
    lost = written_after_backup()
    assert [classify(key).resource for key in lost] == ["deployments", "replicasets"]
    assert {classify(key).namespace for key in lost} == {"production"}
    deployment, replica_set = (json.loads(value) for value in lost.values())
    assert replica_set["metadata"]["ownerReferences"][0]["name"] == deployment["metadata"]["name"]


def test_the_keyspace_digest_tells_the_same_keys_from_other_keys(etcd_single) -> None:
    with EtcdSession(etcd_single.etcd_config()) as session:
        load_kubernetes_objects(session, 200)
        before = keyspace(session)
        # new values under the same keys: the same keyspace
        session.put_many([(b"/registry/namespaces/default", b"{}")])
        assert keyspace(session) == before
        session.put_many([(b"/registry/namespaces/extra", b"{}")])
        grown = keyspace(session)
        session.delete_keys([b"/registry/namespaces/extra", b"/registry/namespaces/default"])
        session.put_many([(b"/registry/namespaces/defaulT", b"{}")])
        renamed = keyspace(session)
    assert (before.keys, grown.keys, renamed.keys) == (200, 201, 200)
    assert renamed.sha256 != before.sha256
