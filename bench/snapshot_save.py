"""Benchmark `etcdops snapshot save` against `etcdctl snapshot save` on a real etcd.

Run from the repository root with the virtualenv active:

    python bench/snapshot_save.py                    # 256MiB and 1GiB, 3 rounds each
    python bench/snapshot_save.py --sizes 64MiB --rounds 1 --json /tmp/bench.json

Why it is built this way:
- Both tools run as subprocesses, exactly as an operator runs them, so start-up, imports, config
  loading, the host lock, the fsync and the rename all count.
- The two tools alternate (etcdctl, etcdops, etcdctl, ...) so drift on the machine (page cache,
  a noisy neighbour, CPU frequency) hits both alike; the ratio is taken per pair, then the median.
- Peak memory is the child's own ru_maxrss from os.wait4, taken by a tiny trampoline that forks
  the command (see common._TRAMPOLINE: waited on from here, a child would inherit this script's
  RSS).
  CPU time comes from the same rusage, and etcd's own CPU from /proc, because on a small
  machine the server and the client compete for the same cores.
- The database is filled with etcdops.demo.sample's Kubernetes-shaped objects padded with random
  base64, so zstd sees data no more compressible than real objects (rather less: see README).
- Every etcd, child process and temporary directory is removed on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    CLUSTER_NAME,
    ETCDOPS,
    Children,
    MiB,
    Rounds,
    Run,
    announce_machine,
    bench_arguments,
    conclude,
    each_size,
    etcdops_binary,
    filled_etcd,
    parse_bench_args,
    ratio_and_rss_verdict,
    run_bench,
    write_config,
)
from machine import process_cpu

from etcdops.etcd.binaries import find_binary
from etcdops.units import format_size

# the targets etcdops is held to (bench/README.md)
TARGET_RATIO = 1.15
TARGET_RSS_MIB = 100.0
TARGET_STARTUP_S = 0.35
STARTUP_RUNS = 5
ETCDCTL = "etcdctl"


@dataclass
class Sample:
    """One run of one tool against the benchmark etcd (round 0 is a warm-up)."""

    tool: str
    round: int
    wall_s: float
    cpu_s: float
    etcd_cpu_s: float
    max_rss_mib: float
    snapshot_bytes: int
    stored_bytes: int


@dataclass
class SizeResult(Rounds):
    """Everything measured for one database size."""

    db_size_in_use: int = 0

    def tools(self) -> list[str]:
        """The tools measured, in the order they ran."""
        return list(dict.fromkeys(s.tool for s in self.samples))

    def ratio(self, tool: str = ETCDOPS) -> float:
        """Median over rounds of tool/etcdctl wall time, each pair taken back to back."""
        pairs = zip(self.of(tool), self.of(ETCDCTL), strict=True)
        return statistics.median(ops.wall_s / ctl.wall_s for ops, ctl in pairs)

    def stored(self) -> tuple[int, int]:
        """Snapshot bytes and stored bytes of the last etcdops run."""
        last = self.of(ETCDOPS)[-1]
        return last.snapshot_bytes, last.stored_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the derived figures next to the raw samples."""
        snapshot, stored = self.stored()
        tools = self.tools()
        return asdict(self) | {
            "median_wall_s": {t: self.median(t, "wall_s") for t in tools},
            "median_cpu_s": {t: self.median(t, "cpu_s") for t in tools},
            "median_etcd_cpu_s": {t: self.median(t, "etcd_cpu_s") for t in tools},
            "peak_rss_mib": {t: self.peak_rss(t) for t in tools},
            "ratio": self.ratio(),
            "ratios": {t: self.ratio(t) for t in tools if t != ETCDCTL},
            "compression_ratio": snapshot / stored,
        }


def bench_size(
    target: int, args: argparse.Namespace, workdir: Path, children: Children
) -> SizeResult:
    """Start etcd, fill it to target, then time the two tools alternately."""
    result = SizeResult(target)
    etcdctl, etcdops = str(find_binary("etcdctl")), etcdops_binary()
    with filled_etcd(workdir, target, args.value_size) as etcd:
        result.keys, result.fill_s, endpoint = etcd.keys, etcd.fill_s, etcd.endpoint
        status = etcd.status()
        print(
            f"  etcd {endpoint}: dbSize {format_size(status.db_size)} after the load "
            f"({format_size(status.db_size_in_use)} in use), {result.keys} keys, "
            f"filled in {result.fill_s:.1f} s",
            flush=True,
        )
        config = write_config(workdir, etcdops, endpoint, children)
        snapshot_file, store = workdir / "etcdctl.db", workdir / "store"
        commands: dict[str, Callable[[], list[str]]] = {
            ETCDCTL: lambda: [
                etcdctl, f"--endpoints={endpoint}", "snapshot", "save", str(snapshot_file)
            ],
            ETCDOPS: lambda: [
                etcdops, "snapshot", "save", "--local-only", "--config", str(config),
                "--output", "json",
            ],
        }
        for index in range(args.warmup + args.rounds):
            number = max(0, index - args.warmup + 1)  # 0 for warm-ups
            for tool in commands:
                out, err = workdir / f"{tool}.out", workdir / f"{tool}.err"
                etcd_before = process_cpu(etcd.pid)
                run = children.run(commands[tool](), out, err)
                etcd_cpu = process_cpu(etcd.pid) - etcd_before
                if tool == ETCDCTL:
                    snapshot = stored = snapshot_file.stat().st_size
                    snapshot_file.unlink()
                else:
                    manifest = json.loads(out.read_text())
                    snapshot, stored = manifest["snapshot_size"], manifest["object_size"]
                    shutil.rmtree(store / CLUSTER_NAME)
                sample = Sample(
                    tool, number, run.wall_s, run.cpu_s, etcd_cpu, run.max_rss_mib,
                    snapshot, stored,
                )
                result.samples.append(sample)
                label = f"round {number}" if number else "warm-up"
                print(
                    f"  {label:8} {tool:8} {run.wall_s:6.2f} s  cpu {run.cpu_s:5.2f} s  "
                    f"etcd cpu {etcd_cpu:5.2f} s  peak RSS {run.max_rss_mib:6.1f} MiB  "
                    f"{format_size(snapshot)} -> {format_size(stored)}",
                    flush=True,
                )
        # the first snapshot commits etcd's pending batch, so dbSize is final only now
        status = etcd.status()
        result.db_size, result.db_size_in_use = status.db_size, status.db_size_in_use
    return result


def bench_startup(workdir: Path, children: Children) -> list[Run]:
    """`etcdops --help` as a subprocess: what every cron run pays before any work."""
    etcdops = etcdops_binary()
    return [
        children.run([etcdops, "--help"], workdir / "help.out", workdir / "help.err")
        for _ in range(STARTUP_RUNS)
    ]


def print_table(result: SizeResult) -> None:
    """The per-size summary the README quotes."""
    snapshot, stored = result.stored()
    print(
        f"\n== {format_size(result.target_bytes)}: etcd dbSize {result.db_size} bytes "
        f"({format_size(result.db_size)}), {result.keys} keys, "
        f"{len(result.of(ETCDOPS))} rounds (medians; RSS is the peak of every run)"
    )
    header = ("tool", "wall", "vs etcdctl", "own cpu", "etcd cpu", "peak RSS", "stored")
    print("  {:<8} {:>9} {:>10} {:>9} {:>9} {:>10} {:>10}".format(*header))
    for tool in result.tools():
        ratio = "" if tool == ETCDCTL else f"{result.ratio(tool):.2f}x"
        stored_bytes = result.of(tool)[-1].stored_bytes
        print(
            f"  {tool:<8} {result.median(tool, 'wall_s'):>7.2f} s {ratio:>10} "
            f"{result.median(tool, 'cpu_s'):>7.2f} s {result.median(tool, 'etcd_cpu_s'):>7.2f} s "
            f"{result.peak_rss(tool):>6.1f} MiB {format_size(stored_bytes):>10}"
        )
    rate = snapshot / MiB / result.median(ETCDOPS, "wall_s")
    print(
        f"  ratio etcdops/etcdctl (median of pairs): {result.ratio():.2f}   "
        f"etcdops throughput {rate:.0f} MiB/s\n"
        f"  compression: {format_size(snapshot)} -> {format_size(stored)} = "
        f"{snapshot / stored:.2f}x (stored is {100 * stored / snapshot:.1f}% of the snapshot)"
    )


def verdict(results: list[SizeResult], startup: float) -> tuple[bool, list[str]]:
    """Each target met or missed, in words."""
    ok, lines = ratio_and_rss_verdict(results, TARGET_RATIO, TARGET_RSS_MIB)
    ok &= startup < TARGET_STARTUP_S
    lines.append(
        f"etcdops --help {startup:.3f} s (target < {TARGET_STARTUP_S} s): "
        + ("PASS" if startup < TARGET_STARTUP_S else "FAIL")
    )
    return ok, lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size, print the tables and the verdict; exit 0 only if every target is met."""
    args = parse_bench_args(bench_arguments(__doc__, "tool", wait_quiet=None), argv)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-bench-", dir=args.workdir))

    def body() -> int:
        load_before = announce_machine(workdir)
        startup_runs = bench_startup(workdir, children)
        startup = statistics.median(r.wall_s for r in startup_runs)
        print(
            f"etcdops --help: median {startup:.3f} s of "
            + ", ".join(f"{r.wall_s:.3f}" for r in startup_runs)
            + f" (peak RSS {max(r.max_rss_mib for r in startup_runs):.1f} MiB)"
        )
        results = each_size(args.sizes, workdir,
                            lambda target, sized: bench_size(target, args, sized, children))
        for result in results:
            print_table(result)
        ok, lines = verdict(results, startup)
        return conclude(ok, lines, load_before, args.json, {
            "startup_median_s": startup,
            "startup_runs": [asdict(r) for r in startup_runs],
            "sizes": [r.as_dict() for r in results],
        })

    def cleanup() -> None:
        children.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    return run_bench(body, "stopping etcd and removing the temporary files", cleanup)


if __name__ == "__main__":
    sys.exit(main())
