"""What every benchmark here shares: a child process measured as it runs, a throwaway etcd filled
to a size, the options, and the verdict.

The scripts run as `python bench/NAME.py`, so this directory is on sys.path and they import
this module as `common`. Why it measures the way it does is in bench/README.md.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from machine import (
    code_fingerprint,
    load_average,
    machine_cpu,
    others_running,
    wait_for_quiet,
)

from etcdops.config import EtcdConfig
from etcdops.demo.sample import load_kubernetes_objects
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
# the ratio targets are set at this size; each benchmark takes its size nearest to it
TARGET_RATIO_AT = 1 * GiB
# bbolt stores a 100 KiB value in overflow pages plus a little b-tree: about 2% over the raw
# bytes, so one load lands close to the target and a second one tops it up if needed
FILL_OVERHEAD = 1.02
FILL_ROUNDS = 5
CLUSTER_NAME = "bench"
# how often Children.run samples a command's /proc while it runs, when asked to
SAMPLE_EVERY_S = 0.05
ETCDOPS = "etcdops"
T = TypeVar("T")


@dataclass
class Run:
    """What one child process cost: wall time, its own CPU time and peak RSS."""

    wall_s: float
    cpu_s: float
    max_rss_mib: float
    pid: int = 0  # the command's own pid (the trampoline's child), for /proc readings


@dataclass
class Rounds:
    """What every benchmark records for one database size: the database, and the samples of
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


class ChildFailed(RuntimeError):
    """A benchmarked command exited non-zero; its output files say why."""


# Run by a fresh `python -S`: fork, exec the command, wait4 it, and write what wait4 says. Why not
# os.wait4 on a child of the benchmark: Linux counts the memory of the process that spawned a
# child in the child's ru_maxrss (subprocess uses vfork, so the exec replaces the benchmark's own
# address space; a plain fork copies it), so every child would look at least as big as the
# benchmark, which holds grpc, etcdops and a session. Forked from this ~6 MiB trampoline, the
# command's peak is its own (with a floor of ~6 MiB). The wall time is taken here too, so that
# the trampoline's own start-up is not counted. The command's pid goes first into the report, so
# that a watcher can read /proc/PID while it runs.
_TRAMPOLINE = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
with open(sys.argv[1] + ".pid", "w") as out:
    out.write(str(pid))
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as out:
    json.dump({"code": os.waitstatus_to_exitcode(status), "wall_s": wall, "pid": pid,
               "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_kib": usage.ru_maxrss}, out)
"""


class Children:
    """The one child process running at a time, so Ctrl-C can kill it and what it started."""

    def __init__(self) -> None:
        self.current: subprocess.Popen[bytes] | None = None

    def run(
        self, argv: Sequence[str], out: Path, err: Path,
        sample: Callable[[int], None] | None = None,
    ) -> Run:
        """Run argv to completion through the trampoline and measure it; ChildFailed if it fails.

        The trampoline leads a session of its own, so kill() can take the command down with it
        by process group, whatever the benchmark was doing when it was interrupted. `sample`, if
        given, is called with the command's pid every SAMPLE_EVERY_S while it runs (to read
        /proc/PID: what wait4 cannot tell apart, such as one process of a tree).
        """
        report = out.with_suffix(".rusage.json")
        pid_file = Path(str(report) + ".pid")
        report.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.current = subprocess.Popen(
                [sys.executable, "-S", "-c", _TRAMPOLINE, str(report), *argv],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=bench_env(),
                start_new_session=True,
            )
            while sample is not None:
                try:
                    self.current.wait(SAMPLE_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    pid = _read_pid(pid_file)
                    if pid is not None:
                        sample(pid)
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
        return Run(
            measured["wall_s"], measured["cpu_s"], measured["max_rss_kib"] / 1024, measured["pid"]
        )

    def kill(self) -> None:
        """Kill the running trampoline and its command (one process group), then reap it."""
        child, self.current = self.current, None
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


@dataclass
class Measured:
    """One measured run and what else the machine did meanwhile."""

    run: Run
    cpu_of: dict[str, float]  # CPU each named server (etcd, moto) spent during the run
    # CPU the machine spent during the run beyond the command's and the servers': other
    # processes, the benchmark itself, kernel threads (writeback). Near 0: nobody competed.
    other_cpu_s: float
    load_1m: float
    beside: list[str]  # other benchmarks or test suites seen when it started or ended
    code: str  # fingerprint of the etcdops sources the run used (installed editable)


def measured_run(
    children: Children, argv: Sequence[str], out: Path, err: Path, *, label: str,
    servers: dict[str, Callable[[], float]], wait_quiet: float,
    sample: Callable[[int], None] | None = None,
) -> Measured:
    """Wait for a quiet machine (at most wait_quiet s), then run argv through children.run and
    read the servers' CPU (each a function returning CPU seconds so far), the machine's and the
    code's fingerprint around it; ChildFailed names label."""
    beside = wait_for_quiet(wait_quiet)
    load = load_average()[0]
    before = {name: cpu() for name, cpu in servers.items()}
    machine_before, code = machine_cpu(), code_fingerprint()
    try:
        run = children.run(argv, out, err, sample)
    except ChildFailed as exc:
        raise ChildFailed(f"{label}: {exc}") from exc
    cpu_of = {name: cpu() - before[name] for name, cpu in servers.items()}
    other = machine_cpu() - machine_before - run.cpu_s - sum(cpu_of.values())
    if code_fingerprint() != code:
        code += " (changed during the run)"
    beside = sorted(set(beside) | set(others_running()))
    return Measured(run, cpu_of, other, load, beside, code)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):  # not written yet, or half written
        return None


def bench_env() -> dict[str, str]:
    """This environment without the host's etcdctl/etcdops settings, which would point the tools
    at some other etcd."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("ETCDCTL_", "ETCDOPS_", "ETCD_"))
    }


def etcdops_binary() -> str:
    """The installed console script next to this interpreter, as an operator would run it."""
    script = Path(sys.executable).with_name("etcdops")
    if script.exists():
        return str(script)
    found = shutil.which("etcdops")
    if found is None:
        sys.exit("etcdops console script not found: pip install -e . in this virtualenv")
    return found


def in_thread(function: Callable[[], T]) -> T:
    """Run a function that talks gRPC on a worker thread, this thread only waiting for it.

    grpc Python deadlocks when a signal handler raises inside a call made on the main thread
    (grpc/grpc#19973): Ctrl-C during the fill left the benchmark hung in a channel's __del__,
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


@dataclass(frozen=True)
class FilledEtcd:
    """A running throwaway etcd, filled: what a benchmark needs to reach and measure it."""

    cluster: LocalCluster
    pid: int
    endpoint: str
    config: EtcdConfig
    keys: int
    fill_s: float

    def status(self) -> MemberStatus:
        """Its status now (the first snapshot commits etcd's pending batch: dbSize grows)."""
        return in_thread(lambda: member_status(self.config, self.endpoint))


@contextlib.contextmanager
def filled_etcd(workdir: Path, target: int, value_size: int) -> Iterator[FilledEtcd]:
    """A single-member etcd in workdir/etcd, filled until its dbSize reaches target; stopped
    when the block ends, however it ends (stopping it earlier is fine: cluster.stop())."""
    # no fsync: this etcd is a fixture, and a snapshot reads its db, not its WAL
    cluster = LocalCluster.single(
        workdir / "etcd", quota_backend_bytes=QUOTA_BACKEND_BYTES, unsafe_no_fsync=True
    )
    try:
        in_thread(cluster.start)
        member = cluster.members[0]
        assert member.process is not None
        config = cluster.etcd_config(command_timeout=60.0)
        endpoint = member.client_url
        keys, fill_s = in_thread(lambda: fill(config, endpoint, target, value_size))
        yield FilledEtcd(cluster, member.process.pid, endpoint, config, keys, fill_s)
    finally:
        cluster.stop()


def write_config(
    workdir: Path, etcdops: str, endpoint: str, children: Children, *, identity: bool = False
) -> Path:
    """An etcdops.toml for the throwaway etcd, with a key made by `etcdops keys generate` (its
    identity in workdir/identity.txt, named in the config only when asked: what restores)."""
    identity_file = workdir / "identity.txt"
    out = workdir / "keys.json"
    children.run(
        [etcdops, "keys", "generate", "--out", str(identity_file), "--output", "json"],
        out,
        workdir / "keys.err",
    )
    recipient = json.loads(out.read_text())["recipient"]
    config = workdir / "etcdops.toml"
    named = f"identity_file = {json.dumps(str(identity_file))}\n" if identity else ""
    config.write_text(
        f'cluster = "{CLUSTER_NAME}"\n\n'
        f"[etcd]\nendpoints = [{json.dumps(endpoint)}]\n\n"
        f"[encryption]\nrecipients = [{json.dumps(recipient)}]\n{named}\n"
        f"[local]\ndir = {json.dumps(str(workdir / 'store'))}\n"
    )
    return config


def ratio_and_rss_verdict(
    results: Sequence[Any], target_ratio: float, target_rss_mib: float
) -> tuple[bool, list[str]]:
    """The wall-time ratio at the size nearest 1 GiB and etcdops' peak RSS at every size, each
    met or missed, in words (results: any benchmark's SizeResults, with .ratio())."""
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


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the finally blocks stop etcd and clean up.

    A signal the benchmark was started with ignored (SIGHUP under nohup, SIGINT in a background
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


def bench_arguments(
    doc: str | None, runs_of: str, *, wait_quiet: float | None = 1200.0
) -> argparse.ArgumentParser:
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
    return run_arguments(parser, wait_quiet=wait_quiet)


def run_arguments(
    parser: argparse.ArgumentParser, *, wait_quiet: float | None = 1200.0,
    before: str = "each run",
) -> argparse.ArgumentParser:
    """The options of how a benchmark runs, which every one here takes: how long to wait for a
    quiet machine (None: it does not wait), where its files go, and a JSON copy of its
    results."""
    if wait_quiet is not None:
        parser.add_argument(
            "--wait-quiet", type=float, default=wait_quiet, metavar="SECONDS",
            help=f"before {before}, wait up to this long while another benchmark or pytest runs",
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


def announce_machine(workdir: Path) -> tuple[float, ...]:
    """Print where a benchmark works and how busy the machine is; the load average then."""
    load = load_average()
    print(f"workdir {workdir} ({format_size(shutil.disk_usage(workdir).free)} free), "
          f"{os.cpu_count()} CPUs, load average " + "{:.2f} {:.2f} {:.2f}".format(*load))
    return load


def each_size(
    sizes: Sequence[int], workdir: Path, measure: Callable[[int, Path], T],
    after: Callable[[], None] | None = None,
) -> list[T]:
    """measure(size, its own directory) for every size, the directory removed (and after()
    called) whatever the run did."""
    results = []
    for target in sizes:
        print(f"\n-- {format_size(target)}", flush=True)
        sized = workdir / f"size-{target}"
        sized.mkdir()
        try:
            results.append(measure(target, sized))
        finally:
            if after is not None:
                after()
            shutil.rmtree(sized, ignore_errors=True)
    return results


def sources_changed(codes: Iterable[str], code: str) -> list[str]:
    """A warning when etcdops' sources changed while runs were measured (code: at the start)."""
    seen = sorted(set(codes))
    if seen == [code]:
        return []
    return [f"WARNING: etcdops' sources changed during the benchmark ({', '.join(seen)}; at "
            f"the start {code}): the runs did not all measure the same code"]


def run_bench(body: Callable[[], int], stopping: str, cleanup: Callable[[], None]) -> int:
    """body's exit code; 130 at Ctrl-C or SIGTERM, 1 when a child failed; cleanup() always."""
    try:
        with interrupts_as_keyboard_interrupt():
            return body()
    except KeyboardInterrupt:
        print(f"\ninterrupted: {stopping}", file=sys.stderr)
        return 130
    except ChildFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
