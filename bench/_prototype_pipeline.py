"""Where `snapshot save` spends its time, and what a pipelined save would gain: a prototype.

Run from the repository root with the virtualenv active:

    python bench/_prototype_pipeline.py --size 1GiB --rounds 3

It fills a throwaway etcd like bench/snapshot_save.py does, then:

1. Stage costs, offline: the snapshot is received once into memory in the chunks etcd sends, and
   each writer of etcdops.stream.writers is timed alone on those same chunks (sha256 trailer
   check, zstd as configured and alternatives, age, the stored-object digest, the file write).
2. Variants, end to end against etcd and in-process (no interpreter start-up), alternating:
   - `receive`: the gRPC stream drained and dropped: the floor for any Python client;
   - `current`: etcdops.snapshot.save_snapshot itself, unchanged;
   - `pipelined`: the same writers, but the gRPC receive runs on its own thread and hands
     coalesced 1 MiB blocks over a bounded queue to the thread that checks, compresses,
     encrypts and writes, so receiving overlaps the rest instead of alternating with it;
   - `-st`: the same with grpc's SingleThreadedUnaryStream channel option (no polling thread
     and no per-message thread hand-off);
   - `-t0`: zstd in the writer thread (threads=0) instead of zstd's own worker pool, which
     costs more CPU in all and, on 2 cores, competes with etcd and the receiver.

Nothing here is used by etcdops: it measures a proposed change to etcdops/snapshot.py without
editing it. The file name starts with an underscore because it is a prototype, not a benchmark
anyone should track.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapshot_save import QUOTA_BACKEND_BYTES, fill, process_cpu

from etcdops.config import Config, EncryptionConfig, LocalConfig
from etcdops.crypto.age import Identity
from etcdops.etcd.client import EtcdSession
from etcdops.etcd.local import LocalCluster
from etcdops.keys import configured_recipients
from etcdops.report import LogReporter
from etcdops.snapshot import save_snapshot
from etcdops.stores.local import LocalStore
from etcdops.stream.writers import (
    AgeEncrypt,
    Digest,
    Discard,
    SnapshotTrailerCheck,
    Writer,
    ZstdCompress,
)
from etcdops.units import format_size, parse_size

MiB = 1 << 20
# what the receiver hands the writer thread: etcd sends 32 KiB messages, and every writer call
# costs the same Python overhead whatever its size, so fewer, larger blocks are cheaper
COALESCE_BYTES = 1 * MiB
# bounded: at most this many blocks wait, so memory stays flat if the disk is slower than etcd
QUEUE_BLOCKS = 8


@dataclass
class Cost:
    """Wall time and this process's CPU time (every thread) of one measured piece of work."""

    wall_s: float
    cpu_s: float
    etcd_cpu_s: float = 0.0


@contextlib.contextmanager
def measured(etcd_pid: int | None = None) -> Iterator[list[Cost]]:
    """Measure the body: wall, this process's CPU (all threads) and etcd's CPU."""
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


class NullStore:
    """A sink that only counts, standing in for the store in offline stage timings."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.size += len(data)
        return len(data)


def chain(sink: Writer, recipients: Sequence[Any], level: int, threads: int) -> tuple[
    SnapshotTrailerCheck, ZstdCompress, AgeEncrypt, Digest
]:
    """The writers in save_snapshot's order; zstd threads chosen by the caller."""
    stored = Digest(sink)
    encrypt = AgeEncrypt(stored, recipients)
    compress = ZstdCompress(encrypt, level)
    if threads != -1:  # ZstdCompress always asks for threads=-1; swap in another compressor
        import zstandard

        compress._writer = zstandard.ZstdCompressor(level=level, threads=threads).stream_writer(
            encrypt, closefd=False
        )
    return SnapshotTrailerCheck(compress), compress, encrypt, stored


def coalesce(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Join small chunks into blocks of about `size` bytes (one copy, in C)."""
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


@contextlib.contextmanager
def single_threaded_streams(enabled: bool = True) -> Iterator[None]:
    """Channels opened inside get grpc's SingleThreadedUnaryStream option.

    By default a grpc streaming call is served by a polling thread that hands each message to
    the consumer through a condition variable: two thread switches and a GIL hand-off per
    message, and etcd sends a snapshot in 32 KiB messages (32,768 per GiB). With this option
    the consuming thread polls grpc itself. etcdops would pass it in EtcdSession._connect; here
    grpc.insecure_channel is wrapped so the prototype needs no edit outside bench/.
    """
    import grpc

    original = grpc.insecure_channel
    option = (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)

    def insecure_channel(target: str, options: Sequence[Any] = (), **kwargs: Any) -> Any:
        return original(target, options=[*options, option], **kwargs)

    if enabled:
        grpc.insecure_channel = insecure_channel
    try:
        yield
    finally:
        grpc.insecure_channel = original


def pipelined_save(config: Config, threads: int) -> tuple[int, int]:
    """save_snapshot's streaming part with receive and processing on two threads.

    Returns (snapshot bytes, stored bytes). The manifest, lock and key count are left out:
    they cost milliseconds and do not change with the pipeline.
    """
    recipients = configured_recipients(config.encryption)
    store = LocalStore(config.local.dir)
    # None marks the end of the stream; an exception is the receiver's failure, raised here
    blocks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUE_BLOCKS)
    stop = threading.Event()

    def offer(item: bytes | BaseException | None) -> bool:
        """Queue an item unless the writer side gave up (then nobody would take it)."""
        while not stop.is_set():
            try:
                blocks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    with EtcdSession(config.etcd) as etcd:
        stream = etcd.snapshot_stream()

        def receive() -> None:
            try:
                for block in coalesce(stream, COALESCE_BYTES):
                    if not offer(block):
                        return
                offer(None)
            except BaseException as exc:
                offer(exc)

        receiver = threading.Thread(target=receive, name="snapshot-receive", daemon=True)
        writer = store.open_writer("bench/pipelined.db.zst.age")
        try:
            plain, compress, encrypt, stored = chain(
                writer, recipients, config.local.compression_level, threads
            )
            receiver.start()
            while (block := blocks.get()) is not None:
                if isinstance(block, BaseException):
                    raise block
                plain.write(block)
            plain.verify("snapshot")
            compress.close()
            encrypt.close()
            writer.commit()
        except BaseException:
            stop.set()
            stream.close()
            writer.abort()
            raise
        finally:
            receiver.join()
    shutil.rmtree(config.local.dir / "bench")
    return plain.size, stored.size


def receive_only(config: Config) -> tuple[int, int]:
    """Drain the gRPC stream and drop it: what receiving alone costs in Python."""
    with EtcdSession(config.etcd) as etcd:
        size = sum(len(chunk) for chunk in etcd.snapshot_stream())
    return size, 0


def current_save(config: Config) -> tuple[int, int]:
    """etcdops.snapshot.save_snapshot, unchanged, then its output removed."""
    manifest = save_snapshot(config, LogReporter())
    shutil.rmtree(config.local.dir / config.cluster)
    return manifest.snapshot_size, manifest.object_size


def stage_costs(config: Config, scratch: Path) -> None:
    """Receive one snapshot into memory, then time each writer alone on its chunks."""
    with EtcdSession(config.etcd) as etcd:
        chunks = list(etcd.snapshot_stream())
    total = sum(len(c) for c in chunks)
    print(
        f"\nstage costs on one {format_size(total)} snapshot, {len(chunks)} chunks of "
        f"{format_size(len(chunks[0]))} as etcd sends them (offline, one thread unless said)"
    )
    recipients = configured_recipients(config.encryption)
    level = config.local.compression_level

    def report(name: str, work: Callable[[], object], size: int = total) -> object:
        with measured() as cost:
            result = work()
        print(
            f"  {name:44} wall {cost[0].wall_s:6.2f} s  cpu {cost[0].cpu_s:6.2f} s  "
            f"{size / MiB / cost[0].wall_s:6.0f} MiB/s"
        )
        return result

    def run(writer: Writer, blocks: Iterable[bytes]) -> None:
        for chunk in blocks:
            writer.write(chunk)

    report("loop over chunks, no work", lambda: run(Discard(), chunks))
    report("sha256 trailer check", lambda: run(SnapshotTrailerCheck(Discard()), chunks))
    compressed: list[bytes] = []

    class Keep:
        def write(self, data: bytes, /) -> int:
            compressed.append(bytes(data))
            return len(data)

    def zstd(threads: int, sink: Writer, blocks: Iterable[bytes], lvl: int = level) -> None:
        import zstandard

        writer = zstandard.ZstdCompressor(level=lvl, threads=threads).stream_writer(
            sink, closefd=False
        )
        for chunk in blocks:
            writer.write(chunk)
        writer.flush(zstandard.FLUSH_FRAME)

    report(f"zstd level {level}, threads=-1 (as ZstdCompress)", lambda: zstd(-1, Keep(), chunks))
    stored_size = sum(len(c) for c in compressed)
    report(f"zstd level {level}, threads=0", lambda: zstd(0, NullStore(), chunks))
    report("zstd level 1, threads=-1", lambda: zstd(-1, NullStore(), chunks, 1))
    report("zstd level 1, threads=0", lambda: zstd(0, NullStore(), chunks, 1))
    age = AgeEncrypt(NullStore(), recipients)
    report("age encrypt (of the zstd output)", lambda: (run(age, compressed), age.close()),
           stored_size)
    report("sha256 digest of the stored object", lambda: run(Digest(Discard()), compressed),
           stored_size)
    store = LocalStore(scratch)

    def write_file() -> None:
        writer = store.open_writer("stage/object")
        run(writer, compressed)
        writer.commit()

    report("write + fsync the stored object", write_file, stored_size)
    shutil.rmtree(scratch / "stage")
    plain, compress, encrypt, _ = chain(NullStore(), recipients, level, -1)

    def whole(blocks: Iterable[bytes]) -> None:
        run(plain, blocks)
        compress.close()
        encrypt.close()

    report("whole chain, no file, 32 KiB writes", lambda: whole(chunks))
    plain, compress, encrypt, _ = chain(NullStore(), recipients, level, -1)
    report("whole chain, no file, 1 MiB writes", lambda: whole(coalesce(chunks, MiB)))
    print(f"  compression: {format_size(total)} -> {format_size(stored_size)} "
          f"= {total / stored_size:.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    """Fill etcd, print stage costs, then time the variants alternately."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--value-size", type=parse_size, default=100 * 1024)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--skip-stages", action="store_true", help="only the end-to-end variants")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="etcdops-proto-", dir=args.workdir))
    try:
        with LocalCluster.single(
            workdir / "etcd", quota_backend_bytes=QUOTA_BACKEND_BYTES, unsafe_no_fsync=True
        ) as cluster:
            member = cluster.members[0]
            assert member.process is not None
            etcd_config = cluster.etcd_config(command_timeout=60.0)
            with EtcdSession(etcd_config) as session:
                keys, seconds = fill(session, member.client_url, args.size, args.value_size)
            print(f"etcd filled with {keys} keys in {seconds:.1f} s")
            identity = Identity.generate()
            config = Config(
                cluster="proto",
                etcd=etcd_config,
                encryption=EncryptionConfig(recipients=(str(identity.recipient()),)),
                local=LocalConfig(dir=workdir / "store"),
            )
            if not args.skip_stages:
                stage_costs(config, workdir)
            variants: dict[str, tuple[bool, Callable[[], tuple[int, int]]]] = {
                "receive": (False, lambda: receive_only(config)),
                "receive-st": (True, lambda: receive_only(config)),
                "current": (False, lambda: current_save(config)),
                "current-st": (True, lambda: current_save(config)),
                "pipelined": (False, lambda: pipelined_save(config, -1)),
                "pipelined-st": (True, lambda: pipelined_save(config, -1)),
                "pipelined-st-t0": (True, lambda: pipelined_save(config, 0)),
            }
            costs: dict[str, list[Cost]] = {name: [] for name in variants}
            print("\nend to end, in-process, alternating")
            for number in range(args.rounds + 1):  # round 0 warms up
                for name, (single_threaded, variant) in variants.items():
                    with single_threaded_streams(single_threaded), measured(
                        member.process.pid
                    ) as cost:
                        snapshot, stored = variant()
                    if number:
                        costs[name] += cost
                    print(
                        f"  {'warm-up' if not number else f'round {number}':8} {name:15} "
                        f"wall {cost[0].wall_s:6.2f} s  cpu {cost[0].cpu_s:6.2f} s  "
                        f"etcd cpu {cost[0].etcd_cpu_s:5.2f} s  "
                        f"{format_size(snapshot)} -> {format_size(stored)}",
                        flush=True,
                    )
            print("\nmedians")
            for name, runs in costs.items():
                print(
                    f"  {name:15} wall {statistics.median(c.wall_s for c in runs):6.2f} s  "
                    f"cpu {statistics.median(c.cpu_s for c in runs):6.2f} s  "
                    f"etcd cpu {statistics.median(c.etcd_cpu_s for c in runs):5.2f} s"
                )
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
