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
  is the child's own), the alternation and the medians come from bench/common.py, moto and the
  buckets from bench/moto_s3.py, the shell's tools from bench/shell_tools.py, shared with the
  other benchmarks rather than copied: they all measure the same way.
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
- Each side runs in a session of its own (common's trampoline), so with the kernel's
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
import json
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    CLUSTER_NAME,
    ETCDOPS,
    ChildFailed,
    Children,
    Rounds,
    Run,
    announce_machine,
    bench_arguments,
    conclude,
    each_size,
    etcdops_binary,
    filled_etcd,
    measured_run,
    parse_bench_args,
    ratio_and_rss_verdict,
    run_bench,
    sources_changed,
    write_config,
)
from machine import (
    code_fingerprint,
    git_state,
    process_cpu,
    wait_for_quiet,
)
from moto_s3 import (
    ETCDOPS_PREFIX,
    PRIMARY_BUCKET,
    REPLICA_BUCKET,
    REPLICA_REGION,
    Buckets,
    MotoServer,
    add_s3_sections,
    fake_aws_env,
    moto_with_buckets,
)
from shell_tools import Step, Tools, find_tools, read_steps

from etcdops.units import format_size

# the targets (bench/README.md)
TARGET_RATIO = 0.6
TARGET_RSS_MIB = 150.0
SHELL = "shell"
SHELL_KEY = "shell/db.zst.age"


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
    lines.extend(tools.timed(name, argv) for name, argv in steps)
    return "\n".join(lines) + "\n"


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
        with filled_etcd(workdir, target, self.args.value_size) as etcd:
            result.keys, result.fill_s, endpoint = etcd.keys, etcd.fill_s, etcd.endpoint
            print(f"  etcd {endpoint}: {result.keys} keys, filled in {result.fill_s:.1f} s",
                  flush=True)
            config = write_config(workdir, etcdops_binary(), endpoint, self.children)
            recipient = add_s3_sections(config, self.moto.url)
            env = fake_aws_env(self.tools.env, workdir / "no-aws-config")
            shell_dir = workdir / "shell"
            shell_dir.mkdir()
            steps = shell_steps(self.tools, endpoint, self.moto.url, recipient)
            script = shell_script(self.tools, steps, shell_dir)
            (workdir / "shell.sh").write_text(script)  # for reading after a failure
            sides: dict[str, Callable[[], list[str]]] = {
                ETCDOPS: lambda: [*env, etcdops_binary(), "snapshot", "save",
                                  "--config", str(config), "--output", "json"],
                SHELL: lambda: [*env, "/bin/bash", "-c", script],
            }
            servers = {"etcd": lambda: process_cpu(etcd.pid), "moto": self.moto.cpu}
            rounds = self.args.warmup + self.args.rounds
            for index in range(rounds):
                number = max(0, index - self.args.warmup + 1)  # 0 for warm-ups
                for side, argv in sides.items():
                    out, err = workdir / f"{side}.out", workdir / f"{side}.err"
                    measured = measured_run(
                        self.children, argv(), out, err, label=side, servers=servers,
                        wait_quiet=self.args.wait_quiet,
                    )
                    run = measured.run
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
                                    measured.cpu_of["etcd"], measured.cpu_of["moto"], *sizes,
                                    parts, measured.load_1m, measured.beside,
                                    measured.other_cpu_s, measured.code)
                    result.samples.append(sample)
                    self._clean(workdir, shell_dir)
                    print_sample(sample)
            # the first snapshot commits etcd's pending batch, so dbSize is final only now
            result.db_size = etcd.status().db_size
            result.moto_peak_rss_mib = self.moto.peak_rss_mib()
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
    return parse_bench_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size, print the tables and the verdict; exit 0 only if every target is met."""
    args = parse_args(argv)
    tools = find_tools(args.aws)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-two-region-", dir=args.workdir))
    moto: MotoServer | None = None

    def body() -> int:
        nonlocal moto
        load_before = announce_machine(workdir)
        versions = tools.versions()
        print("  " + "; ".join(versions.values()))
        commit, code = git_state(), code_fingerprint()
        print(f"  etcdops at {commit} (sources {code})")
        moto, buckets = moto_with_buckets(workdir)
        bench = Bench(args, tools, moto, buckets, children)
        results = each_size(args.sizes, workdir, bench.run)
        for result in results:
            print_table(result)
        ok, lines = verdict(results)
        lines += sources_changed((s.code for r in results for s in r.samples), code)
        return conclude(ok, lines, load_before, args.json, {
            "tools": versions,
            "etcdops": {"commit": commit, "sources": code, "at_end": git_state()},
            "targets": {"ratio": TARGET_RATIO, "rss_mib": TARGET_RSS_MIB},
            "sizes": [r.as_dict() for r in results],
        })

    def cleanup() -> None:
        children.kill()
        if moto is not None:
            moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    return run_bench(body, "stopping etcd and moto, removing the temporary files", cleanup)


if __name__ == "__main__":
    sys.exit(main())
