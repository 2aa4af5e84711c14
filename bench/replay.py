"""Benchmark a point-in-time restore's replay: a ~1 GiB base backup plus --revisions revisions of
journal (default 720,000: one hour at 200 writes/s), restored with `etcdops restore --revision`,
against the seed's 5-minute restore target.

Run from the repository root with the virtualenv active:

    python bench/replay.py                                    # 1 GiB, 720,000 revisions (~20 min)
    python bench/replay.py --size 64MiB --revisions 20000 --max-chain-revisions 8000  # ~2 min
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
4. A wait until the journal's newest chain in the store the restore reads (local; the primary
   with --s3) reaches the last revision written (every chain's segment manifests read back,
   journal.chain.window: no hole), then SIGTERM to the journal, which must exit 0. Past
   [journal] max_chain_revisions (300,000) the journal takes a full backup itself and starts a
   new chain at it ('long'), so the hour comes as several chains, each with its base.
5. The targets: the last revision written (the end of the hour), and the deepest point (the
   end of the chain that replays the most, short of the next base), when that is another.
   Their live keys are counted, and etcd is stopped: a restore needs none, and it would only
   compete for the two cores.
6. For each target, `etcdops restore latest --revision N` into an absent data dir, measured as
   restore.py measures (common.measured_run: wall, CPU of the whole tree, the rest of the
   machine's CPU; restore.TreePeaks: etcdops' own VmHWM and each program's under it, the
   staging etcd's included). Its stderr is asked for in JSON lines (ETCDOPS_LOG_FORMAT=json),
   so each step is timed from its log lines' timestamps: decode (the plan, the base read and
   checked), staging (etcdutl into the staging etcd, its start), replay, the staging etcd's
   snapshot, the revision bump (a second staging etcd advancing the point past the journal's
   newest revision, when etcdutl lacks --bump-revision), etcdutl (the member). The replay's
   revisions, changes and rate are the ones it logs. It must have used the newest base at or
   below N, and an etcd booted on the restored data dir must be at N with the original's live
   keys.

The verdict holds the hour against 300 s: when the run wrote it, both restores as measured;
with fewer revisions, the deepest point the chain bound allows in an hour (min(720,000,
max_chain_revisions) revisions), projected from the restore that replayed the most: its time
outside the replay plus those revisions at its replay rate (the staging snapshot and the
member's etcdutl grow with the history, so that is a little low). What the hour would take as
one chain (720,000 at that rate, as before the bound) is printed for the record. Exit code 0
only when the target is met, 1 when it is missed or a check failed; Ctrl-C or SIGTERM stops
everything and removes the files (130). --max-chain-revisions sets the journal's bound (a
quick check of several chains).
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
from collections.abc import Callable, Sequence
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
    run_arguments,
    run_bench,
    sources_changed,
    write_config,
)
from machine import code_fingerprint, git_state, process_cpu
from moto_s3 import MotoServer, add_s3_sections, fake_aws_env, fake_aws_variables, moto_with_buckets
from restore import TreePeaks

from etcdops.backup.catalog import Catalog
from etcdops.config import EtcdConfig
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
from etcdops.stores.base import Store
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

    def __init__(self, config: EtcdConfig, revisions: int, threads: int) -> None:
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
        """Revisions written so far, every writer's."""
        return sum(self.done)

    def start(self) -> Load:
        """Begin writing now."""
        for worker in self._workers:
            worker.start()
        return self

    def running(self) -> bool:
        """Whether a writer is still writing (each ends at its share or its first error)."""
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
        except Exception as exc:  # a bug here must fail the run, not shorten the load
            self.errors.append(f"writer {number}: {exc!r}")

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
        # the writers share the bodies: a put may carry another writer's time, which is harmless
        key, body = self.pods[(step * len(self.shares) + number) % len(self.pods)]
        body["status"]["conditions"] = [{"type": "Ready", "status": "True",
                                         "lastProbeTime": micro_time(now)}]
        return session.put_many([(key, compact_json(body))])


@dataclass(frozen=True)
class Chain:
    """One base backup's chain in a store: how far it reaches."""

    backup_id: str
    base_revision: int
    last_revision: int  # the base's own while the chain has no segment yet
    segments: int

    def __str__(self) -> str:
        return (f"base {self.backup_id} at revision {self.base_revision}: {self.segments} "
                f"segment(s) to {self.last_revision} "
                f"({self.last_revision - self.base_revision:,} revisions)")


def chains_in(store: Store, cluster: str) -> list[Chain]:
    """Every verified backup's chain in a store, oldest base first; ChildFailed at a damaged
    segment manifest or a hole."""
    bases = sorted((e.manifest for e in Catalog(store, cluster).entries()
                    if e.verified and e.manifest is not None), key=lambda m: m.etcd.revision)
    found = []
    for base in bases:
        manifests, damaged = chain_manifests(store, cluster, base.id)
        chain = window(base.id, base.etcd.revision, manifests)
        if damaged or chain.holes:
            raise ChildFailed(f"the chain of {base.id} has {len(damaged)} damaged manifests "
                              f"and {len(chain.holes)} holes")
        found.append(Chain(base.id, base.etcd.revision,
                           chain.last_revision or base.etcd.revision, len(manifests)))
    return found


def deepest_point(chains: Sequence[Chain]) -> tuple[int, int]:
    """The revision in the chains' reach whose restore replays the most, and how many: the
    end of a chain, short of the next base's revision (a restore to that uses the next base)."""
    points = []
    for chain, following in zip(chains, [*chains[1:], None], strict=True):
        end = chain.last_revision if following is None else min(
            chain.last_revision, following.base_revision - 1)
        points.append((end - chain.base_revision, end))
    replayed, end = max(points)
    return end, replayed


@dataclass
class Restore:
    """One `etcdops restore latest --revision N`, measured, and the etcd booted on it."""

    revision: int  # the target
    expected_keys: int  # live keys on the original at the target
    base: str = ""  # the backup it replayed from
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the whole tree's: etcdops, etcdutl, the staging etcd
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
    after_restore: int = 0  # what the restore said the revision is after it
    restored_keys: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def replay_rate(self) -> float:
        """Revisions replayed per second (one change each here, so events/s too)."""
        return self.replayed_revisions / self.durations["replay"]

    @property
    def events_rate(self) -> float:
        """Changes replayed per second, the figure issue 13 asks to quote."""
        return self.replayed_events / self.durations["replay"]

    def projected_s(self, revisions: int) -> float:
        """This restore with `revisions` replayed at its replay's rate instead."""
        return self.wall_s - self.durations["replay"] + revisions / self.replay_rate

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, with the rates."""
        return asdict(self) | {"replay_revisions_per_s": round(self.replay_rate, 1),
                               "replay_events_per_s": round(self.events_rate, 1)}


@dataclass
class Result:
    """Everything one run measured (JSON: as_dict, with the derived figures)."""

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
    journal_cpu_s: float = 0.0  # from its start to its stop
    catch_up_s: float = 0.0  # from the last write until the restore's store held it
    journal_stop_s: float = 0.0
    # every chain in the restore's store, oldest base first: the first extends the bench's own
    # backup, the others the journal's ('long': [journal] max_chain_revisions reached)
    chains: list[Chain] = field(default_factory=list)
    max_chain_revisions: int = 0  # the [journal] setting the journal ran with
    # to the last revision written; then, when the journal cut chains, to the end of the
    # longest one: the point that replays the most
    restores: list[Restore] = field(default_factory=list)
    code: str = ""

    @property
    def write_rate(self) -> float:
        """How compressed the hour was: revisions written per second."""
        return self.written / self.write_s if self.write_s else 0.0

    @property
    def hour_written(self) -> bool:
        return self.written >= HOUR_REVISIONS

    @property
    def worst_replay(self) -> int:
        """The most revisions a restore to a point in the hour replays: the run's deepest
        point when it wrote the hour, else what the chain bound allows of it (a chain runs on
        past the bound while its backup is taken: at 200/s, 200 revisions a second it takes)."""
        if self.hour_written:
            return deepest_point(self.chains)[1]
        return min(HOUR_REVISIONS, self.max_chain_revisions)

    @property
    def slowest(self) -> Restore:
        """The measured restore that replayed the most: the projections start from it."""
        return max(self.restores, key=lambda r: r.replayed_revisions)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, with the derived figures beside the measured ones."""
        return asdict(self) | {
            "restores": [r.as_dict() for r in self.restores],
            "write_rate": round(self.write_rate, 1),
            "worst_replay_revisions": self.worst_replay,
            "worst_point_s": round(self.slowest.projected_s(self.worst_replay), 1),
            "one_chain_hour_s": round(self.slowest.projected_s(HOUR_REVISIONS), 1),
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
        # the store the restore reads, and whose chain the run waits for
        self.store = "local" if moto is None else "primary"

    def run(self) -> Result:
        """The base, the journal under the load, the restore, the check."""
        result = Result(self.args.size, self.args.revisions, code=code_fingerprint())
        etcdops = etcdops_binary()
        with filled_etcd(self.workdir, self.args.size, self.args.value_size) as etcd:
            result.base_keys, result.fill_s = etcd.keys, etcd.fill_s
            print(f"  etcd {etcd.endpoint}: {etcd.keys} keys, filled in {etcd.fill_s:.1f} s",
                  flush=True)
            toml = write_config(self.workdir, etcdops, etcd.endpoint, self.children,
                                identity=True)
            if self.args.max_chain_revisions is not None:
                with toml.open("a") as out:
                    out.write(f"\n[journal]\nmax_chain_revisions = "
                              f"{self.args.max_chain_revisions}\n")
            if self.moto is not None:
                add_s3_sections(toml, self.moto.url)
            self._base(etcdops, toml, etcd, result)
            self._journal_and_load(etcdops, toml, etcd, result)
            deepest, _ = deepest_point(result.chains)
            targets = [result.last_revision] + (
                [deepest] if deepest != result.last_revision else [])
            restores = [Restore(target, in_thread(lambda t=target: count_keys(etcd.config, t)))
                        for target in targets]
            result.db_size_after = etcd.status().db_size
            etcd.cluster.stop()
        for number, restore in enumerate(restores):
            self._restore(etcdops, toml, result, restore, number)
            result.restores.append(restore)
        return result

    def _base(self, etcdops: str, toml: Path, etcd: FilledEtcd, result: Result) -> None:
        """`etcdops snapshot save`: the backup the journal's chain follows."""
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
        if load.errors or load.written != self.args.revisions:
            raise ChildFailed(f"{load.written:,} of {self.args.revisions:,} revisions written: "
                              + "; ".join(load.errors[:3]))
        result.written, result.last_revision = load.written, load.last_revision
        print(f"  {result.written:,} revisions written in {result.write_s:.1f} s "
              f"({result.write_rate:,.0f}/s; an hour at 200/s takes 3,600 s), last revision "
              f"{result.last_revision}", flush=True)
        config = load_config(toml, env={})
        result.max_chain_revisions = config.journal.max_chain_revisions
        store = open_stores(config)[self.store]
        progress = {"revision": 0, "at": time.monotonic()}

        def caught_up() -> bool:
            result.chains = chains_in(store, config.cluster)
            reached = result.chains[-1].last_revision
            if reached > progress["revision"]:
                progress.update(revision=reached, at=time.monotonic())
            elif time.monotonic() - progress["at"] > CATCH_UP_STALL_S:
                raise ChildFailed(f"the journal's newest chain stayed at revision {reached} for "
                                  f"{CATCH_UP_STALL_S:.0f} s (last written "
                                  f"{result.last_revision}): {tail(log)}")
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
        print(f"  journal: {len(result.chains)} chain(s) to revision {result.last_revision}, "
              f"{result.catch_up_s:.1f} s after the last write; {result.journal_cpu_s:.1f} s "
              f"of CPU; stopped in {result.journal_stop_s:.1f} s", flush=True)
        for chain in result.chains:
            print(f"    {chain}", flush=True)

    def _restore(self, etcdops: str, toml: Path, result: Result, restore: Restore,
                 number: int) -> None:
        """`etcdops restore latest --revision N` into an absent data dir, measured, its steps
        from its log lines; then an etcd on it, which must be at N with the original's keys."""
        work = self.workdir / f"{RESTORED}-{number}"
        work.mkdir()
        restored = self.restored = LocalEtcd(RESTORED, work / "data")
        argv = [*self.env, "ETCDOPS_LOG_FORMAT=json", etcdops, "restore", "latest",
                "--from", self.store, "--revision", str(restore.revision),
                "--data-dir", str(restored.data_dir), "--name", restored.name,
                "--initial-cluster", restored.initial_cluster,
                "--initial-advertise-peer-urls", restored.peer_url,
                "--config", str(toml), "-o", "json"]
        os.sync()  # the last writes' writeback is not the restore's to pay
        print(f"  restoring to revision {restore.revision} ...", flush=True)
        peaks = TreePeaks()
        out, err = work / "restore.json", work / "restore.err"
        servers = {} if self.moto is None else {"moto": self.moto.cpu}
        measured = measured_run(self.children, argv, out, err, label="restore", servers=servers,
                                wait_quiet=self.args.wait_quiet, sample=peaks)
        run = measured.run
        doc = json.loads(out.read_text())
        # the newest base at or below the target: the chain that holds it
        base = next(c for c in reversed(result.chains) if c.base_revision <= restore.revision)
        if doc["backup_id"] != base.backup_id:
            raise ChildFailed(f"the restore to {restore.revision} used backup "
                              f"{doc['backup_id']}, not {base.backup_id}")
        restore.base, restore.code = base.backup_id, measured.code
        restore.wall_s, restore.cpu_s = run.wall_s, run.cpu_s
        restore.others_cores = measured.other_cpu_s / run.wall_s
        restore.load_1m, restore.beside = measured.load_1m, measured.beside
        restore.durations, restore.warnings = doc["durations"], doc["warnings"]
        # the point, or past the journal's newest revision when the revision bump was made
        restore.after_restore = doc["revision"]["after_restore"]
        restore.peak_rss_mib, restore.tree_rss_mib = peaks.own_mib, run.max_rss_mib
        restore.programs_rss_mib, restore.anon_rss_mib = peaks.programs, peaks.anon
        lines = log_lines(err)
        restore.steps = steps_of(lines, restore.durations, run.wall_s)
        restore.timeline = [f"{at - lines[0][0]:8.2f} {text[:160]}" for at, text in lines]
        replayed = next((m for _, text in lines if (m := _REPLAYED.search(text))), None)
        if replayed is None:
            raise ChildFailed(f"the restore did not log its replay (see {err})")
        restore.replayed_revisions = int(replayed[1].replace(",", ""))
        restore.replayed_events = int(replayed[2].replace(",", ""))

        def read() -> tuple[int, int]:
            restored.start(wait=120.0)
            with EtcdSession(restored.etcd_config(command_timeout=120.0)) as session:
                return session.status(restored.client_url).revision, session.count_keys()

        restore.restored_revision, restore.restored_keys = in_thread(read)
        restored.stop()
        self.restored = None
        shutil.rmtree(work)
        if (restore.restored_revision, restore.restored_keys) != (
                restore.after_restore, restore.expected_keys):
            raise ChildFailed(
                f"the restored etcd is at revision {restore.restored_revision} with "
                f"{restore.restored_keys} keys; the original was at {restore.revision} with "
                f"{restore.expected_keys}, and the restore said {restore.after_restore}")
        print_restore(restore)

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


def count_keys(config: EtcdConfig, revision: int) -> int:
    """The live keys at a revision, on a session of its own."""
    with EtcdSession(config) as session:
        return session.count_keys(revision)


def wait_until(condition: Callable[[], bool], timeout: float | None,
               process: subprocess.Popen[bytes], log: Path, failure: str) -> None:
    """Poll condition() until true; ChildFailed (with the log's tail) if the process exits or
    the timeout passes first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or (deadline is not None and time.monotonic() > deadline):
            raise ChildFailed(f"{failure}: {tail(log)}")
        time.sleep(0.5)


def tail(log: Path) -> str:
    """A log's last lines, for a failure's message."""
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
    the revision bump (a second staging etcd, its own duration, when one was tried), etcdutl
    (the member), and the rest (start-up, imports, the swap into place, exit)."""
    def first(prefix: str) -> float | None:
        return next((at for at, text in lines if text.startswith(prefix)), None)

    staging, member = first(_STAGING_BEGINS), first(_MEMBER_BEGINS)
    # its last line, not the progress lines ("replayed N revisions up to M") every 10 s
    replayed = next((at for at, text in lines if _REPLAYED.search(text)), None)
    bump = durations.get("staging", 0.0)
    prepare = durations["download_decode"] + durations["replay"] + bump
    steps: dict[str, float] = {}
    if staging is not None and replayed is not None and member is not None:
        started = member - prepare  # the prepare ends as the member's etcdutl begins
        steps["decode"] = staging - started
        steps["staging"] = replayed - durations["replay"] - staging
        steps["replay"] = durations["replay"]
        steps["staging snapshot"] = member - replayed - bump
    else:  # the lines were reworded: the prepare as the restore's JSON has it
        steps["decode, staging and snapshot"] = durations["download_decode"]
        steps["replay"] = durations["replay"]
    if bump:
        steps["revision bump"] = bump
    steps["etcdutl"] = durations["etcdutl"]
    steps["rest"] = wall_s - prepare - durations["etcdutl"]
    return {name: round(took, 2) for name, took in steps.items()}


def print_restore(r: Restore) -> None:
    """One restore's figures, as it finishes."""
    rss = ", ".join(f"{name} {mib:.0f}" for name, mib in r.programs_rss_mib.items())
    anon = ", ".join(f"{name} {mib:.0f}" for name, mib in r.anon_rss_mib.items())
    print(f"  restore to revision {r.revision} (base {r.base}): {r.wall_s:.1f} s wall "
          f"({format_duration(r.wall_s)}), {r.cpu_s:.1f} s CPU (tree), others "
          f"{r.others_cores:.2f} cores, load {r.load_1m:.2f}"
          + ("  [BESIDE ANOTHER BENCHMARK OR TESTS]" if r.beside else ""))
    print("    steps: " + ", ".join(f"{name} {took:.1f} s" for name, took in r.steps.items()))
    print(f"    replay: {r.replayed_revisions:,} revisions, {r.replayed_events:,} events in "
          f"{r.durations['replay']:.1f} s: {r.replay_rate:,.0f} revisions/s, "
          f"{r.events_rate:,.0f} events/s")
    print(f"    peak RSS: etcdops {r.peak_rss_mib:.1f} MiB (its own), programs under it {rss} "
          f"MiB (anonymous: {anon}); tree {r.tree_rss_mib:.0f} MiB")
    bumped = r.restored_revision - r.revision
    print(f"    restored etcd: revision {r.restored_revision}"
          + (f" (the point advanced by {bumped:,})" if bumped else "")
          + f", {r.restored_keys} keys (as the original at the point)", flush=True)


def print_result(r: Result) -> None:
    """The summary bench/README.md quotes."""
    print(f"\n== base {format_size(r.db_size)} (etcd dbSize {r.db_size} bytes, {r.base_keys} "
          f"keys, revision {r.base_revision}; backup {format_size(r.snapshot_bytes)} -> "
          f"{format_size(r.stored_bytes)})")
    print(f"  journal: {r.written:,} revisions written in {r.write_s:.1f} s "
          f"({r.write_rate:,.0f}/s: the hour compressed); etcd after: "
          f"{format_size(r.db_size_after)}; {len(r.chains)} chain(s) "
          f"([journal] max_chain_revisions {r.max_chain_revisions:,}):")
    for chain in r.chains:
        print(f"    {chain}")
    for restore in r.restores:
        print_restore(restore)
    for warning in sorted({w for restore in r.restores for w in restore.warnings}):
        print(f"  restore warning: {warning}")


def verdict(r: Result) -> tuple[bool, list[str]]:
    """The hour's restores against 300 s: measured (its end, and its deepest point) when the
    run wrote the hour, else the deepest point the chain bound allows, projected from the
    restore that replayed the most; and what is quoted."""
    def met(seconds: float) -> str:
        return "PASS" if seconds <= TARGET_S else "FAIL"

    ok, lines = True, []
    slowest = r.slowest
    if r.hour_written:
        for restore in r.restores:
            ok &= restore.wall_s <= TARGET_S
            lines.append(f"restore to revision {restore.revision} (base {restore.base}, "
                         f"{restore.replayed_revisions:,} revisions replayed): "
                         f"{restore.wall_s:.0f} s, measured (target <= {TARGET_S:.0f} s): "
                         + met(restore.wall_s))
    else:
        worst = slowest.projected_s(r.worst_replay)
        ok = worst <= TARGET_S
        lines.append(f"the deepest point in the hour ({r.worst_replay:,} revisions: the chain "
                     f"bound): {worst:.0f} s, projected at {slowest.replay_rate:,.0f}/s "
                     f"(target <= {TARGET_S:.0f} s): " + met(worst))
    lines += [
        f"the hour in one chain ({HOUR_REVISIONS:,} revisions, as before max_chain_revisions): "
        f"{slowest.projected_s(HOUR_REVISIONS):.0f} s, projected at "
        f"{slowest.replay_rate:,.0f}/s (for the record)",
        "replay " + ", ".join(f"{x.events_rate:,.0f}" for x in r.restores)
        + " events/s (quoted)",
        f"etcdops restore peak RSS {max(x.peak_rss_mib for x in r.restores):.1f} MiB (quoted)",
    ]
    return ok, lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """This benchmark's options; a bad combination exits 2."""
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
    parser.add_argument("--max-chain-revisions", type=int, default=None, metavar="N",
                        help="the journal's [journal] max_chain_revisions (default: its own)")
    parser.add_argument("--s3", action="store_true",
                        help="the base and journal also in moto's two regions; restore from "
                        "the primary")
    args = run_arguments(parser, wait_quiet=120.0, before="the restore").parse_args(argv)
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
        lines += sources_changed([result.code, *(x.code for x in result.restores)], code)
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
