"""`etcdops restore` as operators run it: the report, JSON, one-line errors and exit codes,
Ctrl-C/SIGTERM during the download or etcdutl leaving the host as it was; and as `dr run` runs
it on another host: a plain snapshot on stdin, --bump-revision, --dry-run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdops.backup.readback import fetch_snapshot
from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.etcd.local import LocalEtcd, free_port
from etcdops.etcd.samples import Sample, sample_key, sample_value
from etcdops.etcd.session import EtcdSession
from etcdops.report import LogReporter
from tests.backup.two_regions import toml_for, with_s3
from tests.fixtures.waiting import wait_for
from tests.restore.standins import bumping_etcdutl, sleeping_etcdutl


@pytest.fixture
def host(tmp_path):
    """Where the member's data dir goes: an old data dir in it, to be moved aside."""
    base = tmp_path / "host"
    (base / "etcd" / "member").mkdir(parents=True)
    (base / "etcd" / "member" / "old").write_text("old data")
    return base


def member_args(data_dir: Path, name: str = "cp-1") -> list[str]:
    peer = f"http://127.0.0.1:{free_port()}"
    return ["--data-dir", str(data_dir), "--name", name, "--initial-cluster", f"{name}={peer}",
            "--initial-advertise-peer-urls", peer]


def listing(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*"))


def invoke(toml: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["restore", *args, "--config", str(toml)], env=env)


def test_the_text_report_names_the_token_to_share_and_warns_what_to_restart(
    backup_toml, saved, host
):
    # wide enough that no temporary path is folded mid-word
    result = invoke(backup_toml, "latest", *member_args(host / "etcd"), env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert f"backup {saved.id} from the local store as member cp-1" in out
    assert "moved aside" in out and "data.etcdops-" not in out and "etcd.etcdops-" in out
    assert "--initial-cluster-token test-restore-" in out and saved.id in out
    assert f"{saved.etcd.revision} (not bumped)" in out
    assert "download and decode" in out and "etcdutl" in out
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "restart kube-apiserver" in warnings[0]


def test_json_is_the_result_document(backup_toml, saved, host):
    result = invoke(backup_toml, saved.id, *member_args(host / "etcd"),
                    "--initial-cluster-token", "recovery-1", "--from", "local", "-o", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["backup_id"] == saved.id and document["store"] == "local"
    assert document["initial_cluster_token"] == "recovery-1"
    assert document["token_generated"] is False
    assert document["data_dir"] == str(host / "etcd")
    assert (Path(document["moved_aside"]) / "member" / "old").read_text() == "old data"
    assert document["revision"]["snapshot"] == saved.etcd.revision
    # the staging was tried: the snapshot holds no compaction sample, so it ended at the scan
    assert set(document["durations"]) == {"download_decode", "staging", "etcdutl", "total"}
    assert document["warnings"] and document["fallbacks"] == []


def test_one_member_of_several_gets_no_staging_etcd_of_its_own(backup_toml, saved, host):
    # each member's staging etcd would write its own number of revisions: members that must
    # hold the same data would not; dr run stages once for all of them
    peer, other = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    args = ["--data-dir", str(host / "etcd"), "--name", "cp-1",
            "--initial-cluster", f"cp-1={peer},cp-2={other}", "--initial-advertise-peer-urls",
            peer, "-o", "json"]
    dry = invoke(backup_toml, saved.id, *args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["revision"].startswith("none: one member of several")
    result = invoke(backup_toml, saved.id, *args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["revision"]["method"] == "none" and "staging" not in document["durations"]
    assert any("etcdops dr run" in warning and "restart kube-apiserver" in warning
               for warning in document["warnings"])


@pytest.mark.parametrize(("case", "code"), [
    ("bad initial cluster", 2), ("data dir is a file", 2), ("wrong identity", 12),
    ("corrupt object", 15), ("missing etcdutl", 1),
])
def test_each_refusal_is_one_line_and_its_exit_code(
    backup_toml, backup_config, saved, host, tmp_path, case, code
):
    args, env = ["latest", *member_args(host / "etcd")], {}
    if case == "bad initial cluster":
        args[args.index("--initial-cluster") + 1] = "cp-2=http://127.0.0.1:1"
    elif case == "data dir is a file":
        (host / "file").write_text("x")
        args[args.index("--data-dir") + 1] = str(host / "file")
    elif case == "wrong identity":
        assert CliRunner().invoke(app, ["keys", "generate", "--out",
                                        str(tmp_path / "other.txt")]).exit_code == 0
        env["ETCDOPS_ENCRYPTION_IDENTITY_FILE"] = str(tmp_path / "other.txt")
    elif case == "corrupt object":
        path = backup_config.local.dir / saved.object_key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        env["ETCDOPS_ETCD_ETCDUTL"] = str(tmp_path / "no-etcdutl")
    before = listing(host)
    result = invoke(backup_toml, *args, env=env)
    assert result.exit_code == code, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    if case == "missing etcdutl":
        assert "[etcd] etcdutl" in result.stderr
    assert listing(host) == before



@pytest.mark.parametrize("during", ["download", "the staging etcd's etcdutl", "etcdutl"])
def test_sigterm_leaves_the_data_dir_as_it_was_and_no_temporary_files(
    backup_config, etcd_loaded, s3, s3_proxy, host, tmp_path, during
):
    save_snapshot(with_s3(backup_config, s3), LogReporter())
    proxy = s3_proxy()
    env = dict(os.environ)
    if during == "download":
        # the primary answers listings but never sends the object: the download hangs
        proxy.hang(lambda r: r.method == "GET" and r.path.endswith(".db.zst.age"))

        def started() -> bool:  # the plaintext's file is open, waiting for bytes
            return bool(list(host.glob(".etcdops-prepare-*/.tmp-*")))
    else:
        etcdutl, ready = sleeping_etcdutl(tmp_path / "bin")
        env["ETCDOPS_ETCD_ETCDUTL"] = str(etcdutl)
        started = ready.exists
    toml = toml_for(with_s3(backup_config, s3, primary_url=proxy.url), tmp_path / "r.toml")
    before = listing(host)
    # without the option a staging etcd is restored first (to look for samples); with 0, the
    # member's own etcdutl is the first
    bump = ["--bump-revision", "0"] if during == "etcdutl" else []
    process = subprocess.Popen(
        [sys.executable, "-m", "etcdops", "restore", "latest", *member_args(host / "etcd"),
         "--from", "primary", *bump, "--config", str(toml)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: started() or process.poll() is not None, f"the {during} start")
        assert process.poll() is None, process.communicate()
        assert list(host.glob(".etcdops-*")), "no working directory to clean up"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert f"interrupted; {host / 'etcd'} is as it was" in stderr
    assert listing(host) == before


# --- the remote protocol: `dr run` runs these through `ssh host ...` ------------------------

ETCDOPS = Path(sys.executable).with_name("etcdops")  # the console script, as ssh runs it


def member_at(data_dir: Path, name: str = "cp-1") -> tuple[LocalEtcd, list[str]]:
    """A member to boot on the restored data dir, and the restore options that place it."""
    port = free_port()
    member = LocalEtcd(name, data_dir, peer_port=port,
                       initial_cluster=f"{name}=http://127.0.0.1:{port}",
                       log_path=data_dir.parent / f"{name}.log")
    return member, ["--data-dir", str(data_dir), "--name", name,
                    "--initial-cluster", member.initial_cluster,
                    "--initial-advertise-peer-urls", member.peer_url]


def etcdops(toml: Path, *args: str, stdin=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ETCDOPS), "restore", *args, "--config", str(toml)], stdin=stdin,
                          capture_output=True, timeout=120, env=env)


@pytest.fixture
def plain(backup_config, saved, tmp_path) -> Path:
    """The backup's plain snapshot, as `dr run` has it after decoding (and staging) once."""
    out = tmp_path / "plain" / "snapshot.db"
    out.parent.mkdir()
    fetch_snapshot(backup_config, saved.id, out, LogReporter())
    return out


def test_a_plain_snapshot_on_stdin_is_restored_and_boots(backup_toml, plain, host, etcd_loaded):
    member, args = member_at(host / "etcd")
    with plain.open("rb") as stdin:
        result = etcdops(backup_toml, "-", *args, "--initial-cluster-token", "recovery-1",
                         "--bump-revision", "0", "-o", "json", stdin=stdin)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["source"], document["backup_id"]) == ("standard input", None)
    # the caller advanced the revision (or reports it): no bump here, and nothing to restart
    assert document["revision"]["method"] == "none" and document["revision"]["restart"] == []
    assert document["warnings"] == [] and b"warning:" not in result.stderr
    assert (Path(document["moved_aside"]) / "member" / "old").read_text() == "old data"
    assert not list(host.glob(".etcdops-*"))  # the plaintext only ever lived in there
    member.start()
    try:
        with EtcdSession(member.etcd_config()) as session:
            kvs, _ = session.get_prefix(b"/")
    finally:
        member.stop()
    assert {kv.key: kv.value for kv in kvs} == etcd_loaded.objects


def test_stdin_without_bump_revision_warns_that_its_age_is_unknown(backup_toml, plain, host):
    _, args = member_at(host / "etcd")
    with plain.open("rb") as stdin:
        result = etcdops(backup_toml, "-", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.decode().splitlines()
                 if line.startswith("warning:")]
    assert "a snapshot without a manifest has no age" in warning and "restart" in warning


@pytest.mark.parametrize("damage", ["a flipped byte", "truncated", "empty"])
def test_a_damaged_stream_on_stdin_is_refused_with_nothing_changed(
    backup_toml, plain, host, tmp_path, damage
):
    data = bytearray(plain.read_bytes())
    if damage == "a flipped byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncated":
        data = data[: len(data) - 100]
    else:
        data = bytearray()
    stream = tmp_path / "stream"
    stream.write_bytes(bytes(data))
    _, args = member_at(host / "etcd")
    before = listing(host)
    with stream.open("rb") as stdin:
        result = etcdops(backup_toml, "-", *args, "--bump-revision", "0", stdin=stdin)
    assert result.returncode == 15, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: standard input ")
    assert listing(host) == before  # no plaintext left, the old data dir where it was


def test_bump_revision_passes_etcdutls_flags_or_is_refused_when_it_lacks_them(
    backup_toml, saved, host, tmp_path
):
    _, args = member_at(host / "etcd")
    before = listing(host)
    refused = invoke(backup_toml, "latest", *args, "--bump-revision", "5000")
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.startswith("error: --bump-revision 5000: ")
    assert "has no --bump-revision" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert listing(host) == before
    etcdutl, log = bumping_etcdutl(tmp_path / "bin")
    result = invoke(backup_toml, "latest", *args, "--bump-revision", "5000", "-o", "json",
                    env={"ETCDOPS_ETCD_ETCDUTL": str(etcdutl)})
    assert result.exit_code == 0, result.output
    # etcdops checked the trailer as it wrote the snapshot: etcdutl need not hash it again
    assert log.read_text().split()[-4:] == [
        "--bump-revision", "5000", "--mark-compacted", "--skip-hash-check"]
    revision = json.loads(result.stdout)["revision"]
    assert (revision["method"], revision["bump"]) == ("etcdutl --bump-revision --mark-compacted",
                                                      5000)
    assert revision["after_restore"] == saved.etcd.revision + 5000


def test_dry_run_reports_what_a_restore_would_do_and_changes_nothing(
    backup_toml, saved, host, tmp_path
):
    _, args = member_at(host / "etcd")
    before = listing(tmp_path)
    result = invoke(backup_toml, "latest", *args, "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.output
    assert listing(tmp_path) == before
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    assert document["data_dir"] == str(host / "etcd") and document["occupied"] is True
    assert document["moved_aside_to"].startswith(str(host / "etcd.etcdops-"))
    assert document["etcdutl"]["bump_revision"] is False
    assert document["revision"].startswith("staging etcd if the snapshot's compaction samples")
    assert document["name"] == "cp-1" and document["members"] == ["cp-1"]
    assert document["token_generated"] is True and document["initial_cluster_token"] is None
    backup = document["backup"]
    assert (backup["id"], backup["store"], backup["good_copies"]) == (saved.id, "local", ["local"])
    assert backup["snapshot_size"] == saved.snapshot_size
    # the plain snapshot and the restored data dir, and while a staging etcd runs its own two
    assert document["space_needed"] == 3 * saved.snapshot_size
    assert document["free_bytes"] > document["space_needed"] and document["enough_space"]
    text = invoke(backup_toml, "latest", *args, "--dry-run", env={"COLUMNS": "1000"})
    assert text.exit_code == 0, text.output
    out = " ".join(text.stdout.split())
    assert "nothing was read or changed" in out and f"backup {saved.id} in local store" in out
    assert listing(tmp_path) == before


def test_dry_run_of_stdin_reads_none_of_it(backup_toml, host, tmp_path):
    _, args = member_at(host / "etcd")
    before = listing(tmp_path)
    # stdin stays open and empty: a dry run that read it would wait for ever
    process = subprocess.Popen(
        [str(ETCDOPS), "restore", "-", *args, "--dry-run", "-o", "json", "--config",
         str(backup_toml)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.wait(timeout=60) == 0, process.stderr.read()
        document = json.loads(process.stdout.read())
    finally:
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            pipe.close()
    assert document["backup"] == {"source": "standard input", "read": False,
                                  "snapshot_size": None}
    assert document["space_needed"] is None and document["enough_space"] is None
    assert document["revision"].startswith("none")
    assert listing(tmp_path) == before


def test_dry_run_of_stdin_told_the_snapshot_size_judges_the_free_space(backup_toml, host):
    _, args = member_at(host / "etcd")
    huge = 1 << 60  # more than any disk here has free
    sized = invoke(backup_toml, "-", *args, "--dry-run", "--snapshot-size", str(huge),
                   "-o", "json")
    assert sized.exit_code == 0, sized.output
    document = json.loads(sized.stdout)
    assert document["space_needed"] == 2 * huge and document["enough_space"] is False
    assert "the restore needs about" in sized.stderr
    refused = invoke(backup_toml, "latest", *args, "--snapshot-size", "10")
    assert refused.exit_code == 2 and "--snapshot-size" in refused.stderr


@pytest.mark.parametrize(("case", "code"), [
    ("bad initial cluster", 2), ("data dir is a file", 2), ("an etcd runs on it", 11),
    ("wrong identity", 12), ("missing etcdutl", 1),
])
def test_dry_run_refuses_as_a_restore_does(
    backup_toml, saved, host, tmp_path, etcd_loaded, case, code
):
    _, args = member_at(host / "etcd")
    env = {}
    if case == "bad initial cluster":
        args[args.index("--initial-cluster") + 1] = "cp-2=http://127.0.0.1:1"
    elif case == "data dir is a file":
        (host / "file").write_text("x")
        args[args.index("--data-dir") + 1] = str(host / "file")
    elif case == "an etcd runs on it":
        args[args.index("--data-dir") + 1] = str(etcd_loaded.cluster.members[0].data_dir)
    elif case == "wrong identity":
        assert CliRunner().invoke(app, ["keys", "generate", "--out",
                                        str(tmp_path / "other.txt")]).exit_code == 0
        env["ETCDOPS_ENCRYPTION_IDENTITY_FILE"] = str(tmp_path / "other.txt")
    else:
        env["ETCDOPS_ETCD_ETCDUTL"] = str(tmp_path / "no-etcdutl")
    before = listing(tmp_path)
    result = invoke(backup_toml, "latest", *args, "--dry-run", env=env)
    assert result.exit_code == code, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert listing(tmp_path) == before


def staging_etcds(path: Path) -> list[str]:
    """The command lines of staging etcds running with their data dir below path."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # it exited meanwhile
        if "--name=etcdops-staging" in text and f"--data-dir={path}" in text:
            found.append(text)
    return found


def test_sigterm_while_the_staging_etcd_writes_stops_it_and_leaves_nothing(
    backup_config, backup_toml, etcd_loaded, host
):
    # a sample that makes the cluster look busy: ~10^8 revisions in the 1000 s before the
    # backup, so even a second's age is a gap of minutes of writes (within a 1h budget)
    with EtcdSession(backup_config.etcd) as session:
        revision = session.status(etcd_loaded.cluster.client_urls[0]).revision
        sample = Sample(time.time() - 1000, revision - 10**8, None)
        session.put_many([(sample_key(backup_config.compaction.prefix.encode(), sample.time,
                                      "test"), sample_value(sample))])
    save_snapshot(backup_config, LogReporter())
    toml = backup_toml
    toml.write_text(toml.read_text() + '[restore]\nbump_budget = "1h"\n')
    _, args = member_at(host / "etcd")
    before = listing(host)
    process = subprocess.Popen([str(ETCDOPS), "restore", "latest", *args, "--config", str(toml)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in process.stderr:  # the events, as they happen
            seen.append(line)
            if "advancing the revision by" in line:
                break
        assert process.poll() is None, "".join(seen)
        assert staging_etcds(host), "no staging etcd running"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert f"interrupted; {host / 'etcd'} is as it was" in stderr
    assert staging_etcds(host) == []  # the staging etcd was stopped
    assert listing(host) == before  # its data dir, the plaintext, the working dir: all gone


def test_help_promises_a_staging_etcd_only_for_a_cluster_of_one_member():
    text = " ".join(CliRunner().invoke(app, ["restore", "--help"],
                                       env={"COLUMNS": "200"}).stdout.split())
    assert "for a cluster of one member, a staging etcd within [restore] bump_budget" in text
    assert "one member of several gets none" in text and "`etcdops dr run` stages once" in text
