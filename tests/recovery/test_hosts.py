"""A member's commands, here and through a real OpenSSH server on loopback (the sshd fixture)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import etcdops
from etcdops.cli.exitcodes import exit_code_for
from etcdops.errors import (
    ConfigError,
    HostUnreachableError,
    IntegrityError,
    Interrupted,
    ToolError,
    UsageError,
)
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalEtcd, free_port
from etcdops.etcd.session import EtcdSession
from etcdops.recovery.hosts import STOP_GRACE, Host
from tests.fixtures.waiting import alive, wait_for

# ssh's PATH on the far side lacks the venv
ETCDOPS = str(Path(sys.executable).with_name("etcdops"))
STREAMED = 64 * 1024 * 1024


class Events:
    """A reporter that keeps its events."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def progress(self, description, total):
        raise AssertionError("hosts report events, not progress")

    def event(self, message: str) -> None:
        self.events.append(message)




def our_ssh_clients() -> list[int]:
    """ssh processes this test process started that still run."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            if name == "ssh" and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(entry.name))
    return found


def test_a_command_reaches_the_host_through_the_prefix_with_its_arguments_intact(sshd):
    host = Host("cp-2", sshd.prefix)
    awkward = ["a b", "it's", "$HOME", "*", "x;y", ""]
    result = host.run(["sh", "-c", 'printf "[%s]" "$@"; echo " $(id -u)"', "sh", *awkward],
                      timeout=30)
    assert result.returncode == 0
    assert result.stdout == "[a b][it's][$HOME][*][x;y][] 0\n"
    assert host.run(["sh", "-c", "exit 3"], timeout=30).returncode == 3
    # sshd ends a session a moment after its client has gone
    wait_for(lambda: sshd.sessions() == [], "the ssh sessions ending", timeout=10)


def test_the_prefix_gets_one_shell_line_and_the_command_a_timeout_on_its_host():
    host = Host("cp-2", "ssh -p 2222 'root@cp 2'")
    line = host.command(["etcdops", "-o", "json", "restore", "-", "--name", "a b"], timeout=299.5)
    assert line[:-1] == ["ssh", "-p", "2222", "root@cp 2"]
    assert shlex.split(line[-1]) == ["timeout", "-k", str(int(STOP_GRACE)), "300", "etcdops",
                                     "-o", "json", "restore", "-", "--name", "a b"]
    assert Host("cp-1", "").command(["etcdops", "--version"], timeout=5) == [
        "etcdops", "--version"]


def test_stderr_is_reported_line_by_line_with_the_host_name_and_both_pipes_flow(sshd):
    events = Events()
    host = Host("cp-2", sshd.prefix, reporter=events)
    # far more than a pipe holds on either side, interleaved: a reader that waits on one
    # pipe while the other fills would hang here
    script = "for i in $(seq 1 3000); do echo line $i >&2; head -c 1000 /dev/zero; done"
    result = host.run(["sh", "-c", script], timeout=60)
    assert result.returncode == 0
    assert result.stdout == "\0" * 3_000_000
    assert events.events == [f"cp-2: line {i}" for i in range(1, 3001)]
    assert result.stderr.splitlines()[-1] == "line 3000"  # the tail only
    assert len(result.stderr.splitlines()) < 100


def test_a_large_file_streams_through_stdin_without_passing_through_memory(sshd, tmp_path):
    source, digest = tmp_path / "big.bin", hashlib.sha256()
    with source.open("wb") as file:
        for _ in range(STREAMED // (1 << 20)):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            file.write(chunk)
    with rss_sampler() as peak:
        result = Host("cp-2", sshd.prefix).run(["sha256sum"], stdin_path=source, timeout=120)
    assert result.stdout.split()[0] == digest.hexdigest()
    assert peak.growth < 16 * 1024 * 1024, f"RSS grew by {peak.growth / 2**20:.0f} MiB"


class rss_sampler:
    """How far this process's resident set rose above where it was, sampled while it runs."""

    def __enter__(self):
        self.base = self._rss()
        self.growth = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def _sample(self):
        while not self._done.wait(0.01):
            self.growth = max(self.growth, self._rss() - self.base)

    @staticmethod
    def _rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("content, error", [
    (None, UsageError),  # no such file
    (b"not a snapshot", IntegrityError),
])
def test_a_remote_etcdops_error_is_raised_as_the_same_class_naming_the_host(
    sshd, tmp_path, content, error
):
    path = tmp_path / "snapshot.db"
    if content is not None:
        path.write_bytes(content)
    host = Host("cp-2", sshd.prefix, etcdops=ETCDOPS)
    with pytest.raises(error) as raised:
        host.etcdops_json(["snapshot", "status", str(path)], timeout=60)
    local = subprocess.run([ETCDOPS, "snapshot", "status", str(path)], capture_output=True,
                           text=True)
    assert raised.value.message.startswith(f"on cp-2 ({sshd.prefix}): ")
    assert raised.value.message.endswith(
        f"{path} does not exist" if content is None else "(14 bytes)")
    assert raised.value.hint and raised.value.hint in local.stderr  # the hint is kept
    assert exit_code_for(raised.value) == local.returncode  # and so the exit code


def test_arguments_the_remote_etcdops_refuses_are_a_usage_error_there_too(sshd):
    host = Host("cp-2", sshd.prefix, etcdops=ETCDOPS)
    with pytest.raises(UsageError, match=r"^on cp-2 .*No such option: --no-such-flag"):
        host.etcdops_json(["snapshot", "status", "--no-such-flag", "x"], timeout=60)


def test_a_remote_etcdops_result_is_its_json_document(sshd, tmp_path):
    identity = tmp_path / "identity.txt"
    document = Host("cp-2", sshd.prefix, etcdops=ETCDOPS).etcdops_json(
        ["keys", "generate", "--out", str(identity)], timeout=60)
    assert document["identity_file"] == str(identity)
    assert document["recipient"].startswith("age1")
    assert document["recipient"] in identity.read_text()


def test_an_etcdops_the_host_does_not_have_is_named_with_the_fix(sshd):
    host = Host("cp-2", sshd.prefix)  # "etcdops": not on ssh's PATH
    with pytest.raises(ToolError, match=r"^on cp-2 \(ssh .*\): cannot run etcdops: .*etcdops"):
        host.etcdops_json(["health"], timeout=60)
    probe = host.probe(timeout=60)
    assert probe.reachable and probe.etcdops_version is None and not probe.ok
    assert "install etcdops" in probe.hint


def test_probe_reports_the_version_of_etcdops_on_the_host(sshd):
    probe = Host("cp-2", sshd.prefix, etcdops=ETCDOPS).probe(timeout=60)
    assert probe.ok and probe.etcdops_version == etcdops.__version__
    assert probe.as_dict()["exec"] == sshd.prefix and probe.as_dict()["problem"] is None


def test_a_host_nothing_answers_on_is_unreachable_with_a_clear_error(sshd):
    prefix = sshd.prefix.replace(f"-p {sshd.port}", f"-p {free_port()}")
    host = Host("cp-9", prefix, etcdops=ETCDOPS)
    with pytest.raises(HostUnreachableError) as raised:
        host.etcdops_json(["health"], timeout=30)
    assert raised.value.message.startswith(f"cannot reach member cp-9 through `{prefix}`")
    assert raised.value.message.endswith("Connection refused")  # ssh's own last line
    assert f"`{prefix} true` by hand" in raised.value.hint
    assert exit_code_for(raised.value) == 1
    probe = host.probe(timeout=30)
    assert not probe.reachable and probe.problem == raised.value.message


def test_a_key_the_host_refuses_is_unreachable_too(sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    prefix = sshd.prefix.replace(str(sshd.client_key), str(other))
    with pytest.raises(HostUnreachableError, match=r"Permission denied \(publickey\)"):
        Host("cp-2", prefix).run(["true"], timeout=30)


def test_a_prefix_that_does_not_run_here_is_unreachable():
    with pytest.raises(HostUnreachableError, match="no-such-ssh.*No such file"):
        Host("cp-2", "no-such-ssh root@cp-2").run(["true"], timeout=5)


def test_a_prefix_that_cannot_be_parsed_is_a_configuration_error():
    with pytest.raises(ConfigError, match="exec prefix of member cp-2 cannot be parsed"):
        Host("cp-2", "ssh 'root@cp-2")


def test_a_timeout_stops_the_remote_command_and_names_the_host_and_command(sshd, tmp_path):
    pidfile = tmp_path / "pid"
    host = Host("cp-2", sshd.prefix)
    started = time.monotonic()
    with pytest.raises(ToolError) as raised:
        # long enough for ssh to start the remote command on a loaded machine: the pid is read
        host.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], timeout=5)
    assert time.monotonic() - started < 5 + STOP_GRACE
    assert raised.value.message == (
        f"on cp-2 ({sshd.prefix}): `sh -c 'echo $$ > {pidfile}; exec sleep 60'` did not finish "
        "within 5s and was stopped")
    pid = int(pidfile.read_text())
    wait_for(lambda: not alive(pid), "the remote sleep is stopped", timeout=5)
    assert our_ssh_clients() == []
    wait_for(lambda: sshd.sessions() == [], "the ssh session ends", timeout=5)


def test_an_interrupt_ends_the_ssh_client_and_is_raised(sshd, tmp_path):
    def terminate(signum, frame):  # as the CLI does with SIGTERM
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    pidfile = tmp_path / "pid"

    def interrupt_once_running():
        wait_for(pidfile.exists, "the remote command started")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            Host("cp-2", sshd.prefix).run(
                ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], timeout=60)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert our_ssh_clients() == []  # already gone when the interrupt comes out


def test_an_empty_prefix_runs_the_command_here_without_a_shell(tmp_path):
    events = Events()
    host = Host("cp-1", "", etcdops=ETCDOPS, reporter=events)
    result = host.run(["printf", "%s|", "$HOME", "a;b", "*"], timeout=10)
    assert result.stdout == "$HOME|a;b|*|"
    result = host.run(["sh", "-c", "echo $PPID; echo warn >&2"], timeout=10)
    assert int(result.stdout) == os.getpid() and events.events == ["cp-1: warn"]
    with pytest.raises(UsageError, match=r"^on cp-1 \(this host\): file /nonexistent"):
        host.etcdops_json(["snapshot", "status", "/nonexistent"], timeout=60)
    assert host.probe(timeout=60).etcdops_version == etcdops.__version__


def test_a_local_timeout_stops_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    host = Host("cp-1")
    with pytest.raises(ToolError, match=r"^on cp-1 \(this host\): .* within 3s"):
        host.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=3)
    pid = int(pidfile.read_text())
    wait_for(lambda: not alive(pid), "the shell's child is stopped too", timeout=10)


def test_a_local_command_that_cannot_run_says_so():
    probe = Host("cp-1", etcdops="/nonexistent/etcdops").probe(timeout=5)
    assert probe.reachable and not probe.ok
    assert probe.problem == "on cp-1 (this host): cannot run /nonexistent/etcdops: " \
        "No such file or directory"


def plain_snapshot(etcd_loaded, tmp_path: Path) -> Path:
    """The orchestrator's side: a plain snapshot in a 0700 directory of its own."""
    work = tmp_path / "orchestrator"
    work.mkdir(mode=0o700)
    plain = work / "snapshot.db"
    endpoint = etcd_loaded.cluster.client_urls[0]
    subprocess.run([str(find_binary("etcdctl")), f"--endpoints={endpoint}", "snapshot", "save",
                    str(plain)], check=True, capture_output=True, timeout=60)
    return plain


def restore_there(host: Host, member: LocalEtcd, plain: Path) -> dict:
    return host.etcdops_json(
        ["restore", "-", "--data-dir", str(member.data_dir), "--name", member.name,
         "--initial-cluster", member.initial_cluster,
         "--initial-advertise-peer-urls", member.peer_url,
         "--initial-cluster-token", "recovery-1", "--bump-revision", "0"],
        stdin_path=plain, timeout=300)


def test_a_plain_snapshot_streamed_through_ssh_restores_a_member_on_that_host(
    sshd, etcd_loaded, tmp_path
):
    plain = plain_snapshot(etcd_loaded, tmp_path)
    # the far side: the member's data dir and, beside it, nothing else before or after
    host_dir = tmp_path / "cp-2"
    host_dir.mkdir()
    member = LocalEtcd("cp-2", host_dir / "data", log_path=tmp_path / "cp-2.log")
    document = restore_there(Host("cp-2", sshd.prefix, etcdops=ETCDOPS), member, plain)
    assert document["data_dir"] == str(member.data_dir)
    assert document["initial_cluster_token"] == "recovery-1"
    assert [p.name for p in host_dir.iterdir()] == ["data"]  # its scratch dir is gone
    assert oct(member.data_dir.stat().st_mode & 0o777) == "0o700"
    # sshd ends a session a moment after its client has gone
    wait_for(lambda: sshd.sessions() == [], "the ssh sessions ending", timeout=10)
    member.start()
    try:
        with EtcdSession(member.etcd_config()) as session:
            kvs, _ = session.get_prefix(b"/")
    finally:
        member.stop()
    assert {kv.key: kv.value for kv in kvs} == etcd_loaded.objects


def test_a_stream_cut_short_fails_the_restore_there_with_nothing_changed(
    sshd, etcd_loaded, tmp_path
):
    # what the far side sees when this side dies mid-stream: end of input, early
    plain = plain_snapshot(etcd_loaded, tmp_path)
    cut = plain.with_name("cut.db")
    cut.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    host_dir = tmp_path / "cp-2"
    host_dir.mkdir()
    old = host_dir / "data"
    old.mkdir(mode=0o700)
    (old / "kept").write_text("the old member's")
    member = LocalEtcd("cp-2", old, log_path=tmp_path / "cp-2.log")
    with pytest.raises(IntegrityError, match=r"^on cp-2 \(ssh .*\): ") as raised:
        restore_there(Host("cp-2", sshd.prefix, etcdops=ETCDOPS), member, cut)
    assert exit_code_for(raised.value) == 15
    assert [p.name for p in host_dir.iterdir()] == ["data"]
    assert [p.name for p in old.iterdir()] == ["kept"]


def test_a_remote_etcdops_stopped_by_sigterm_is_an_interrupt_here(sshd, tmp_path):
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    # a writer that sends nothing: the remote restore waits on its stdin until it is stopped
    stop = threading.Event()
    threading.Thread(target=_hold_open, args=(fifo, stop), daemon=True).start()
    host = Host("cp-2", sshd.prefix, etcdops=ETCDOPS)
    data_dir = tmp_path / "cp-2" / "data"
    data_dir.parent.mkdir()

    def remote_restore() -> int:
        for pid in sshd.sessions():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"restore" in argv and not argv[0].endswith(b"timeout"):
                    return pid
        raise AssertionError("no remote restore runs")

    def terminate_it():
        # its scratch dir is made once it runs, signal handlers set, before it reads stdin
        wait_for(lambda: any(data_dir.parent.iterdir()), "the remote restore reads", timeout=30)
        os.kill(remote_restore(), signal.SIGTERM)

    threading.Thread(target=terminate_it, daemon=True).start()
    try:
        with pytest.raises(Interrupted) as raised:
            host.etcdops_json(["restore", "-", "--data-dir", str(data_dir), "--name", "cp-2",
                               "--initial-cluster", "cp-2=http://127.0.0.1:2380",
                               "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                               "--bump-revision", "0"], stdin_path=fifo, timeout=60)
    finally:
        stop.set()
    assert raised.value.message.startswith(f"on cp-2 ({sshd.prefix}): interrupted")
    assert exit_code_for(raised.value) == 130
    assert list(data_dir.parent.iterdir()) == []


def _hold_open(fifo: Path, stop: threading.Event) -> None:
    with fifo.open("wb"):
        stop.wait(60)


def test_an_interrupt_ends_gnu_timeout_and_its_command_though_they_leave_the_group(tmp_path):
    # a prefix of `sh -c` runs the real `timeout` here, which moves itself and its command
    # into a process group of their own: ending the group alone left both running
    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    pidfile = tmp_path / "pid"

    seen = []

    def interrupt_once_running():
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "the command runs")
        timeout_pid = int(pidfile.read_text().split()[0])
        seen.append(Path(f"/proc/{timeout_pid}/cmdline").read_bytes().split(b"\0")[0])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            Host("cp-2", "sh -c").run(
                ["sh", "-c", f"echo $PPID $$ > {pidfile}; exec sleep 40"], timeout=40)
    finally:
        signal.signal(signal.SIGTERM, previous)
    timeout_pid, sleep_pid = map(int, pidfile.read_text().split())
    assert seen == [b"timeout"]
    wait_for(lambda: not alive(sleep_pid) and not alive(timeout_pid),
             "timeout and its command are stopped", timeout=STOP_GRACE)
