"""Where `snapshot save` spends its time, and what changes to it would gain: a prototype.

Run from the repository root with the virtualenv active:

    python bench/_prototype_pipeline.py --size 1GiB --rounds 3

It fills a throwaway etcd as bench/snapshot_save.py does, then:

1. Stage costs, offline: one snapshot is received into memory in the chunks etcd sends, and each
   stage is timed alone on those chunks: sha256 trailer check, zstd (level and threads varied),
   age, the stored-object digest, the file write and fsync, and the whole writer chain.
2. Variants, end to end against etcd and in-process (no interpreter start-up), alternating:
   - `receive`: the gRPC stream drained and dropped: the floor for any Python client;
   - `current`: etcdops.snapshot.save_snapshot as it is (local store only);
   - `+st`, `+coalesce`, `+sync`: the same under the patches of bench/_patched_etcdops.py
     (grpc SingleThreadedUnaryStream; 1 MiB blocks across the hand-off; background fdatasync).
     All three went into etcdops in 8a1e536: from there on `current` has them and the
     patches only say so on stderr (the figures in bench/README.md are from 5ad3d9b).
3. Peak RSS of each variant, each run once in a fresh interpreter (imports included).

Nothing here is used by etcdops: it measures proposed changes to etcdops/etcd/client.py,
etcdops/stream/handoff.py and etcdops/stores/local.py without editing them. The file name
starts with an underscore because it is a prototype, not a benchmark to track.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _patched_etcdops import patched
from snapshot_save import QUOTA_BACKEND_BYTES, Children, fill, process_cpu

from etcdops.config import Config, EncryptionConfig, EtcdConfig, LocalConfig
from etcdops.crypto.age import Identity
from etcdops.etcd.client import EtcdSession
from etcdops.etcd.local import LocalCluster
from etcdops.keys import configured_recipients
from etcdops.report import LogReporter
from etcdops.snapshot import save_snapshot
from etcdops.stores.local import LocalStore
from etcdops.stream.writers import AgeEncrypt, Digest, Discard, SnapshotTrailerCheck, Writer
from etcdops.units import format_size, parse_size

MiB = 1 << 20
Variant = Callable[[], tuple[int, int]]


@dataclass
class Cost:
    """Wall time, this process's CPU time (all threads) and etcd's CPU time of one run."""

    wall_s: float
    cpu_s: float
    etcd_cpu_s: float = 0.0


@contextlib.contextmanager
def measured(etcd_pid: int | None = None) -> Iterator[list[Cost]]:
    """Measure the body; the Cost is appended to the yielded list when the body ends."""
    out: list[Cost] = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    etcd_before = process_cpu(etcd_pid) if etcd_pid else 0.0
    started = time.perf_counter()
    yield out
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    etcd = process_cpu(etcd_pid) - etcd_before if etcd_pid else 0.0
    out.append(Cost(wall, cpu, etcd))


class Counter:
    """A sink that only counts, standing in for a store in offline stage timings."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.size += len(data)
        return len(data)


class Zstd:
    """zstd with an explicit thread count (etcdops' ZstdCompress fixes its own)."""

    def __init__(self, downstream: Writer, level: int, threads: int) -> None:
        import zstandard

        self._flush_frame = zstandard.FLUSH_FRAME
        self._writer = zstandard.ZstdCompressor(level=level, threads=threads).stream_writer(
            downstream, closefd=False
        )

    def write(self, data: bytes, /) -> int:
        return self._writer.write(data)

    def close(self) -> None:
        self._writer.flush(self._flush_frame)


def chain(
    sink: Writer, recipients: Sequence[Any], level: int, threads: int = 0
) -> tuple[SnapshotTrailerCheck, Zstd, AgeEncrypt, Digest]:
    """The writers in save_snapshot's order: trailer check -> zstd -> age -> digest -> sink."""
    stored = Digest(sink)
    encrypt = AgeEncrypt(stored, recipients)
    compress = Zstd(encrypt, level, threads)
    return SnapshotTrailerCheck(compress), compress, encrypt, stored


def coalesce(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Join small chunks into blocks of about `size` bytes (one copy, done in C)."""
    pending: list[bytes] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


def receive_only(config: Config) -> tuple[int, int]:
    """Drain the gRPC stream and drop it: what receiving alone costs in Python."""
    with EtcdSession(config.etcd) as etcd:
        size = sum(len(chunk) for chunk in etcd.snapshot_stream())
    return size, 0


def current_save(config: Config) -> tuple[int, int]:
    """etcdops.snapshot.save_snapshot as it is, then its output removed."""
    result: Any = save_snapshot(config, LogReporter(), local_only=True)
    manifest = getattr(result, "manifest", result)  # older versions returned the manifest
    shutil.rmtree(config.local.dir / config.cluster)
    return manifest.snapshot_size, manifest.object_size


def variants_for(config: Config) -> dict[str, tuple[tuple[str, ...], Variant]]:
    """Each variant: the bench/_patched_etcdops.py patches it runs under, and its call."""
    receive: Variant = lambda: receive_only(config)  # noqa: E731
    current: Variant = lambda: current_save(config)  # noqa: E731
    return {
        "receive": ((), receive),
        "receive+st": (("st",), receive),
        "current": ((), current),
        "current+st": (("st",), current),
        "current+coalesce": (("coalesce",), current),
        "current+st+coalesce": (("st", "coalesce"), current),
        "current+st+coalesce+sync": (("st", "coalesce", "sync"), current),
    }


def stage_costs(config: Config, scratch: Path) -> None:
    """Receive one snapshot into memory, then time each stage alone on its chunks."""
    with EtcdSession(config.etcd) as etcd:
        chunks = list(etcd.snapshot_stream())
    total = sum(len(c) for c in chunks)
    print(
        f"\nstage costs on one {format_size(total)} snapshot in {len(chunks)} chunks of "
        f"{format_size(len(chunks[0]))} as etcd sends them (offline)"
    )
    recipients = configured_recipients(config.encryption)
    level = config.local.compression_level

    def report(name: str, work: Callable[[], object], size: int = total) -> None:
        with measured() as cost:
            work()
        print(
            f"  {name:46} wall {cost[0].wall_s:6.2f} s  cpu {cost[0].cpu_s:6.2f} s  "
            f"{size / MiB / cost[0].wall_s:6.0f} MiB/s of input"
        )

    def run(writer: Writer, blocks: Iterable[bytes]) -> None:
        for chunk in blocks:
            writer.write(chunk)

    def zstd(sink: Writer, lvl: int, threads: int) -> None:
        compress = Zstd(sink, lvl, threads)
        run(compress, chunks)
        compress.close()

    compressed: list[bytes] = []

    class Keep:
        def write(self, data: bytes, /) -> int:
            compressed.append(bytes(data))
            return len(data)

    report("sha256 trailer check", lambda: run(SnapshotTrailerCheck(Discard()), chunks))
    report(f"zstd level {level}, threads=0 (as ZstdCompress)", lambda: zstd(Keep(), level, 0))
    stored_size = sum(len(c) for c in compressed)
    report(f"zstd level {level}, threads=-1", lambda: zstd(Counter(), level, -1))
    level1 = Counter()
    report("zstd level 1, threads=0", lambda: zstd(level1, 1, 0))
    age = AgeEncrypt(Counter(), recipients)
    report("age encrypt (input: the zstd output)", lambda: (run(age, compressed), age.close()),
           stored_size)
    report("sha256 digest of the stored object", lambda: run(Digest(Discard()), compressed),
           stored_size)

    writer = LocalStore(scratch).open_writer("stage/object")
    report("write the stored object (page cache)", lambda: run(writer, compressed), stored_size)
    report("fsync + rename it (AtomicFile.commit)", writer.commit, stored_size)
    shutil.rmtree(scratch / "stage")
    def whole(blocks: Iterable[bytes]) -> None:
        plain, compress, encrypt, _ = chain(Counter(), recipients, level)
        run(plain, blocks)
        compress.close()
        encrypt.close()

    report("whole chain, no file, 32 KiB writes", lambda: whole(chunks))
    joined = list(coalesce(chunks, MiB))
    report("whole chain, no file, 1 MiB writes", lambda: whole(joined))
    print(f"  compression at level {level}: {format_size(total)} -> {format_size(stored_size)}"
          f" = {total / stored_size:.2f}x; at level 1: {format_size(level1.size)}"
          f" = {total / level1.size:.2f}x")


def run_one(name: str, endpoint: str, store: Path) -> int:
    """Child mode: one variant against a running etcd, so that its peak RSS is its own."""
    config = Config(
        cluster="proto",
        etcd=EtcdConfig(endpoints=(endpoint,), command_timeout=60.0),
        encryption=EncryptionConfig(recipients=(str(Identity.generate().recipient()),)),
        local=LocalConfig(dir=store),
    )
    patches, variant = variants_for(config)[name]
    with patched(patches):
        variant()
    return 0


def peak_rss(name: str, endpoint: str, store: Path, scratch: Path) -> float:
    """Peak RSS in MiB of one variant run in a fresh interpreter (imports included).

    Through snapshot_save's trampoline: a child of this process would report this process's
    RSS (gigabytes, after the stage costs) as its own.
    """
    argv = [sys.executable, __file__, "--one", name, "--endpoint", endpoint, "--store", str(store)]
    return Children().run(argv, scratch / "one.out", scratch / "one.err").max_rss_mib


def main(argv: Sequence[str] | None = None) -> int:
    """Fill etcd, print stage costs, time the variants alternately, then their peak RSS."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--value-size", type=parse_size, default=100 * 1024)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--skip-stages", action="store_true", help="only the end-to-end variants")
    parser.add_argument("--variants", help="comma-separated subset of the variants")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode, see run_one
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return run_one(args.one, args.endpoint, args.store)
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-proto-", dir=args.workdir))
    try:
        with LocalCluster.single(
            workdir / "etcd", quota_backend_bytes=QUOTA_BACKEND_BYTES, unsafe_no_fsync=True
        ) as cluster:
            member = cluster.members[0]
            assert member.process is not None
            etcd_config = cluster.etcd_config(command_timeout=60.0)
            keys, seconds = fill(etcd_config, member.client_url, args.size, args.value_size)
            print(f"etcd filled with {keys} keys in {seconds:.1f} s; load average "
                  "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            config = Config(
                cluster="proto",
                etcd=etcd_config,
                encryption=EncryptionConfig(recipients=(str(Identity.generate().recipient()),)),
                local=LocalConfig(dir=workdir / "store"),
            )
            if not args.skip_stages:
                stage_costs(config, workdir)
            variants = variants_for(config)
            if args.variants:
                variants = {n: variants[n] for n in args.variants.split(",")}
            costs: dict[str, list[Cost]] = {name: [] for name in variants}
            print("\nend to end, in-process, alternating (round 0 warms up)")
            for number in range(args.rounds + 1):
                for name, (patches, variant) in variants.items():
                    with patched(patches), measured(member.process.pid) as cost:
                        snapshot, stored = variant()
                    if number:
                        costs[name] += cost
                    print(
                        f"  {number} {name:26} wall {cost[0].wall_s:6.2f} s  "
                        f"cpu {cost[0].cpu_s:6.2f} s  etcd cpu {cost[0].etcd_cpu_s:5.2f} s  "
                        f"{format_size(snapshot)} -> {format_size(stored)}",
                        flush=True,
                    )
            print("\nmedians, and peak RSS of one run in a fresh interpreter")
            for name, runs in costs.items():
                rss = peak_rss(name, member.client_url, workdir / "store", workdir)
                print(
                    f"  {name:26} wall {statistics.median(c.wall_s for c in runs):6.2f} s  "
                    f"cpu {statistics.median(c.cpu_s for c in runs):6.2f} s  "
                    f"etcd cpu {statistics.median(c.etcd_cpu_s for c in runs):5.2f} s  "
                    f"peak RSS {rss:6.1f} MiB",
                    flush=True,
                )
            print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
