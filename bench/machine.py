"""How busy this machine is, what one process uses, and which code a run measured.

On a 2-core machine shared with other engineers' test suites and benchmarks, a run beside one
measures the contention: the benchmarks wait for a quiet machine (up to a limit), mark a run that
started or ended beside another, and record the CPU the machine spent beyond the processes
measured. etcdops is installed editable and others commit while a benchmark runs, so each run
also records a fingerprint of the sources it ran.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import etcdops

# another engineer's benchmark or test suite: a run beside one measures the contention. Their
# harnesses also run saves and restores from scripts of their own, hence the commands.
BUSY_PATTERN = (
    r"bench/[a-z_]+\.py|pytest|etcdops (snapshot|restore|dr )|etcdctl snapshot"
    r"|etcdutl snapshot"
)
BUSY_POLL_S = 10.0
# after the processes: until the machine idles (a previous run's writeback, say), at most this
SETTLE_LIMIT_S = 60.0
SETTLE_CORES = 0.3
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load: a benchmark on a busy machine should say so."""
    return os.getloadavg()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def memory_mib(pid: int) -> tuple[float, float] | None:
    """A process's own peak RSS so far (VmHWM, its children not included) and its anonymous
    RSS now (RssAnon: the heap, not the file pages it maps); None once gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    found = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in lines if line.startswith(("VmHWM:", "RssAnon:"))
    }
    if len(found) < 2:
        return None  # a zombie has no memory lines
    return found["VmHWM"], found["RssAnon"]


def child_pids(pid: int) -> list[int]:
    """The pids of a process's children (each thread's list: a child belongs to the thread
    that forked it); empty when it has gone."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(p) for p in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def command_name(pid: int) -> str | None:
    """A process's command name (/proc/PID/comm); None once gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


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
