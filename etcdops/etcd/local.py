"""Throwaway etcd processes on loopback, for the demo, tests, benchmarks and restore drills.

Each member gets its own directory (data dir and log) and free ports on 127.0.0.1. A member can
also boot on a data dir that already exists, such as one written by `etcdutl snapshot restore`:
etcd ignores the --initial-* flags once a data dir holds a WAL, so nothing is overwritten.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from etcdops.config import EtcdConfig
from etcdops.errors import EtcdopsError, ToolError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.session import EtcdSession

LOOPBACK = "127.0.0.1"
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 15
_STOP_GRACE = 10.0
_ERROR_LINE = re.compile(r'"level":"(error|fatal|panic)"')
_RUNNING: set[LocalEtcd] = set()
# The kernel may hand the port it just gave out to the next bind(0) as well; a cluster whose
# members were given one port twice fails with "has duplicate url", which no retry mends.
_RECENT_PORTS: deque[int] = deque(maxlen=4096)
_PORTS_LOCK = threading.Lock()


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS etcd: the server's pair for etcd, the client's pair for callers."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    client_cert_auth: bool = True


class _PortTaken(ToolError):
    """A port picked as free was taken before etcd could bind it."""


def free_port() -> int:
    """A loopback TCP port that is free right now and that this process has not handed out
    lately (another process may still take it)."""
    with _PORTS_LOCK:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = int(sock.getsockname()[1])
            if port not in _RECENT_PORTS:
                _RECENT_PORTS.append(port)
                return port


class LocalEtcd:
    """One etcd member process on loopback, with its data dir and log file."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        *,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "etcdops-local",
        tls: TLSFiles | None = None,
        log_path: Path | None = None,
        **etcd_flags: Any,
    ) -> None:
        self.name = name
        self.data_dir = Path(data_dir)
        self.log_path = log_path or self.data_dir.with_name(f"{self.data_dir.name}.log")
        self.cluster_token = cluster_token
        self.tls = tls
        self.etcd_flags = etcd_flags
        self.process: subprocess.Popen[bytes] | None = None
        # a peer port in someone's --initial-cluster is theirs to change, not ours
        self._own_peer_port = peer_port is None and initial_cluster is None
        self.peer_port = peer_port or free_port()
        self.client_port = free_port()
        self.metrics_port = free_port()
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self._log_offset = 0

    @property
    def client_url(self) -> str:
        """The URL clients use (https:// when the member serves TLS)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The URL other members (and --initial-cluster) use for raft traffic."""
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        """The full URL of the member's Prometheus /metrics page."""
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def etcd_config(self, **overrides: Any) -> EtcdConfig:
        """An EtcdConfig that reaches this member alone (TLS files included)."""
        return _config((self.client_url,), self.tls, overrides)

    def start(self, wait: float = 20.0) -> None:
        """Start etcd and wait until it has a leader; ToolError with its last log lines if not."""
        fresh = not self.data_dir.exists()
        for attempt in range(_PORT_ATTEMPTS):
            self.launch()
            try:
                self.wait_healthy(time.monotonic() + wait)
                return
            except _PortTaken:
                self.stop()
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
                self.new_ports(peer=fresh and self._own_peer_port)
                if fresh:
                    shutil.rmtree(self.data_dir, ignore_errors=True)
            except BaseException:
                self.stop()
                raise

    def launch(self) -> None:
        """Start the process without waiting (members of a new cluster must start together)."""
        if self.running:
            return
        binary = find_binary("etcd")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # the host's ETCD_* variables configure the production etcd, not this one
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(binary), *self.arguments()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        _RUNNING.add(self)

    def wait_healthy(self, deadline: float) -> None:
        """Wait until the member answers Status with a leader, by a time.monotonic() deadline."""
        config = self.etcd_config(dial_timeout=0.5, command_timeout=2.0)
        with EtcdSession(config) as session:
            while True:
                if self.process is None or self.process.poll() is not None:
                    self._raise_exited()
                try:
                    # a plain TCP connect first: a refused grpc dial would cost its whole timeout
                    socket.create_connection((LOOPBACK, self.client_port), timeout=0.5).close()
                    if session.status(self.client_url).leader_id:
                        return
                except (OSError, EtcdopsError):
                    pass  # not up yet: the deadline decides
                if time.monotonic() >= deadline:
                    raise ToolError(
                        f"etcd member {self.name} was not healthy in time; last log lines:\n"
                        + self.log_tail(),
                        f"see {self.log_path}",
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it does not exit within a few seconds."""
        _RUNNING.discard(self)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def new_ports(self, *, peer: bool) -> None:
        """Pick new client and metrics ports (and the peer port) after a port was taken."""
        self.client_port = free_port()
        self.metrics_port = free_port()
        if peer:
            self.peer_port = free_port()
            if self._own_peer_port:
                self.initial_cluster = f"{self.name}={self.peer_url}"

    def arguments(self) -> list[str]:
        """The etcd command line: loopback URLs, then TLS, then the extra flags as --kebab-case."""
        arguments = [
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.cluster_token}",
            f"--listen-metrics-urls=http://{LOOPBACK}:{self.metrics_port}",
        ]
        if self.tls:
            arguments += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                f"--client-cert-auth={str(self.tls.client_cert_auth).lower()}",
            ]
        for key, value in self.etcd_flags.items():
            if value is None:
                continue
            text = str(value).lower() if isinstance(value, bool) else str(value)
            arguments.append(f"--{key.replace('_', '-')}={text}")
        return arguments

    def shell_launch(self, pid_file: Path) -> str:
        """A `sh -c` command line that starts this member detached from whoever runs it (its
        output to the member's log) and writes its pid to pid_file, or does nothing while
        pid_file names a live process: a recovery plan's start command, in tests and the demo.
        stop_launched(pid_file) stops it."""
        binary = find_binary("etcd")
        pid, log = shlex.quote(str(pid_file)), shlex.quote(str(self.log_path))
        etcd = " ".join(shlex.quote(word) for word in [str(binary), *self.arguments()])
        return (
            f'if [ -s {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then exit 0; fi; '
            # the host's ETCD_* variables configure the production etcd, not this one
            "for v in $(env | sed -n 's/^\\(ETCD_[A-Za-z0-9_]*\\)=.*/\\1/p'); "
            'do unset "$v"; done; '
            f"mkdir -p {shlex.quote(str(self.log_path.parent))}; "
            # not a process group leader (sh runs `&` jobs in its own group), so setsid does
            # not fork: $! is etcd's own pid
            f"setsid {etcd} </dev/null >>{log} 2>&1 & echo $! > {pid}"
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """What etcd logged since this start that explains a failure: its errors, else the end."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        logged = text.splitlines()
        if "Usage:" in logged:  # a bad flag: etcd names it, then prints its whole usage text
            logged = logged[: logged.index("Usage:")]
        errors = [line for line in logged if _ERROR_LINE.search(line)]
        return "\n".join((errors or logged)[-lines:]) or "(empty log)"

    def _raise_exited(self) -> None:
        code = self.process.returncode if self.process else None
        tail = self.log_tail()
        error = _PortTaken if "address already in use" in tail else ToolError
        raise error(
            f"etcd member {self.name} exited during start-up (code {code}); last log lines:\n"
            + tail,
            f"see {self.log_path}",
        )

    def __repr__(self) -> str:
        return f"LocalEtcd({self.name!r}, {self.client_url}, running={self.running})"


class LocalCluster:
    """A throwaway cluster of one or more LocalEtcd members under one directory.

    Members (and their ports) exist from construction, so a restore can write each member's data
    dir with the right --name and --initial-cluster before start() boots them.
    """

    def __init__(
        self,
        base_dir: Path,
        members: int = 1,
        *,
        tls: TLSFiles | None = None,
        cluster_token: str = "etcdops-local",
        **etcd_flags: Any,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.tls = tls
        names = [f"etcd-{i}" for i in range(1, members + 1)]
        peer_ports = [free_port() for _ in names]
        initial_cluster = ",".join(
            f"{name}=http://{LOOPBACK}:{port}" for name, port in zip(names, peer_ports, strict=True)
        )
        self.members: list[LocalEtcd] = [
            LocalEtcd(
                name,
                self.base_dir / name / "data",
                peer_port=port,
                initial_cluster=initial_cluster,
                cluster_token=cluster_token,
                tls=tls,
                log_path=self.base_dir / name / "etcd.log",
                **etcd_flags,
            )
            for name, port in zip(names, peer_ports, strict=True)
        ]

    @classmethod
    def single(cls, base_dir: Path, **etcd_flags: Any) -> LocalCluster:
        """A one-member cluster (not started)."""
        return cls(base_dir, 1, **etcd_flags)

    @classmethod
    def three(cls, base_dir: Path, **etcd_flags: Any) -> LocalCluster:
        """A three-member cluster, the smallest that survives losing a member (not started)."""
        return cls(base_dir, 3, **etcd_flags)

    @property
    def client_urls(self) -> list[str]:
        """Every member's client URL, in member order."""
        return [member.client_url for member in self.members]

    @property
    def initial_cluster(self) -> str:
        """The --initial-cluster value shared by all members (and by a restore into them)."""
        return self.members[0].initial_cluster

    def etcd_config(self, **overrides: Any) -> EtcdConfig:
        """An EtcdConfig that reaches every member (TLS files included); overrides win."""
        return _config(tuple(self.client_urls), self.tls, overrides)

    def start(self, wait: float = 30.0) -> None:
        """Start every member together and wait until each one is healthy."""
        fresh = not any(member.data_dir.exists() for member in self.members)
        for attempt in range(_PORT_ATTEMPTS):
            for member in self.members:
                member.launch()
            deadline = time.monotonic() + wait
            try:
                for member in self.members:
                    member.wait_healthy(deadline)
                return
            except _PortTaken:
                self.stop()
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
                for member in self.members:
                    member.new_ports(peer=fresh)
                    if fresh:  # only what etcd created during this failed start
                        shutil.rmtree(member.data_dir, ignore_errors=True)
                if fresh:
                    initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
                    for member in self.members:
                        member.initial_cluster = initial
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        """Stop every member (safe to call more than once)."""
        for member in self.members:
            member.stop()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def stop_launched(pid_file: Path, grace: float = _STOP_GRACE) -> None:
    """Stop a member that a LocalEtcd.shell_launch command started: SIGTERM, then SIGKILL if it
    has not exited within grace seconds (nothing to do when the pid file is absent or stale)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        if not _alive(pid):
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether a process runs: a zombie nobody reaped yet (no init in a container) has exited."""
    if not Path("/proc/self").is_dir():  # no procfs: signal 0 only says the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _config(
    endpoints: tuple[str, ...], tls: TLSFiles | None, overrides: dict[str, Any]
) -> EtcdConfig:
    # loopback answers at once or not at all: short timeouts keep failures quick
    config = EtcdConfig(endpoints=endpoints, dial_timeout=2.0, command_timeout=10.0)
    if tls:
        config = dataclasses.replace(
            config, cacert=tls.ca, cert=tls.client_cert, key=tls.client_key
        )
    return dataclasses.replace(config, **overrides)


@atexit.register
def _stop_leftovers() -> None:
    # a caller that forgot stop() (or died on an exception) must not leave etcd running
    for member in list(_RUNNING):
        member.stop()
