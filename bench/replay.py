"""Benchmark a point-in-time restore's replay: a ~1 GiB base backup plus --revisions revisions of
journal (default 720,000: one hour at 200 writes/s), restored with `etcdops restore --revision`,
against the seed's 5-minute restore target.

Run from the repository root with the virtualenv active:

    python bench/replay.py                                    # 1 GiB, 720,000 revisions (~25 min)
    python bench/replay.py --size 64MiB --revisions 20000     # a quick check (~2 min)
    python bench/replay.py --revisions 200000 --json /tmp/replay.json   # and project the hour

What it does, from nothing:

1. A throwaway single-member etcd (bench/common.filled_etcd: no fsync, 8 GiB quota) filled with
   Kubernetes-shaped objects until its dbSize reaches --size, as the other benchmarks fill it;
   `etcdops snapshot save` to the local store (and moto's two regions with --s3): the base.
2. `etcdops journal run` as a process, as systemd runs it, with the default [journal] settings.
3. --writers threads, each with a session of its own, write --revisions single-key revisions of
   Kubernetes-shaped objects (etcdops.demo.sample) as fast as etcd takes them: in turn an Event
   created, a pod's status updated, a node's Lease renewed, and an Event deleted (each thread's
   own, created EVENT_BACKLOG Events before: Events come and go, as with --event-ttl). Every
   write is one revision. The hour is compressed: what kube-apiserver writes in an hour at
   200/s is written in minutes, so the journal sees it faster than production would.
4. A wait until the journal's chain in the local store reaches the last revision written (its
   segment manifests read back, journal.chain.window: no hole), then SIGTERM to the journal,
   which must exit 0. The live keys at that revision are counted, and etcd is stopped: a
   restore needs none, and it would only compete for the two cores.
5. `etcdops restore latest --revision LAST` into an absent data dir, measured as restore.py
   measures (common.measured_run: wall, CPU of the whole tree, the rest of the machine's CPU;
   restore.TreePeaks: etcdops' own VmHWM and each program's under it, the staging etcd's
   included). Its stderr is asked for in JSON lines (ETCDOPS_LOG_FORMAT=json), so each step is
   timed from its log lines' timestamps: decode (the base read, checked and decrypted), staging
   (etcdutl into the staging etcd and its start), replay, the staging etcd's snapshot, etcdutl
   (the member). The replay's revisions, changes and rate are the ones it logs.
6. An etcd booted on the restored data dir: its revision must be LAST and its live keys the
   count of step 4.

With fewer revisions than the hour, the hour's time is projected: the restore's time outside
the replay, plus 720,000 revisions at the replay's measured rate (the staging snapshot and the
member's etcdutl grow with the history, so that is if anything low). The verdict is held
against 300 s on the hour: the measured time when --revisions reaches it, else the projection.
Exit code 0 only when it is met, 1 when missed or a check failed; Ctrl-C or SIGTERM stops
everything and removes the files (130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_VALUE_SIZE,
    ChildFailed,
    Children,
    FilledEtcd,
    announce_machine,
    bench_env,
    conclude,
    etcdops_binary,
    filled_etcd,
    in_thread,
    measured_run,
    run_bench,
    write_config,
)
from machine import code_fingerprint, git_state, process_cpu
from moto_s3 import MotoServer, add_s3_sections, fake_aws_env, fake_aws_variables, moto_with_buckets
from restore import TreePeaks

from etcdops.config.loader import load_config
from etcdops.demo.sample import (
    NODE_LEASE_PREFIX,
    POD_PREFIX,
    compact_json,
    event,
    kubernetes_objects,
    micro_time,
    node_lease,
)
from etcdops.errors import EtcdopsError
from etcdops.etcd.local import LocalEtcd
from etcdops.etcd.session import EtcdSession
from etcdops.journal.chain import window
from etcdops.journal.store import chain_manifests
from etcdops.stores.configured import open_stores
from etcdops.units import format_duration, format_size, parse_size

HOUR_REVISIONS = 720_000  # issue 13: one hour at 200 writes/s
TARGET_S = 300.0  # the seed's restore target
EVENT_BACKLOG = 1000  # Events a writer keeps before it deletes its oldest
TEMPLATE_OBJECTS = 3000  # the sample objects whose pods and node leases the writers update
PROGRESS_EVERY_S = 15.0
READY_TIMEOUT_S = 60.0
# the journal must take a new revision within this, or it is not following
CATCH_UP_STALL_S = 120.0
STOP_TIMEOUT_S = 90.0  # above [schedule] stop_timeout (60 s): the journal's own bound
RESTORED = "restored"
# what the restore logs (etcdops.restore.point): where each step begins, and the replay's figures
_STAGING_BEGINS = "etcdutl snapshot restore into a scratch data dir"
_MEMBER_BEGINS = "restoring member "
_REPLAYED = re.compile(r"replayed ([\d,]+) revisions \(([\d,]+) changes, ([\d,.]+)/s\)")


class Load:
    """--revisions single-key revisions from a few threads, each a session of its own, as fast as
    etcd takes them; the last revision etcd answered."""

    def __init__(self, config: Any, revisions: int, threads: int) -> None:
        self.config = config
        objects = list(kubernetes_objects(TEMPLATE_OBJECTS, seed=1))
        self.pods = [(k, json.loads(v)) for k, v in objects if k.startswith(POD_PREFIX)]
        self.leases = [(k, json.loads(v)) for k, v in objects if k.startswith(NODE_LEASE_PREFIX)]
        share, extra = divmod(revisions, threads)
        self.shares = [share + (n < extra) for n in range(threads)]
        self.done = [0] * threads
        self.last_revision = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, args=(n,), name=f"writer-{n}",
                                          daemon=True) for n in range(threads)]

    @property
    def written(self) -> int:
        return sum(self.done)

    def start(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def running(self) -> bool:
        return any(worker.is_alive() for worker in self._workers)

    def stop(self) -> None:
        """No more writes; the ones in flight finish or fail."""
        self._stop.set()
        for worker in self._workers:
            worker.join(10.0)

    def _work(self, number: int) -> None:
        rng = random.Random(number)
        events: deque[bytes] = deque()
        try:
            with EtcdSession(self.config) as session:
                for step in range(self.shares[number]):
                    if self._stop.is_set():
                        return
                    revision = self._write(session, number, step, rng, events)
                    self.done[number] += 1
                    with self._lock:
                        self.last_revision = max(self.last_revision, revision)
        except EtcdopsError as exc:
            if not self._stop.is_set():
                self.errors.append(f"writer {number}: {exc.message}")

    def _write(self, session: EtcdSession, number: int, step: int, rng: random.Random,
               events: deque[bytes]) -> int:
        """One revision: an Event created, a pod updated, a node Lease renewed, an Event
        deleted, in turn (a pod updated instead while the thread has too few Events)."""
        now = datetime.now(UTC)
        turn = step % 4
        if turn == 3 and len(events) > EVENT_BACKLOG:
            return session.delete_keys([events.popleft()])
        if turn == 0:
            key, value = event(rng, self.pods[rng.randrange(len(self.pods))][1], now)
            events.append(key)
            return session.put_many([(key, value)])
        if turn == 2:
            key, body = self.leases[(step // 4 * len(self.shares) + number) % len(self.leases)]
            lease = node_lease(body["metadata"]["name"], None, now)
            lease["metadata"] = body["metadata"]
            return session.put_many([(key, compact_json(lease))])
        key, body = self.pods[(step * len(self.shares) + number) % len(self.pods)]
        body["status"]["conditions"] = [{"type": "Ready", "status": "True",
                                         "lastProbeTime": micro_time(now)}]
        return session.put_many([(key, compact_json(body))])


@dataclass
class Result:
    """Everything one run measured (JSON: asdict, with the derived figures)."""

    target_bytes: int
    revisions_asked: int
    db_size: int = 0  # etcd's dbSize after the base's snapshot
    base_keys: int = 0
    fill_s: float = 0.0
    backup_id: str = ""
    base_revision: int = 0
    snapshot_bytes: int = 0
    stored_bytes: int = 0
    save_s: float = 0.0
    written: int = 0  # revisions the writers made
    write_s: float = 0.0
    db_size_after: int = 0  # etcd's dbSize with the history written
    last_revision: int = 0
    live_keys: int = 0  # at last_revision
    journal_cpu_s: float = 0.0  # from its start to its exit
    catch_up_s: float = 0.0  # from the last write until the local chain held it
    segments: int = 0
    journal_stop_s: float = 0.0
    restore_wall_s: float = 0.0
    restore_cpu_s: float = 0.0  # the whole tree's: etcdops, etcdutl, the staging etcd
    others_cores: float = 0.0
    load_1m: float = 0.0
    beside: list[str] = field(default_factory=list)
    code: str = ""
    durations: dict[str, float] = field(default_factory=dict)  # the restore's own JSON
    steps: dict[str, float] = field(default_factory=dict)  # from its log lines
    timeline: list[str] = field(default_factory=list)  # its log lines, seconds after the first
    replayed_revisions: int = 0
    replayed_events: int = 0
    peak_rss_mib: float = 0.0  # etcdops' own process
    programs_rss_mib: dict[str, float] = field(default_factory=dict)
    anon_rss_mib: dict[str, float] = field(default_factory=dict)
    tree_rss_mib: float = 0.0
    restored_revision: int = 0
    restored_keys: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def write_rate(self) -> float:
        return self.written / self.write_s if self.write_s else 0.0

    @property
    def replay_rate(self) -> float:
        """Revisions replayed per second (one change each here, so events/s too)."""
        return self.replayed_revisions / self.durations["replay"]

    @property
    def events_rate(self) -> float:
        return self.replayed_events / self.durations["replay"]

    @property
    def hour_s(self) -> float:
        """The restore's time with the hour's revisions: measured, or projected."""
        if self.replayed_revisions >= HOUR_REVISIONS:
            return self.restore_wall_s
        outside = self.restore_wall_s - self.durations["replay"]
        return outside + HOUR_REVISIONS / self.replay_rate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "write_rate": round(self.write_rate, 1),
            "replay_revisions_per_s": round(self.replay_rate, 1),
            "replay_events_per_s": round(self.events_rate, 1),
            "hour_s": round(self.hour_s, 1),
            "hour_projected": self.replayed_revisions < HOUR_REVISIONS,
        }


class ReplayBench:
    """The run, and everything it starts, so that any way out stops all of it."""

    def __init__(self, args: argparse.Namespace, children: Children, workdir: Path,
                 moto: MotoServer | None) -> None:
        self.args, self.children, self.workdir, self.moto = args, children, workdir, moto
        self.journal: subprocess.Popen[bytes] | None = None
        self.load: Load | None = None
        self.restored: LocalEtcd | None = None
        env = shutil.which("env") or "/usr/bin/env"
        # env(1) execs the command, so the trampoline still measures etcdops itself
        self.env = [env] if moto is None else fake_aws_env(env, workdir / "no-aws-config")
        if moto is not None:  # this process reads the chain from the stores too
            os.environ.update(fake_aws_variables(workdir / "no-aws-config"))
        self.source = [] if moto is None else ["--from", "primary"]

    def run(self) -> Result:
        result = Result(self.args.size, self.args.revisions, code=code_fingerprint())
        etcdops = etcdops_binary()
        with filled_etcd(self.workdir, self.args.size, self.args.value_size) as etcd:
            result.base_keys, result.fill_s = etcd.keys, etcd.fill_s
            print(f"  etcd {etcd.endpoint}: {etcd.keys} keys, filled in {etcd.fill_s:.1f} s",
                  flush=True)
            toml = write_config(self.workdir, etcdops, etcd.endpoint, self.children,
                                identity=True)
            if self.moto is not None:
                add_s3_sections(toml, self.moto.url)
            self._base(etcdops, toml, etcd, result)
            self._journal_and_load(etcdops, toml, etcd, result)
            etcd.cluster.stop()
        self._restore(etcdops, toml, result)
        self._check(result)
        return result

    def _base(self, etcdops: str, toml: Path, etcd: FilledEtcd, result: Result) -> None:
        out = self.workdir / "save.json"
        save = self.children.run([*self.env, etcdops, "snapshot", "save", "--config", str(toml),
                                  "-o", "json"], out, self.workdir / "save.err")
        saved = json.loads(out.read_text())
        wanted = {"local"} if self.moto is None else {"local", "primary", "replica"}
        if saved["failed"] or not wanted <= set(saved["stored_in"]):
            raise ChildFailed(f"the base went to {saved['stored_in']} only")
        result.backup_id, result.base_revision = saved["id"], saved["etcd"]["revision"]
        result.snapshot_bytes, result.stored_bytes = saved["snapshot_size"], saved["object_size"]
        result.save_s, result.db_size = save.wall_s, etcd.status().db_size
        print(f"  base {result.backup_id}: revision {result.base_revision}, "
              f"{format_size(result.snapshot_bytes)} -> {format_size(result.stored_bytes)} "
              f"in {', '.join(saved['stored_in'])} (saved in {save.wall_s:.1f} s)", flush=True)

    def _journal_and_load(self, etcdops: str, toml: Path, etcd: FilledEtcd,
                          result: Result) -> None:
        """The journal following while the writers write; it stops once it holds them all."""
        log = self.workdir / "journal.log"
        with log.open("wb") as err:
            journal = self.journal = subprocess.Popen(
                [*self.env, etcdops, "journal", "run", "--config", str(toml), "-o", "json"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=bench_env(), start_new_session=True,
            )
        wait_until(lambda: "from revision" in log.read_text(errors="replace"),
                   READY_TIMEOUT_S, journal, log, "the journal did not start following")
        print(f"  journal pid {journal.pid} following; {self.args.writers} writers, "
              f"{self.args.revisions:,} revisions as fast as etcd takes them (the hour "
              "compressed)", flush=True)
        load = self.load = Load(etcd.config, self.args.revisions, self.args.writers)
        started = last_report = time.monotonic()
        load.start()
        while load.running():
            time.sleep(0.2)  # a timed wait: Ctrl-C is handled meanwhile
            if time.monotonic() - last_report >= PROGRESS_EVERY_S:
                last_report = time.monotonic()
                done = load.written
                print(f"    {done:,} written ({done / (last_report - started):,.0f}/s)",
                      flush=True)
        written_at = time.monotonic()
        result.write_s = written_at - started
        if load.errors:
            raise ChildFailed("; ".join(load.errors[:3]))
        result.written, result.last_revision = load.written, load.last_revision
        print(f"  {result.written:,} revisions written in {result.write_s:.1f} s "
              f"({result.write_rate:,.0f}/s; an hour at 200/s takes 3,600 s), last revision "
              f"{result.last_revision}", flush=True)
        config = load_config(toml, env={})
        store = open_stores(config)["local"]

        def reach() -> tuple[int, int]:
            manifests, damaged = chain_manifests(store, config.cluster, result.backup_id)
            chain = window(result.backup_id, result.base_revision, manifests)
            if damaged or chain.holes:
                raise ChildFailed(f"the local chain has {len(damaged)} damaged manifests and "
                                  f"{len(chain.holes)} holes")
            return chain.last_revision or 0, len(manifests)

        progress = {"revision": 0, "at": time.monotonic()}

        def caught_up() -> bool:
            reached, result.segments = reach()
            if reached > progress["revision"]:
                progress.update(revision=reached, at=time.monotonic())
            elif time.monotonic() - progress["at"] > CATCH_UP_STALL_S:
                raise ChildFailed(f"the journal's chain stayed at revision {reached} for "
                                  f"{CATCH_UP_STALL_S:.0f} s (last written {result.last_revision})")
            return reached >= result.last_revision

        wait_until(caught_up, None, journal, log, "the journal stopped before holding the load")
        result.catch_up_s = time.monotonic() - written_at
        stopping = time.monotonic()
        cpu = process_cpu(journal.pid)
        journal.send_signal(signal.SIGTERM)
        try:
            code = journal.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ChildFailed(f"the journal did not stop within {STOP_TIMEOUT_S:.0f} s") from None
        result.journal_stop_s = time.monotonic() - stopping
        result.journal_cpu_s = cpu  # its CPU up to the stop; the stop's few ms left out
        self.journal = None
        if code != 0:
            raise ChildFailed(f"the journal exited {code}: {tail(log)}")
        result.live_keys = in_thread(
            lambda: count_keys(etcd.config, result.last_revision))
        result.db_size_after = etcd.status().db_size
        print(f"  journal: {result.segments} segments to revision {result.last_revision}, "
              f"{result.catch_up_s:.1f} s after the last write; {result.journal_cpu_s:.1f} s "
              f"of CPU; stopped in {result.journal_stop_s:.1f} s. etcd: "
              f"{format_size(result.db_size_after)}, {result.live_keys} live keys", flush=True)

    def _restore(self, etcdops: str, toml: Path, result: Result) -> None:
        """`etcdops restore latest --revision LAST`, measured, its steps from its log lines."""
        (self.workdir / RESTORED).mkdir()
        restored = LocalEtcd(RESTORED, self.workdir / RESTORED / "data")
        self.restored = restored
        argv = [*self.env, "ETCDOPS_LOG_FORMAT=json", etcdops, "restore", "latest", *self.source,
                "--revision", str(result.last_revision), "--data-dir", str(restored.data_dir),
                "--name", restored.name, "--initial-cluster", restored.initial_cluster,
                "--initial-advertise-peer-urls", restored.peer_url,
                "--config", str(toml), "-o", "json"]
        os.sync()  # the load's writeback is not the restore's to pay
        print(f"  restoring to revision {result.last_revision} ...", flush=True)
        peaks = TreePeaks()
        out, err = self.workdir / "restore.json", self.workdir / "restore.err"
        servers = {} if self.moto is None else {"moto": self.moto.cpu}
        measured = measured_run(self.children, argv, out, err, label="restore", servers=servers,
                                wait_quiet=self.args.wait_quiet, sample=peaks)
        run = measured.run
        doc = json.loads(out.read_text())
        if doc["backup_id"] != result.backup_id:
            raise ChildFailed(f"the restore used backup {doc['backup_id']}, not the base "
                              f"{result.backup_id}")
        result.restore_wall_s, result.restore_cpu_s = run.wall_s, run.cpu_s
        result.others_cores = measured.other_cpu_s / run.wall_s
        result.load_1m, result.beside = measured.load_1m, measured.beside
        if measured.code != result.code:
            result.code += f", restore {measured.code}"
        result.durations, result.warnings = doc["durations"], doc["warnings"]
        result.peak_rss_mib, result.tree_rss_mib = peaks.own_mib, run.max_rss_mib
        result.programs_rss_mib, result.anon_rss_mib = peaks.programs, peaks.anon
        lines = log_lines(err)
        result.steps = steps_of(lines, result.durations, run.wall_s)
        result.timeline = [f"{at - lines[0][0]:8.2f} {text[:160]}" for at, text in lines]
        replayed = next((m for _, text in lines if (m := _REPLAYED.search(text))), None)
        if replayed is None:
            raise ChildFailed(f"the restore did not log its replay (see {err})")
        result.replayed_revisions = int(replayed[1].replace(",", ""))
        result.replayed_events = int(replayed[2].replace(",", ""))

    def _check(self, result: Result) -> None:
        """An etcd on the restored data dir: at the last revision, with the live keys."""
        assert self.restored is not None
        restored = self.restored

        def read() -> tuple[int, int]:
            restored.start(wait=120.0)
            with EtcdSession(restored.etcd_config(command_timeout=120.0)) as session:
                return session.status(restored.client_url).revision, session.count_keys()

        result.restored_revision, result.restored_keys = in_thread(read)
        restored.stop()
        self.restored = None
        if (result.restored_revision, result.restored_keys) != (
                result.last_revision, result.live_keys):
            raise ChildFailed(
                f"the restored etcd is at revision {result.restored_revision} with "
                f"{result.restored_keys} keys; the original was at {result.last_revision} with "
                f"{result.live_keys}")

    def stop(self) -> None:
        """Stop whatever the run left running (on every way out)."""
        if self.load is not None:
            self.load.stop()
            self.load = None
        if self.journal is not None and self.journal.poll() is None:
            self.journal.kill()
            self.journal.wait()
        self.journal = None
        if self.restored is not None:
            self.restored.stop()
            self.restored = None


def count_keys(config: Any, revision: int) -> int:
    with EtcdSession(config) as session:
        return session.count_keys(revision)


def wait_until(condition: Any, timeout: float | None, process: subprocess.Popen[bytes],
               log: Path, failure: str) -> None:
    """Poll condition() until true; ChildFailed (with the log's tail) if the process exits or
    the timeout passes first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or (deadline is not None and time.monotonic() > deadline):
            raise ChildFailed(f"{failure}: {tail(log)}")
        time.sleep(0.5)


def tail(log: Path) -> str:
    return " | ".join(log.read_text(errors="replace").splitlines()[-5:])


def log_lines(err: Path) -> list[tuple[float, str]]:
    """etcdops' JSON log lines: (seconds since the epoch, message)."""
    found = []
    for line in err.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            moment = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
            found.append((moment.timestamp(), str(record["message"])))
    return found


def steps_of(lines: list[tuple[float, str]], durations: dict[str, float],
             wall_s: float) -> dict[str, float]:
    """The restore's wall split into its steps, from its JSON durations and the timestamps of
    the lines that end them: decode (the plan, the base read and checked), staging (etcdutl
    into the staging etcd, its start), replay (its own duration), the staging etcd's snapshot,
    etcdutl (the member), and the rest (start-up, imports, the swap into place, exit)."""
    def first(prefix: str) -> float | None:
        return next((at for at, text in lines if text.startswith(prefix)), None)

    staging, member = first(_STAGING_BEGINS), first(_MEMBER_BEGINS)
    # its last line, not the progress lines ("replayed N revisions up to M") every 10 s
    replayed = next((at for at, text in lines if _REPLAYED.search(text)), None)
    prepare = durations["download_decode"] + durations["replay"]
    steps: dict[str, float] = {}
    if staging is not None and replayed is not None and member is not None:
        started = member - prepare  # the prepare ends as the member's etcdutl begins
        steps["decode"] = staging - started
        steps["staging"] = replayed - durations["replay"] - staging
        steps["replay"] = durations["replay"]
        steps["staging snapshot"] = member - replayed
    else:  # the lines were reworded: the prepare as the restore's JSON has it
        steps["decode, staging and snapshot"] = durations["download_decode"]
        steps["replay"] = durations["replay"]
    steps["etcdutl"] = durations["etcdutl"]
    steps["rest"] = wall_s - prepare - durations["etcdutl"]
    return {name: round(took, 2) for name, took in steps.items()}


def print_result(r: Result) -> None:
    rss = ", ".join(f"{name} {mib:.0f}" for name, mib in r.programs_rss_mib.items())
    anon = ", ".join(f"{name} {mib:.0f}" for name, mib in r.anon_rss_mib.items())
    hour = "projected" if r.replayed_revisions < HOUR_REVISIONS else "measured"
    print(f"\n== base {format_size(r.db_size)} (etcd dbSize {r.db_size} bytes, {r.base_keys} "
          f"keys, revision {r.base_revision}; backup {format_size(r.snapshot_bytes)} -> "
          f"{format_size(r.stored_bytes)})")
    print(f"  journal: {r.written:,} revisions written in {r.write_s:.1f} s "
          f"({r.write_rate:,.0f}/s: the hour compressed), {r.segments} segments; etcd after: "
          f"{format_size(r.db_size_after)}")
    print(f"  restore to revision {r.last_revision}: {r.restore_wall_s:.1f} s wall "
          f"({format_duration(r.restore_wall_s)}), {r.restore_cpu_s:.1f} s CPU (tree), others "
          f"{r.others_cores:.2f} cores, load {r.load_1m:.2f}"
          + ("  [BESIDE ANOTHER BENCHMARK OR TESTS]" if r.beside else ""))
    print("  steps: " + ", ".join(f"{name} {took:.1f} s" for name, took in r.steps.items()))
    print(f"  replay: {r.replayed_revisions:,} revisions, {r.replayed_events:,} events in "
          f"{r.durations['replay']:.1f} s: {r.replay_rate:,.0f} revisions/s, "
          f"{r.events_rate:,.0f} events/s")
    print(f"  peak RSS: etcdops {r.peak_rss_mib:.1f} MiB (its own), programs under it {rss} MiB "
          f"(anonymous: {anon}); tree {r.tree_rss_mib:.0f} MiB")
    print(f"  restored etcd: revision {r.restored_revision}, {r.restored_keys} keys (as the "
          "original at that revision)")
    print(f"  with the hour ({HOUR_REVISIONS:,} revisions): {r.hour_s:.0f} s "
          f"({format_duration(r.hour_s)}), {hour}")
    for warning in r.warnings:
        print(f"  restore warning: {warning}")


def verdict(r: Result) -> tuple[bool, list[str]]:
    ok = r.hour_s <= TARGET_S
    how = ("measured" if r.replayed_revisions >= HOUR_REVISIONS else
           f"projected from {r.replayed_revisions:,} at {r.replay_rate:,.0f}/s")
    return ok, [
        f"restore of a {format_size(r.db_size)} base plus {HOUR_REVISIONS:,} revisions of "
        f"journal: {r.hour_s:.0f} s ({how}) (target <= {TARGET_S:.0f} s): "
        + ("PASS" if ok else "FAIL"),
        f"replay {r.events_rate:,.0f} events/s ({r.replay_rate:,.0f} revisions/s; quoted)",
        f"etcdops restore peak RSS {r.peak_rss_mib:.1f} MiB (quoted)",
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="the base's etcd dbSize (units as in etcdops.toml; default 1GiB)")
    parser.add_argument("--revisions", type=int, default=HOUR_REVISIONS,
                        help=f"journal revisions written (default {HOUR_REVISIONS:,}: an hour "
                        "at 200/s)")
    parser.add_argument("--writers", type=int, default=4,
                        help="threads writing them, each a session of its own (default 4)")
    parser.add_argument("--value-size", type=parse_size, default=DEFAULT_VALUE_SIZE,
                        help="bytes per object in the base (the journal's are their own size)")
    parser.add_argument("--s3", action="store_true",
                        help="the base and journal also in moto's two regions; restore from "
                        "the primary")
    parser.add_argument("--wait-quiet", type=float, default=120.0, metavar="SECONDS",
                        help="before the restore, wait up to this long while another "
                        "benchmark or pytest runs")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary directory goes (a real disk, not tmpfs)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.revisions < args.writers or args.writers < 1 or args.size <= 0:
        parser.error("need a size, a writer and at least one revision per writer")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run it, print the figures and the verdict; exit 0 only if the target is met."""
    args = parse_args(argv)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-replay-bench-", dir=args.workdir))
    moto: MotoServer | None = None
    bench: ReplayBench | None = None

    def body() -> int:
        nonlocal moto, bench
        load_before = announce_machine(workdir)
        commit, code = git_state(), code_fingerprint()
        print(f"  etcdops at {commit} (sources {code})")
        if args.s3:
            moto, _ = moto_with_buckets(workdir)
        bench = ReplayBench(args, children, workdir, moto)
        result = bench.run()
        print_result(result)
        ok, lines = verdict(result)
        if result.code != code:
            lines.append(f"WARNING: etcdops' sources changed during the benchmark ({code} at "
                         f"the start; {result.code})")
        return conclude(ok, lines, load_before, args.json, {
            "etcdops": {"commit": commit, "sources": code, "at_end": git_state()},
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "targets": {"restore_s": TARGET_S, "revisions": HOUR_REVISIONS},
            "result": result.as_dict(),
        })

    def cleanup() -> None:
        children.kill()
        if bench is not None:
            bench.stop()
        if moto is not None:
            moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    return run_bench(body, "stopping etcd, the journal and moto, removing the files", cleanup)


if __name__ == "__main__":
    sys.exit(main())
