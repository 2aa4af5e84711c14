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
  the command (see _TRAMPOLINE: waited on from here, a child would inherit this script's RSS).
  CPU time comes from the same rusage, and etcd's own CPU from /proc, because on a small
  machine the server and the client compete for the same cores.
- The database is filled with etcdops.demo.sample's Kubernetes-shaped objects padded with random
  base64, so zstd sees data no more compressible than real objects (rather less: see README).
- Every etcd, child process and temporary directory is removed on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from etcdops.config import EtcdConfig
from etcdops.demo.sample import load_kubernetes_objects
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.maintenance import MemberStatus
from etcdops.etcd.session import EtcdSession
from etcdops.units import format_size, parse_size

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_SIZES = "256MiB,1GiB"
DEFAULT_VALUE_SIZE = 100 * 1024
# far above the largest database benchmarked, so etcd never raises NOSPACE while filling
QUOTA_BACKEND_BYTES = 8 * GiB
# the targets etcdops is held to (bench/README.md)
TARGET_RATIO = 1.15
TARGET_RATIO_AT = 1 * GiB
TARGET_RSS_MIB = 100.0
TARGET_STARTUP_S = 0.35
STARTUP_RUNS = 5
# bbolt stores a 100 KiB value in overflow pages plus a little b-tree: about 2% over the raw
# bytes, so one load lands close to the target and a second one tops it up if needed
FILL_OVERHEAD = 1.02
FILL_ROUNDS = 5
CLUSTER_NAME = "bench"
ETCDCTL = "etcdctl"
ETCDOPS = "etcdops"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


@dataclass
class Run:
    """What one child process cost: wall time, its own CPU time and peak RSS."""

    wall_s: float
    cpu_s: float
    max_rss_mib: float


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
class Rounds:
    """What both benchmarks record for one database size: the database, and the samples of
    its runs, each with its .tool, its .round (0 for a warm-up), .max_rss_mib and per-run
    figures."""

    target_bytes: int
    db_size: int = 0
    keys: int = 0
    fill_s: float = 0.0
    samples: list[Any] = field(default_factory=list)

    def of(self, tool: str, *, warmups: bool = False) -> list[Any]:
        """One tool's samples in round order; warm-ups only when asked for."""
        return [s for s in self.samples if s.tool == tool and (warmups or s.round > 0)]

    def median(self, tool: str, attribute: str) -> float:
        """Median of a per-run figure (wall_s, cpu_s, etcd_cpu_s...) over the measured rounds."""
        return statistics.median(getattr(s, attribute) for s in self.of(tool))

    def peak_rss(self, tool: str) -> float:
        """The worst peak RSS of any run, warm-ups included: a memory target is a ceiling."""
        return max(s.max_rss_mib for s in self.of(tool, warmups=True))


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


class ChildFailed(RuntimeError):
    """A benchmarked command exited non-zero; its output files say why."""


# Run by a fresh `python -S`: fork, exec the command, wait4 it, and write what wait4 says. Why not
# os.wait4 on a child of this script: Linux counts the memory of the process that spawned a
# child in the child's ru_maxrss (subprocess uses vfork, so the exec replaces this script's own
# address space; a plain fork copies it), so every child would look at least as big as this
# script, which holds grpc, etcdops and a session. Forked from this ~6 MiB trampoline, the
# command's peak is its own (with a floor of ~6 MiB). The wall time is taken here too, so that
# the trampoline's own start-up is not counted.
_TRAMPOLINE = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as out:
    json.dump({"code": os.waitstatus_to_exitcode(status), "wall_s": wall,
               "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_kib": usage.ru_maxrss}, out)
"""


class Children:
    """The one child process running at a time, so Ctrl-C can kill it and what it started."""

    def __init__(self) -> None:
        self.current: subprocess.Popen[bytes] | None = None

    def run(self, argv: Sequence[str], out: Path, err: Path) -> Run:
        """Run argv to completion through the trampoline and measure it; ChildFailed if it fails.

        The trampoline leads a session of its own, so kill() can take the command down with it
        by process group, whatever this script was doing when it was interrupted.
        """
        report = out.with_suffix(".rusage.json")
        report.unlink(missing_ok=True)
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.current = subprocess.Popen(
                [sys.executable, "-S", "-c", _TRAMPOLINE, str(report), *argv],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=_env(),
                start_new_session=True,
            )
            self.current.wait()
        self.current = None
        try:
            measured = json.loads(report.read_text())
        except (OSError, ValueError) as exc:
            raise ChildFailed(f"no measurement for {Path(argv[0]).name}: {exc}") from exc
        if measured["code"] != 0:
            tail = err.read_text(errors="replace").strip().splitlines()[-5:]
            raise ChildFailed(
                f"{Path(argv[0]).name} exited {measured['code']}: " + " | ".join(tail)
            )
        # Linux reports ru_maxrss in KiB
        return Run(measured["wall_s"], measured["cpu_s"], measured["max_rss_kib"] / 1024)

    def kill(self) -> None:
        """Kill the running trampoline and its command (one process group), then reap it."""
        child, self.current = self.current, None
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _env() -> dict[str, str]:
    # the host's etcdctl/etcdops settings would point the tools at some other etcd
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("ETCDCTL_", "ETCDOPS_", "ETCD_"))
    }


def _etcdops_binary() -> str:
    """The installed console script next to this interpreter, as an operator would run it."""
    script = Path(sys.executable).with_name("etcdops")
    if script.exists():
        return str(script)
    found = shutil.which("etcdops")
    if found is None:
        sys.exit("etcdops console script not found: pip install -e . in this virtualenv")
    return found


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load: a benchmark on a busy machine should say so."""
    return os.getloadavg()


def in_thread(function: Callable[[], T]) -> T:
    """Run a function that talks gRPC on a worker thread, this thread only waiting for it.

    grpc Python deadlocks when a signal handler raises inside a call made on the main thread
    (grpc/grpc#19973): Ctrl-C during the fill left this script hung in a channel's __del__,
    with etcd and the temporary directory still there. Here Ctrl-C lands in the wait, the
    cleanup stops etcd, and the worker's call then fails on its own.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(function())
        except BaseException as exc:  # handed to the waiting thread
            errors.append(exc)

    worker = threading.Thread(target=target, name="etcd-calls", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)  # a timed wait, so that signals are handled while it waits
    if errors:
        raise errors[0]
    return results[0]


def fill(config: EtcdConfig, endpoint: str, target: int, value_size: int) -> tuple[int, float]:
    """Load Kubernetes-shaped objects until etcd's dbSize reaches target; (keys, seconds)."""
    started = time.monotonic()
    with EtcdSession(config) as session:
        for seed in range(FILL_ROUNDS):
            missing = target - session.status(endpoint).db_size
            if missing <= 0:
                break
            # distinct seeds give distinct pod names; objects named by index are overwritten,
            # which still grows the database since etcd keeps the old revision (no compaction)
            count = max(8, int(missing / (value_size * FILL_OVERHEAD)) + 1)
            load_kubernetes_objects(session, count, value_size=value_size, seed=seed)
        return session.count_keys(), time.monotonic() - started


def member_status(config: EtcdConfig, endpoint: str) -> MemberStatus:
    """One member's status (dbSize, dbSizeInUse), on a session of its own."""
    with EtcdSession(config) as session:
        return session.status(endpoint)


def write_config(workdir: Path, etcdops: str, endpoint: str, children: Children) -> Path:
    """An etcdops.toml for the throwaway etcd, with a key made by `etcdops keys generate`."""
    identity = workdir / "identity.txt"
    out = workdir / "keys.json"
    children.run(
        [etcdops, "keys", "generate", "--out", str(identity), "--output", "json"],
        out,
        workdir / "keys.err",
    )
    recipient = json.loads(out.read_text())["recipient"]
    config = workdir / "etcdops.toml"
    config.write_text(
        f'cluster = "{CLUSTER_NAME}"\n\n'
        f"[etcd]\nendpoints = [{json.dumps(endpoint)}]\n\n"
        f"[encryption]\nrecipients = [{json.dumps(recipient)}]\n\n"
        f"[local]\ndir = {json.dumps(str(workdir / 'store'))}\n"
    )
    return config


def bench_size(
    target: int, args: argparse.Namespace, workdir: Path, children: Children
) -> SizeResult:
    """Start etcd, fill it to target, then time the two tools alternately."""
    result = SizeResult(target)
    etcdctl, etcdops = str(find_binary("etcdctl")), _etcdops_binary()
    # no fsync while filling: this etcd is a fixture, and a snapshot reads its db, not its WAL
    cluster = LocalCluster.single(
        workdir / "etcd", quota_backend_bytes=QUOTA_BACKEND_BYTES, unsafe_no_fsync=True
    )
    try:
        in_thread(cluster.start)
        member = cluster.members[0]
        assert member.process is not None
        etcd_pid = member.process.pid
        endpoint = member.client_url
        etcd_config = cluster.etcd_config(command_timeout=60.0)
        result.keys, result.fill_s = in_thread(
            lambda: fill(etcd_config, endpoint, target, args.value_size)
        )
        status = in_thread(lambda: member_status(etcd_config, endpoint))
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
                etcd_before = process_cpu(etcd_pid)
                run = children.run(commands[tool](), out, err)
                etcd_cpu = process_cpu(etcd_pid) - etcd_before
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
        status = in_thread(lambda: member_status(etcd_config, endpoint))
        result.db_size, result.db_size_in_use = status.db_size, status.db_size_in_use
    finally:
        cluster.stop()
    return result


def bench_startup(workdir: Path, children: Children) -> list[Run]:
    """`etcdops --help` as a subprocess: what every cron run pays before any work."""
    etcdops = _etcdops_binary()
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


def ratio_and_rss_verdict(
    results: Sequence[Any], target_ratio: float, target_rss_mib: float
) -> tuple[bool, list[str]]:
    """The wall-time ratio at the size nearest 1 GiB and etcdops' peak RSS at every size, each
    met or missed, in words (results: either benchmark's SizeResults)."""
    at = min(results, key=lambda r: abs(r.db_size - TARGET_RATIO_AT))
    ratio = at.ratio()
    ok = ratio <= target_ratio
    lines = [
        f"ratio {ratio:.2f} at {format_size(at.db_size)} (target <= {target_ratio} at ~1 GiB): "
        + ("PASS" if ratio <= target_ratio else "FAIL")
    ]
    for result in results:
        rss = result.peak_rss(ETCDOPS)
        ok &= rss <= target_rss_mib
        lines.append(
            f"etcdops peak RSS {rss:.1f} MiB at {format_size(result.db_size)} "
            f"(target <= {target_rss_mib:.0f} MiB): "
            + ("PASS" if rss <= target_rss_mib else "FAIL")
        )
    return ok, lines


def verdict(results: list[SizeResult], startup: float) -> tuple[bool, list[str]]:
    """Each target met or missed, in words."""
    ok, lines = ratio_and_rss_verdict(results, TARGET_RATIO, TARGET_RSS_MIB)
    ok &= startup < TARGET_STARTUP_S
    lines.append(
        f"etcdops --help {startup:.3f} s (target < {TARGET_STARTUP_S} s): "
        + ("PASS" if startup < TARGET_STARTUP_S else "FAIL")
    )
    return ok, lines


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the finally blocks stop etcd and clean up.

    A signal this script was started with ignored (SIGHUP under nohup, SIGINT in a background
    job) stays ignored: whoever started it asked for that.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {
        s: signal.signal(s, handler)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(s) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def bench_arguments(doc: str | None, runs_of: str) -> argparse.ArgumentParser:
    """The options every benchmark here takes; sizes use the same units as etcdops.toml."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated db sizes")
    parser.add_argument("--rounds", type=int, default=3, help=f"measured runs of each {runs_of}")
    parser.add_argument(
        "--warmup", type=int, default=1,
        help=f"unmeasured runs of each {runs_of} first (their RSS still counts toward the peak)",
    )
    parser.add_argument(
        "--value-size", type=parse_size, default=DEFAULT_VALUE_SIZE, help="bytes per object"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()),
        help="where the temporary directory goes (must be a real disk, not tmpfs)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    return parser


def parse_bench_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse, with the sizes turned into bytes; a bad combination exits 2 with its reason."""
    args = parser.parse_args(argv)
    args.sizes = [parse_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
    if not args.sizes or args.rounds < 1 or args.warmup < 0:
        parser.error("need at least one size, one round and no negative warm-up")
    return args


def conclude(
    ok: bool, lines: list[str], load_before: tuple[float, ...], json_path: Path | None,
    document: dict[str, Any],
) -> int:
    """Print the verdict, write the JSON document if asked, and return the exit code."""
    load_after = load_average()
    print("\nload average at the end {:.2f} {:.2f} {:.2f}".format(*load_after))
    print("\n".join(lines))
    print("VERDICT: " + ("all targets met" if ok else "targets missed"))
    if json_path:
        header = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpus": os.cpu_count(),
            "load_average": {"start": load_before, "end": load_after},
        }
        result = header | document | {"verdict": lines, "ok": ok}
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size, print the tables and the verdict; exit 0 only if every target is met."""
    args = parse_bench_args(bench_arguments(__doc__, "tool"), argv)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-bench-", dir=args.workdir))
    results: list[SizeResult] = []
    try:
        with interrupts_as_keyboard_interrupt():
            load_before = load_average()
            free = shutil.disk_usage(workdir).free
            print(
                f"workdir {workdir} ({format_size(free)} free), {os.cpu_count()} CPUs, "
                "load average {:.2f} {:.2f} {:.2f}".format(*load_before)
            )
            startup_runs = bench_startup(workdir, children)
            startup = statistics.median(r.wall_s for r in startup_runs)
            print(
                f"etcdops --help: median {startup:.3f} s of "
                + ", ".join(f"{r.wall_s:.3f}" for r in startup_runs)
                + f" (peak RSS {max(r.max_rss_mib for r in startup_runs):.1f} MiB)"
            )
            for target in args.sizes:
                print(f"\n-- {format_size(target)}", flush=True)
                sized = workdir / f"size-{target}"
                sized.mkdir()
                try:
                    results.append(bench_size(target, args, sized, children))
                finally:
                    shutil.rmtree(sized, ignore_errors=True)
            for result in results:
                print_table(result)
            ok, lines = verdict(results, startup)
            return conclude(ok, lines, load_before, args.json, {
                "startup_median_s": startup,
                "startup_runs": [asdict(r) for r in startup_runs],
                "sizes": [r.as_dict() for r in results],
            })
    except KeyboardInterrupt:
        print("\ninterrupted: stopping etcd and removing the temporary files", file=sys.stderr)
        return 130
    except ChildFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        children.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
