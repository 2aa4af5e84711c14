"""`etcdops dr run` end to end, as an operator runs it: a real three-member cluster on loopback,
its backup in moto's two regions, the primary region gone, members launched by the plan's start
commands, kubelets simulated; refusals, the dry run, an interrupted run resumed, a missed
target."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdops.cli.main import app
from etcdops.crypto.keys import generate_identity_file
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from tests.fixtures.waiting import alive, wait_for
from tests.recovery.conftest import (
    ETCDOPS,
    INCLUDED,
    Kubelets,
    Member,
    config_toml,
    listing,
    plan_toml,
    rebuilt_hosts,
    waiting_command,
)


def dr_run(config: Path, plan: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(
        app, ["dr", "run", "--plan", str(plan), "--config", str(config), *args], env=env
    )


def every_key(cluster: LocalCluster) -> dict[bytes, bytes]:
    with EtcdSession(cluster.etcd_config()) as session:
        return {kv.key: kv.value for page in session.prefix_pages(b"/") for kv in page}


def test_a_full_recovery_from_the_replica_brings_every_key_back_in_five_timed_steps(
    aws, tmp_path, launcher, unreachable_endpoint
):
    saved = aws
    cluster = saved.cluster  # dead; its data dirs are still there, to be moved aside
    old = {member.name: sorted(p.name for p in member.data_dir.iterdir())
           for member in cluster.members}
    assert all("member" in names for names in old.values())
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk",
                         primary_url=unreachable_endpoint)
    files = tmp_path / "files"
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster), files_to=files)
    report_file = tmp_path / "report.json"
    with Kubelets(cluster.client_urls, saved.objects) as kubelets:
        result = dr_run(config, plan, "--report", str(report_file), "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads(report_file.read_text()) == report

    assert report["backup"]["id"] == saved.manifest.id
    assert report["backup"]["store"] == "replica"
    assert any("primary" in note for note in report["backup"]["fallbacks"])
    steps = report["steps"]
    assert [s["name"] for s in steps] == ["stop", "restore", "start", "nodes", "pods",
                                          "controllers"]
    assert [s["number"] for s in steps] == [0, 1, 2, 3, 4, 5]
    assert all(s["verdict"] == "ok" and s["seconds"] > 0 and s["started_at"] for s in steps)
    assert "restored on 3 members" in steps[1]["detail"]
    assert "3 members healthy" in steps[2]["detail"]
    assert "node leases renewed since the restore" in steps[3]["detail"]
    assert "restored pods updated" in steps[4]["detail"]
    assert report["completed"] and report["resume_at"] is None and report["error"] is None
    for what in ("restore_time", "recovery_time"):
        assert report[what]["met"] is True and report[what]["seconds"] > 0
    assert report["recovery_time"]["seconds"] >= report["restore_time"]["seconds"]
    # the times add up: step 1's decode ran first, before the stop step, and is shown apart;
    # the restore time is wall clock from the decode's start to step 2's end
    decode = steps[1]["decode"]
    assert decode["seconds"] > 0 and "backup decoded in" in steps[1]["detail"]
    assert [s["decode"] is None for s in steps] == [True, False, True, True, True, True]
    starts = [decode["started_at"]] + [s["started_at"] for s in steps]
    assert starts == sorted(starts), starts
    parts = decode["seconds"] + sum(s["seconds"] for s in steps[:3])
    assert parts <= report["restore_time"]["seconds"] < parts + 2.0
    assert steps[1]["seconds"] < report["restore_time"]["seconds"] - decode["seconds"]
    assert report["restore_time"]["target_seconds"] == 300.0  # [dr] restore_target's default
    assert report["data_loss_window_seconds"] > 0
    assert report["revision"]["snapshot"] == saved.manifest.etcd.revision
    assert kubelets.rounds > 0

    # every key and value as it was backed up (the kubelets rewrite the same values)
    assert every_key(cluster) == saved.objects
    for member in report["members"]:
        (aside,) = member["moved_aside"]
        assert Path(aside).parent == Path(member["data_dir"]).parent
        assert sorted(p.name for p in Path(aside).iterdir()) == old[member["name"]]
    restored = files / saved.included.relative_to("/")
    assert restored.read_bytes() == INCLUDED
    # no plaintext left anywhere beside the data dirs
    assert not [p for m in cluster.members for p in m.data_dir.parent.glob(".etcdops-*")]


def test_text_report_and_a_missed_target_the_run_finishes_then_exits_16(
    aws, tmp_path, launcher
):
    saved = aws
    cluster = LocalCluster.three(tmp_path / "new")  # hosts rebuilt: no data dirs at all
    for member in cluster.members:
        member.data_dir.parent.mkdir(parents=True)
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster), targets={"restore": "1ms"},
                     source="primary")
    with Kubelets(cluster.client_urls, saved.objects):
        result = dr_run(config, plan, env={"COLUMNS": "1000"})
    assert result.exit_code == 16, result.output
    out = result.stdout
    rows = [line.replace("│", " ").split() for line in out.splitlines()]
    for number, name in enumerate(["restore", "start", "nodes", "pods", "controllers"], 1):
        assert any(row[:2] == [str(number), name] and "ok" in row for row in rows), out
    assert "restore time" in out and "MISSED" in out and "(target 1ms)" in out
    assert f"{saved.manifest.id}" in out and "read from the primary store" in out
    assert "nothing was there" in out  # a rebuilt host had no data dir to move aside
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("target missed: restore time" in line for line in warnings)
    # the recovery's own warnings (the revision's restart warning) are in the report too
    told = [line.removeprefix("warning: ") for line in warnings if "target missed" not in line]
    assert told, result.stderr
    flat = " ".join(out.split())
    for warning in told:
        assert f"warning {' '.join(warning.split())}" in flat, out
    assert every_key(cluster) == saved.objects
    state = json.loads((tmp_path / "plan.toml.state.json").read_text())
    assert state["completed_at"] and set(state["steps"]) == {
        "stop", "restore", "start", "nodes", "pods", "controllers"}


def test_sigterm_during_step_2_then_a_rerun_resumes_there_and_a_third_run_is_refused(
    aws, tmp_path, launcher
):
    saved = aws
    cluster = rebuilt_hosts(tmp_path / "hosts")
    marker, go = tmp_path / "start-command.pid", tmp_path / "go"
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=[waiting_command(marker, go), *launcher.commands(cluster)])
    state_file = tmp_path / "plan.toml.state.json"
    process = subprocess.Popen(
        [ETCDOPS, "dr", "run", "--plan", str(plan), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip(), "step 2's command")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted during step 2" in errors[0], err
    assert "resume at step 2" in errors[0]
    assert not alive(int(marker.read_text())), "the start command was left running"
    state = json.loads(state_file.read_text())
    assert set(state["steps"]) == {"stop", "restore"} and state["completed_at"] is None
    assert "resumes at step 2" in out  # the report so far, on stdout
    assert not [p for m in cluster.members for p in m.data_dir.parent.glob(".etcdops-*")]
    first = state["restore_started_at"]

    go.touch()
    with Kubelets(cluster.client_urls, saved.objects):
        result = dr_run(config, plan, "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    verdicts = [step["verdict"] for step in report["steps"]]
    assert verdicts[:2] == ["skipped (resumed: done before)"] * 2
    assert verdicts[2:] == ["ok"] * 4
    assert report["steps"][1]["decode"]["started_at"] == first  # as the first run recorded it
    assert report["backup"]["id"] == state["backup_id"] == saved.manifest.id
    # wall clock from the first run's step 1: the interruption's gap counts
    assert report["restore_time"]["seconds"] > report["steps"][2]["seconds"]
    assert every_key(cluster) == saved.objects

    again = dr_run(config, plan)
    assert again.exit_code == 2, again.output
    assert again.stderr.count("\n") == 1 and "already completed at" in again.stderr
    assert f"remove {state_file}" in again.stderr


def closed_ssh(unreachable_endpoint: str) -> str:
    """An exec prefix to a host where nothing answers ssh (on unreachable_endpoint's port)."""
    return ("ssh -p {} -o BatchMode=yes -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 root@127.0.0.1").format(
                unreachable_endpoint.rsplit(":", 1)[1])


@pytest.fixture
def old_hosts(tmp_path) -> LocalCluster:
    """Three members whose old data dirs are still there: a refusal must leave them so."""
    cluster = rebuilt_hosts(tmp_path / "hosts")
    for member in cluster.members:
        (member.data_dir / "member").mkdir(parents=True)
        (member.data_dir / "member" / "old").write_text(f"{member.name}'s old data")
    return cluster


def corrupt_every_region(saved) -> dict[str, bytes]:
    """Flip one byte of the object in both regions, keeping its size; the originals."""
    import boto3
    from botocore.config import Config as BotoConfig

    originals = {}
    for bucket, region in (("dr-primary", "us-east-1"), ("dr-replica", "us-west-2")):
        client = boto3.client("s3", region_name=region, endpoint_url=saved.moto,
                              config=BotoConfig(s3={"addressing_style": "path"}))
        key = saved.manifest.object_key
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        originals[bucket] = data
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x01
        client.put_object(Bucket=bucket, Key=key, Body=bytes(damaged))
    return originals


def put_back(saved, originals: dict[str, bytes]) -> None:
    import boto3
    from botocore.config import Config as BotoConfig

    for bucket, data in originals.items():
        region = "us-east-1" if bucket == "dr-primary" else "us-west-2"
        client = boto3.client("s3", region_name=region, endpoint_url=saved.moto,
                              config=BotoConfig(s3={"addressing_style": "path"}))
        client.put_object(Bucket=bucket, Key=saved.manifest.object_key, Body=data)


@pytest.mark.parametrize(("case", "code", "words"), [
    ("wrong identity", 12, "is not one of backup"),
    ("corrupt in every region", 15, "damaged"),
    ("missing etcdutl", 1, "[etcd] etcdutl"),
    ("data dir in the way", 2, "is a file, not a directory"),
    ("host unreachable", 1, "cannot reach member etcd-3"),
    ("included file in the way", 2, "set force = true in [files]"),
])
def test_each_refusal_is_one_clear_line_its_exit_code_and_no_data_dir_changed(
    aws, tmp_path, old_hosts, launcher, case, code, words, unreachable_endpoint
):
    saved, cluster = aws, old_hosts
    members = [Member.of(m) for m in cluster.members]
    identity, extra, originals, files_to = None, "", None, None
    if case == "wrong identity":
        identity = tmp_path / "other-identity.txt"
        generate_identity_file(identity)
    elif case == "missing etcdutl":
        extra = f'[etcd]\netcdutl = "{tmp_path / "no-etcdutl"}"'
    elif case == "data dir in the way":
        members[1].data_dir = tmp_path / "hosts" / "a-file"
        members[1].data_dir.write_text("not a data dir")
    elif case == "host unreachable":
        members[2].exec, members[2].etcdops = closed_ssh(unreachable_endpoint), ETCDOPS
    elif case == "included file in the way":  # found before the stop step, not in step 1
        files_to = tmp_path / "hosts" / "files"
        there = files_to / saved.included.relative_to("/")
        there.parent.mkdir(parents=True)
        there.write_text("the operator's own copy")
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk",
                         identity=identity, extra=extra)
    plan = plan_toml(tmp_path / "plan.toml", members, start=launcher.commands(cluster),
                     stop=[f"touch {tmp_path / 'stopped'}"], files_to=files_to)
    before = listing(tmp_path / "hosts")
    if case == "corrupt in every region":
        originals = corrupt_every_region(saved)
    try:
        result = dr_run(config, plan, "-q")  # warnings and errors only: what is left is the error
    finally:
        if originals is not None:
            put_back(saved, originals)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr
    assert listing(tmp_path / "hosts") == before
    assert not (tmp_path / "stopped").exists()  # the control plane was left running
    state_file = tmp_path / "plan.toml.state.json"
    if case == "corrupt in every region":  # refused in step 1's decode, before the stop step
        assert json.loads(state_file.read_text())["steps"] == {}
        assert "resumes at the stop step" in result.stdout
    else:  # refused before anything ran
        assert not state_file.exists()


def test_the_dry_run_passes_on_a_good_setup_and_touches_nothing(
    aws, tmp_path, old_hosts, launcher, unreachable_endpoint
):
    saved, cluster = aws, old_hosts
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk",
                         primary_url=unreachable_endpoint)
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster), files_to=tmp_path / "files")
    before = listing(tmp_path)
    result = dr_run(config, plan, "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    checks = report["prerequisites"]
    assert all(check["ok"] for check in checks), checks
    kinds = [check["check"] for check in checks]
    assert kinds.count("etcdutl") == kinds.count("data dir") == kinds.count("disk") == 3
    assert {"backup", "identity", "revision", "files"} <= set(kinds)
    backup = next(check for check in checks if check["check"] == "backup")["detail"]
    assert saved.manifest.id in backup and "primary store unreachable" in backup
    assert "read from replica first" in backup
    moved = [check["detail"] for check in checks if check["check"] == "data dir"]
    assert all("would be moved aside to" in detail for detail in moved)
    assert report["dry_run"] and report["backup"]["id"] == saved.manifest.id
    assert all(step["verdict"] == "not run" for step in report["steps"])
    assert listing(tmp_path) == before  # no state file, no data dir moved, no files


def test_the_dry_run_lists_every_failed_prerequisite_and_exits_with_the_first(
    aws, tmp_path, old_hosts, launcher, unreachable_endpoint
):
    saved, cluster = aws, old_hosts
    members = [Member.of(m) for m in cluster.members]
    members[1].data_dir = tmp_path / "hosts" / "a-file"
    members[1].data_dir.write_text("not a data dir")
    members[2].exec, members[2].etcdops = closed_ssh(unreachable_endpoint), ETCDOPS
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk",
                         extra=f'[etcd]\netcdutl = "{tmp_path / "no-etcdutl"}"')
    plan = plan_toml(tmp_path / "plan.toml", members, start=launcher.commands(cluster))
    before = listing(tmp_path)
    result = dr_run(config, plan, "--dry-run", env={"COLUMNS": "1000"})
    assert result.exit_code == 1, result.output  # the first failure: etcdutl, a ToolError
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    # etcd-1's etcdutl; etcd-2's data dir (its restore refuses that first); etcd-3's host
    assert len(failed) == 3, result.stdout
    assert "(3 failed; nothing was touched)" in result.stdout
    assert [line.split("│")[1].strip() for line in failed] == ["etcdutl", "data dir", "host"]
    assert any("is a file, not a directory" in line for line in failed)
    assert any("cannot reach member etcd-3" in line for line in failed)
    assert result.stderr.count("error: ") == 1
    assert listing(tmp_path) == before


def test_a_member_on_another_host_is_restored_and_started_through_its_ssh_prefix(
    aws, tmp_path, old_hosts, launcher, sshd
):
    saved, cluster = aws, old_hosts
    members = [Member.of(m) for m in cluster.members]
    members[2].exec, members[2].etcdops = sshd.prefix, ETCDOPS
    remote = cluster.members[2]
    start = launcher.commands(cluster)
    start[2] = f"{sshd.prefix} {shlex.quote(start[2])}"  # as `ssh cp-3 systemctl start etcd`
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", members, start=start)
    checked = dr_run(config, plan, "--dry-run", "-o", "json")
    assert checked.exit_code == 0, checked.output
    prerequisites = json.loads(checked.stdout)["prerequisites"]
    where = f"etcd-3 ({sshd.prefix})"
    assert {c["check"] for c in prerequisites if c["where"] == where} == {
        "host", "etcdutl", "data dir", "disk"}
    # its dry run is told the size of the snapshot it will be sent on stdin
    disks = [c["detail"] for c in prerequisites if c["check"] == "disk"]
    assert all(disk.endswith("needed)") for disk in disks), disks
    with Kubelets(cluster.client_urls, saved.objects):
        result = dr_run(config, plan, "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(step["verdict"] == "ok" for step in report["steps"])
    member = report["members"][2]
    assert member["host"] == sshd.prefix and member["data_dir"] == str(remote.data_dir)
    (aside,) = member["moved_aside"]
    assert (Path(aside) / "member" / "old").read_text() == "etcd-3's old data"
    assert (remote.data_dir / "member" / "wal").is_dir()
    assert every_key(cluster) == saved.objects
    # the snapshot went to the other host on stdin: no plaintext was left beside its data dir
    assert not list(remote.data_dir.parent.glob(".etcdops-*"))


def test_a_check_not_met_in_time_is_timed_out_and_the_run_goes_on_to_exit_16(
    aws, tmp_path, launcher
):
    saved = aws
    cluster = rebuilt_hosts(tmp_path / "hosts")
    tried = tmp_path / "tried-once"
    # fails the first time, succeeds when tried again: a check command is retried
    command = f"test -e {tried} || {{ touch {tried}; exit 1; }}"
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster), nodes_expect=1000, check_timeout="3s",
                     pods_command=command)
    with Kubelets(cluster.client_urls, saved.objects):
        result = dr_run(config, plan, "-o", "json")
    assert result.exit_code == 16, result.output
    report = json.loads(result.stdout)
    nodes, pods, controllers = report["steps"][3:]
    assert nodes["verdict"] == "timed out" and nodes["detail"].startswith("not within 3.0s")
    assert "(expected 1000)" in nodes["detail"] and 3 <= nodes["seconds"] < 10
    assert pods["verdict"] == "ok" and f"`{command}` succeeded" in pods["detail"]
    assert controllers["verdict"] == "ok"  # the run went on past the timed-out step
    assert report["completed"] and report["targets_missed"] == [
        "step 3 (Nodes reconnect) timed out"]
    assert report["restore_time"]["met"] and report["recovery_time"]["met"]
    assert "warning: target missed: step 3 (Nodes reconnect) timed out" in result.stderr


def test_a_stop_command_that_fails_ends_the_run_with_the_report_so_far(
    aws, tmp_path, old_hosts, launcher
):
    saved, cluster = aws, old_hosts
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster),
                     stop=["true", "echo kubelet is still running >&2; exit 3"])
    before = listing(tmp_path / "hosts")
    result = dr_run(config, plan, "-q", "-o", "json")
    assert result.exit_code == 1, result.output
    # the backup was decoded before the stop step: its revision warning, then the one error
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert "exited 3: kubelet is still running" in errors[0]
    report = json.loads(result.stdout)  # one document: the report, carrying the error
    assert report["error"]["exit_code"] == 1 and report["error"]["type"] == "ToolError"
    assert [step["verdict"] for step in report["steps"]] == ["failed"] + ["not run"] * 5
    assert report["resume_at"] == {"step": 0, "name": "stop"}
    assert listing(tmp_path / "hosts") == before
    state = json.loads((tmp_path / "plan.toml.state.json").read_text())
    assert state["steps"] == {} and state["backup_id"] == saved.manifest.id


def test_a_report_path_in_no_directory_is_refused_before_anything_runs(aws, tmp_path, old_hosts,
                                                                       launcher):
    saved, cluster = aws, old_hosts
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster), stop=[f"touch {tmp_path / 'stopped'}"])
    before = listing(tmp_path)
    missing = tmp_path / "no-such-dir" / "report.json"
    result = dr_run(config, plan, "--report", str(missing))
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert f"the directory {missing.parent} does not exist" in result.stderr
    assert listing(tmp_path) == before  # no directory made, no state, nothing stopped


def test_a_report_file_that_cannot_be_written_is_a_warning_not_the_recoverys_outcome(
    aws, tmp_path, old_hosts, launcher
):
    saved, cluster = aws, old_hosts
    reports = tmp_path / "reports"
    reports.mkdir()
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    # the stop step turns the report's directory into a file, then fails as the run's outcome
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster),
                     stop=[f"rmdir {reports} && touch {reports}",
                           "echo kubelet still runs >&2; exit 3"])
    result = dr_run(config, plan, "--report", str(reports / "report.json"), "-o", "json")
    assert result.exit_code == 1, result.output  # the stop step's failure, not the report's
    report = json.loads(result.stdout)
    assert "exited 3: kubelet still runs" in report["error"]["message"]
    assert "warning: the report file was not written" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "exited 3" in errors[0], result.stderr


def test_sigterm_during_step_1s_decode_names_it_and_the_rerun_resumes_at_the_stop_step(
    aws, tmp_path, old_hosts, launcher, s3_proxy
):
    saved, cluster = aws, old_hosts
    # the primary lists the backup but never sends its object: the decode waits on it
    proxy = s3_proxy()
    proxy.hang(lambda r: r.method == "GET" and r.path.endswith(".db.zst.age"))
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk",
                         primary_url=proxy.url)
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster), stop=[f"touch {tmp_path / 'stopped'}"])
    before = listing(tmp_path / "hosts")
    process = subprocess.Popen(
        [ETCDOPS, "dr", "run", "--plan", str(plan), "--config", str(config), "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    def decoding() -> bool:  # the plaintext's file is open beside the data dirs, waiting
        return bool(list((tmp_path / "hosts").glob("*/.etcdops-prepare-*/.tmp-*")))

    try:
        wait_for(lambda: decoding() or process.poll() is not None, "the decode's download")
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert ("interrupted during step 1 (Restore etcd from backup) while the backup was decoded, "
            "before the stop step ran") in errors[0]
    assert "resume at the stop step" in errors[0]
    report = json.loads(out)
    assert [step["verdict"] for step in report["steps"]] == ["not run", "failed"] + [
        "not run"] * 4
    assert report["steps"][1]["detail"] == "decoding the backup: interrupted"
    assert report["resume_at"] == {"step": 0, "name": "stop"}
    assert not (tmp_path / "stopped").exists()
    assert listing(tmp_path / "hosts") == before


@pytest.mark.parametrize("where", ["this host", "another host"])
def test_a_data_dir_still_in_use_after_the_stop_step_stops_step_1_before_any_member_is_restored(
    aws, tmp_path, old_hosts, launcher, where
):
    from etcdops.etcd.local import LocalEtcd

    saved, cluster = aws, old_hosts
    members = [Member.of(m) for m in cluster.members]
    # an etcd the stop step does not stop, on the last member's data dir: before the re-check
    # the first members were restored and then this one refused, a cluster split in two
    squatter = LocalEtcd("squatter", tmp_path / "hosts" / "squatted")
    squatter.start()
    try:
        members[2].data_dir = squatter.data_dir
        if where == "another host":
            members[2].exec, members[2].etcdops = "sh -c", ETCDOPS
        config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
        plan = plan_toml(tmp_path / "plan.toml", members, start=launcher.commands(cluster),
                         stop=[f"touch {tmp_path / 'stopped'}"])
        before = listing(*(m.data_dir.parent for m in cluster.members))
        result = dr_run(config, plan, "-o", "json")
        assert squatter.running
    finally:
        squatter.stop()
    assert result.exit_code == 11, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "error: after the stop step, on " in errors[0] and "etcd-3 (" in errors[0]
    assert "an etcd is running on" in errors[0] and "no member was restored" in errors[0]
    assert (tmp_path / "stopped").exists()  # the stop step ran; what it left running is named
    after = [p for p in listing(*(m.data_dir.parent for m in cluster.members))
             if "/squatted" not in p]
    assert after == [p for p in before if "/squatted" not in p]  # no data dir moved aside
    report = json.loads(result.stdout)
    assert [step["verdict"] for step in report["steps"][:2]] == ["ok", "failed"]
    assert report["resume_at"] == {"step": 1, "name": "restore"}
    assert all(member["moved_aside"] == [] for member in report["members"])


FAILING_ETCDUTL = f"""#!{sys.executable}
import os, sys
real, member, fixed = {{real!r}}, {{member!r}}, {{fixed!r}}
if "snapshot" in sys.argv and member in sys.argv and not os.path.exists(fixed):
    sys.exit("etcdutl: disk full (a stand-in)")
os.execv(real, [real, *sys.argv[1:]])
"""


def test_a_member_restored_again_after_a_failed_step_1_keeps_its_original_data_dir_marked(
    aws, tmp_path, old_hosts, launcher
):
    from etcdops.etcd.binaries import find_binary

    saved, cluster = aws, old_hosts
    etcdutl, fixed = tmp_path / "bin" / "etcdutl", tmp_path / "disk-freed"
    etcdutl.parent.mkdir()
    etcdutl.write_text(FAILING_ETCDUTL.format(real=str(find_binary("etcdutl")),
                                              member="etcd-3", fixed=str(fixed)))
    etcdutl.chmod(0o755)
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk",
                         extra=f'[etcd]\netcdutl = "{etcdutl}"')
    plan = plan_toml(tmp_path / "plan.toml", [Member.of(m) for m in cluster.members],
                     start=launcher.commands(cluster))
    failed = dr_run(config, plan, "-o", "json")
    assert failed.exit_code == 1 and "disk full" in failed.stderr, failed.output
    first = {m["name"]: m for m in json.loads(failed.stdout)["members"]}
    assert first["etcd-1"]["original"] == first["etcd-1"]["moved_aside"][0]
    assert first["etcd-3"]["original"] is None and first["etcd-3"]["moved_aside"] == []

    fixed.touch()
    with Kubelets(cluster.client_urls, saved.objects):
        result = dr_run(config, plan, env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "plan.toml.state.json").read_text())
    for name in ("etcd-1", "etcd-2"):  # restored twice: the original, then the first copy
        member = state["members"][name]
        original, copy = member["moved_aside"]
        assert member["original"] == original == first[name]["original"]
        assert (Path(original) / "member" / "old").read_text() == f"{name}'s old data"
        assert (Path(copy) / "member" / "wal").is_dir()
        assert (f"old data dir: {original} (from before the disaster); copies restored by "
                f"earlier attempts: {copy}") in result.stdout
    (original,) = state["members"]["etcd-3"]["moved_aside"]
    assert state["members"]["etcd-3"]["original"] == original


def test_the_dry_run_judges_each_disk_by_the_restores_own_space_figure(aws, tmp_path, old_hosts,
                                                                       launcher):
    from etcdops.report import LogReporter
    from etcdops.restore.member import RestoreRequest
    from etcdops.restore.preflight import dry_run
    from etcdops.units import format_size

    saved, cluster = aws, old_hosts
    alone = cluster.members[0]  # one member alone: its restore stages, and needs more room
    member = Member.of(alone)
    config = config_toml(tmp_path / "etcdops.toml", saved, local_dir=tmp_path / "lost-disk")
    plan = plan_toml(tmp_path / "plan.toml", [member], start=launcher.commands(cluster)[:1])
    result = dr_run(config, plan, "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.output
    (disk,) = [c for c in json.loads(result.stdout)["prerequisites"] if c["check"] == "disk"]
    own = dry_run(saved.config, RestoreRequest(
        ref=saved.manifest.id, data_dir=alone.data_dir, name=alone.name,
        initial_cluster=f"{alone.name}={alone.peer_url}", peer_urls=alone.peer_url,
    ), LogReporter()).space_needed
    assert own is not None and own > 2 * saved.manifest.snapshot_size  # not dr run's own 2x
    assert f"(about {format_size(own)} needed)" in disk["detail"], disk
