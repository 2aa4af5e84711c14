"""Benchmark `etcdops snapshot save` against `etcdctl snapshot save` on a real etcd.

Run from the repository root with the virtualenv active:

    python bench/snapshot_save.py                    # 256MiB and 1GiB, 3 rounds each
    python bench/snapshot_save.py --sizes 64MiB --rounds 1 --json /tmp/bench.json

Why it is built this way:
- Both tools run as subprocesses, exactly as an operator runs them, so start-up, imports, config
  loading, the host lock, the fsync and the rename all count.
- The two tools alternate (etcdctl, etcdops, etcdctl, ...) so drift on the machine (page cache,
  a noisy neighbour, CPU frequency) hits both alike; the ratio is taken per pair, then the median.
- Peak memory is the child's own ru_maxrss from os.wait4: per process, no psutil needed, and not
  confused with this script's memory.
- The database is filled with etcdops.sample's Kubernetes-shaped objects padded with random
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
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from etcdops.etcd.binaries import find_binary
from etcdops.etcd.client import EtcdSession
from etcdops.etcd.local import LocalCluster
from etcdops.sample import load_kubernetes_objects
from etcdops.units import format_size, parse_size

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_SIZES = "256MiB,1GiB"
DEFAULT_VALUE_SIZE = 100 * 1024
# the database must never hit etcd's quota (2 GiB by default) while the benchmark fills it
QUOTA_BACKEND_BYTES = 8 * GiB
# targets the etcdops design promises (see bench/README.md)
TARGET_RATIO = 1.15
TARGET_RATIO_AT = 1 * GiB
TARGET_RSS_MIB = 100.0
TARGET_STARTUP_S = 0.35
STARTUP_RUNS = 5
# bbolt stores a 100 KiB value in overflow pages plus a little b-tree and freelist: measured
# about 2% over the raw bytes, so the first fill lands just under the target and is topped up
FILL_OVERHEAD = 1.02
FILL_ROUNDS = 5
CLUSTER_NAME = "bench"
ETCDCTL = "etcdctl"
ETCDOPS = "etcdops"


@dataclass
class Sample:
    """One measured run of one tool."""

    tool: str
    round: int
    wall_s: float
    max_rss_mib: float
    snapshot_bytes: int
    stored_bytes: int


@dataclass
class SizeResult:
    """Everything measured for one database size."""

    target_bytes: int
    db_size: int = 0
    db_size_in_use: int = 0
    keys: int = 0
    fill_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)

    def of(self, tool: str) -> list[Sample]:
        """The measured samples of one tool, in round order."""
        return [s for s in self.samples if s.tool == tool]

    def median_wall(self, tool: str) -> float:
        """Median wall time of one tool."""
        return statistics.median(s.wall_s for s in self.of(tool))

    def peak_rss(self, tool: str) -> float:
        """The worst peak RSS over the rounds: a target on memory is a ceiling, not a mean."""
        return max(s.max_rss_mib for s in self.of(tool))

    def ratio(self) -> float:
        """Median over rounds of etcdops/etcdctl wall time, each pair taken back to back."""
        pairs = zip(self.of(ETCDOPS), self.of(ETCDCTL), strict=True)
        return statistics.median(ops.wall_s / ctl.wall_s for ops, ctl in pairs)

    def stored(self) -> tuple[int, int]:
        """Snapshot bytes and stored bytes of the last etcdops run."""
        last = self.of(ETCDOPS)[-1]
        return last.snapshot_bytes, last.stored_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the derived figures next to the raw samples."""
        snapshot, stored = self.stored()
        return asdict(self) | {
            "median_wall_s": {t: self.median_wall(t) for t in (ETCDCTL, ETCDOPS)},
            "peak_rss_mib": {t: self.peak_rss(t) for t in (ETCDCTL, ETCDOPS)},
            "ratio": self.ratio(),
            "compression_ratio": snapshot / stored,
        }


class ChildFailed(RuntimeError):
    """A benchmarked command exited non-zero; its output files say why."""


class Children:
    """The one child process running at a time, so Ctrl-C can kill and reap it."""

    def __init__(self) -> None:
        self.current: subprocess.Popen[bytes] | None = None

    def run(self, argv: Sequence[str], out: Path, err: Path) -> tuple[float, float]:
        """Run argv to completion: wall seconds and peak RSS in MiB; ChildFailed if it fails.

        os.wait4 reaps the child itself, which is what gives its rusage; Popen is told the exit
        code afterwards so it never waits on a pid that is gone.
        """
        with out.open("wb") as stdout, err.open("wb") as stderr:
            started = time.perf_counter()
            self.current = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=_env()
            )
            _, status, usage = os.wait4(self.current.pid, 0)
            wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        self.current.returncode = code
        self.current = None
        if code != 0:
            tail = err.read_text(errors="replace").strip().splitlines()[-5:]
            raise ChildFailed(f"{argv[0]} exited {code}: " + " | ".join(tail))
        return wall, usage.ru_maxrss / 1024  # Linux reports KiB

    def kill(self) -> None:
        """Kill and reap the running child, if any."""
        child, self.current = self.current, None
        if child is None or child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0)
        child.returncode = -signal.SIGKILL


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


def fill(
    session: EtcdSession, endpoint: str, target: int, value_size: int
) -> tuple[int, float]:
    """Load Kubernetes-shaped objects until etcd's dbSize reaches target; (keys, seconds)."""
    started = time.monotonic()
    for seed in range(FILL_ROUNDS):
        missing = target - session.status(endpoint).db_size
        if missing <= 0:
            break
        # distinct seeds give distinct pod names; objects named by index are overwritten, which
        # still grows the database since etcd keeps the old revision (no compaction here)
        count = max(8, int(missing / (value_size * FILL_OVERHEAD)) + 1)
        load_kubernetes_objects(session, count, value_size=value_size, seed=seed)
    return session.count_keys(), time.monotonic() - started


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
    # no fsync while filling: this etcd is a fixture, and the snapshot reads its db, not its WAL
    with LocalCluster.single(
        workdir / "etcd", quota_backend_bytes=QUOTA_BACKEND_BYTES, unsafe_no_fsync=True
    ) as cluster:
        endpoint = cluster.client_urls[0]
        etcd_config = cluster.etcd_config(command_timeout=60.0)
        with EtcdSession(etcd_config) as session:
            result.keys, result.fill_s = fill(session, endpoint, target, args.value_size)
            status = session.status(endpoint)
        print(
            f"  etcd {endpoint}: dbSize {format_size(status.db_size)} "
            f"({format_size(status.db_size_in_use)} in use), {result.keys} keys, "
            f"filled in {result.fill_s:.1f} s",
            flush=True,
        )
        config = write_config(workdir, etcdops, endpoint, children)
        store = workdir / "store"
        commands = {
            ETCDCTL: lambda: [
                etcdctl, f"--endpoints={endpoint}", "snapshot", "save", str(workdir / "ctl.db")
            ],
            ETCDOPS: lambda: [
                etcdops, "snapshot", "save", "--local-only", "--config", str(config),
                "--output", "json",
            ],
        }
        total = args.warmup + args.rounds
        for index in range(total):
            measured = index >= args.warmup
            for tool in (ETCDCTL, ETCDOPS):
                out, err = workdir / f"{tool}.out", workdir / f"{tool}.err"
                wall, rss = children.run(commands[tool](), out, err)
                snapshot = stored = 0
                if tool == ETCDCTL:
                    snapshot = stored = (workdir / "ctl.db").stat().st_size
                    (workdir / "ctl.db").unlink()
                else:
                    manifest = json.loads(out.read_text())
                    snapshot, stored = manifest["snapshot_size"], manifest["object_size"]
                    shutil.rmtree(store / CLUSTER_NAME)
                label = f"round {index - args.warmup + 1}" if measured else "warm-up"
                print(
                    f"  {label:8} {tool:8} {wall:7.2f}s  peak RSS {rss:6.1f} MiB  "
                    f"{format_size(snapshot)} -> {format_size(stored)}",
                    flush=True,
                )
                if measured:
                    result.samples.append(
                        Sample(tool, index - args.warmup + 1, wall, rss, snapshot, stored)
                    )
        # the first snapshot commits etcd's pending batch, so dbSize is final only now
        with EtcdSession(etcd_config) as session:
            status = session.status(endpoint)
        result.db_size, result.db_size_in_use = status.db_size, status.db_size_in_use
    return result


def bench_startup(workdir: Path, children: Children) -> tuple[float, list[float]]:
    """Median wall time of `etcdops --help` as a subprocess: what every cron run pays first."""
    etcdops = _etcdops_binary()
    times = [
        children.run([etcdops, "--help"], workdir / "help.out", workdir / "help.err")[0]
        for _ in range(STARTUP_RUNS)
    ]
    return statistics.median(times), times


def print_table(result: SizeResult) -> None:
    """The per-size summary the README quotes."""
    snapshot, stored = result.stored()
    rows = [
        ("tool", "median wall", "peak RSS", "stored"),
        (
            ETCDCTL,
            f"{result.median_wall(ETCDCTL):.2f} s",
            f"{result.peak_rss(ETCDCTL):.1f} MiB",
            format_size(result.of(ETCDCTL)[-1].stored_bytes),
        ),
        (
            ETCDOPS,
            f"{result.median_wall(ETCDOPS):.2f} s",
            f"{result.peak_rss(ETCDOPS):.1f} MiB",
            format_size(stored),
        ),
    ]
    rate = snapshot / MiB / result.median_wall(ETCDOPS)
    print(
        f"\n== target {format_size(result.target_bytes)}: etcd dbSize {result.db_size} bytes "
        f"({format_size(result.db_size)}), {result.keys} keys, "
        f"{len(result.of(ETCDOPS))} rounds"
    )
    for row in rows:
        print(f"  {row[0]:<8} {row[1]:>12} {row[2]:>12} {row[3]:>12}")
    print(
        f"  ratio etcdops/etcdctl (median of pairs): {result.ratio():.2f}   "
        f"etcdops throughput {rate:.0f} MiB/s\n"
        f"  compression: {format_size(snapshot)} -> {format_size(stored)} = "
        f"{snapshot / stored:.2f}x (stored is {100 * stored / snapshot:.1f}% of the snapshot)"
    )


def verdict(results: list[SizeResult], startup: float) -> tuple[bool, list[str]]:
    """Each target met or missed, in words; the ratio target applies at the size nearest 1 GiB."""
    lines = []
    at = min(results, key=lambda r: abs(r.db_size - TARGET_RATIO_AT))
    ratio = at.ratio()
    lines.append(
        f"ratio {ratio:.2f} at {format_size(at.db_size)} (target <= {TARGET_RATIO} at ~1 GiB): "
        + ("PASS" if ratio <= TARGET_RATIO else "FAIL")
    )
    ok = ratio <= TARGET_RATIO
    for result in results:
        rss = result.peak_rss(ETCDOPS)
        ok &= rss <= TARGET_RSS_MIB
        lines.append(
            f"etcdops peak RSS {rss:.1f} MiB at {format_size(result.db_size)} "
            f"(target <= {TARGET_RSS_MIB:.0f} MiB): "
            + ("PASS" if rss <= TARGET_RSS_MIB else "FAIL")
        )
    ok &= startup < TARGET_STARTUP_S
    lines.append(
        f"etcdops --help {startup:.3f} s (target < {TARGET_STARTUP_S} s): "
        + ("PASS" if startup < TARGET_STARTUP_S else "FAIL")
    )
    return ok, lines


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the finally blocks stop etcd and clean up."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; sizes use the same units as etcdops.toml."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated db sizes")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs of each tool")
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured runs of each tool before the rounds"
    )
    parser.add_argument(
        "--value-size", type=parse_size, default=DEFAULT_VALUE_SIZE, help="bytes per object"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()),
        help="where the temporary directory goes (must be a real disk, not tmpfs)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    args.sizes = [parse_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
    if not args.sizes or args.rounds < 1 or args.warmup < 0:
        parser.error("need at least one size and one round")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size, print the tables and the verdict; exit 0 only if every target is met."""
    args = parse_args(argv)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-bench-", dir=args.workdir))
    results: list[SizeResult] = []
    try:
        with interrupts_as_keyboard_interrupt():
            free = shutil.disk_usage(workdir).free
            print(f"workdir {workdir} ({format_size(free)} free), {os.cpu_count()} CPUs")
            startup, startup_runs = bench_startup(workdir, children)
            print(f"etcdops --help: median {startup:.3f} s over {startup_runs}")
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
            print("\n" + "\n".join(lines))
            print("VERDICT: " + ("all targets met" if ok else "targets missed"))
            if args.json:
                document = {
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "cpus": os.cpu_count(),
                    "startup_s": startup,
                    "startup_runs_s": startup_runs,
                    "sizes": [r.as_dict() for r in results],
                    "verdict": lines,
                    "ok": ok,
                }
                args.json.write_text(json.dumps(document, indent=2) + "\n")
            return 0 if ok else 1
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
