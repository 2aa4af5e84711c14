"""`etcdops` with proposed performance changes applied by monkeypatching: a prototype.

    python bench/_patched_etcdops.py --patches=st,coalesce,sync snapshot save --local-only ...

Each patch stands for a change to a file outside bench/ that this benchmark may not edit; the
patch does at run time what the change would do in the source, so the benchmark can measure the
change through the real CLI before anyone writes it:

- `st`: grpc's SingleThreadedUnaryStream channel option, which etcdops/etcd/client.py
  (EtcdSession._connect) would pass to grpc.insecure_channel / grpc.secure_channel. By default
  grpc serves a streaming call from a polling thread that hands each message to the reader
  through a condition variable; etcd sends a snapshot in 32 KiB messages, 32,768 per GiB.
- `coalesce`: the reader joins those messages into 1 MiB blocks before the hand-off queue
  (etcdops/stream/handoff.py), which is then bounded by blocks (4 MiB) instead of by chunks, so
  the queue's lock and wake-up are paid once per MiB instead of 32 times.
- `sync`: the local store's AtomicFile (etcdops/stores/local.py) fdatasyncs from a thread of
  its own every 32 MiB, so the fsync in commit() no longer waits for the whole object to reach
  the disk after the stream has ended.
- `level1`: zstd level 1 instead of 3, a configuration change ([local] compression_level).

bench/_prototype_pipeline.py uses the same patches in-process. `st`, `coalesce` and `sync` went
into etcdops in 8a1e536; on a tree that already has a change, its patch does nothing and says so
on stderr, so the prototypes keep running against newer code.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

MiB = 1 << 20
COALESCE_BYTES = 1 * MiB
QUEUE_BLOCKS = 4
SYNC_EVERY = 32 * MiB
PATCHES = ("st", "coalesce", "sync", "level1")


def _already_in(module: Any, attribute: str, patch: str) -> bool:
    """Whether etcdops already has the change a patch stands for (then the patch is skipped)."""
    if hasattr(module, attribute):
        print(f"patch {patch}: already in {module.__name__}, skipped", file=sys.stderr)
        return True
    return False


@contextlib.contextmanager
def single_threaded_streams() -> Iterator[None]:
    """Every grpc channel opened inside gets the SingleThreadedUnaryStream option."""
    import etcdops.etcd.client

    if _already_in(etcdops.etcd.client, "_CHANNEL_OPTIONS", "st"):
        yield
        return
    import grpc
    import grpc.experimental

    option = (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)
    originals = {"insecure_channel": grpc.insecure_channel, "secure_channel": grpc.secure_channel}

    def with_option(original: Any) -> Any:
        def channel(*args: Any, options: Sequence[Any] = (), **kwargs: Any) -> Any:
            return original(*args, options=[*options, option], **kwargs)

        return channel

    for name, original in originals.items():
        setattr(grpc, name, with_option(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(grpc, name, original)


@contextlib.contextmanager
def coalescing_handoff() -> Iterator[None]:
    """save_snapshot's Handoff takes 1 MiB blocks, at most QUEUE_BLOCKS of them queued."""
    import etcdops.snapshot
    import etcdops.stream.handoff
    from etcdops.stream.handoff import Handoff

    if _already_in(etcdops.stream.handoff, "BLOCK_BYTES", "coalesce"):
        yield
        return

    class CoalescingHandoff(Handoff):
        """Joins small writes into blocks before they cross to the worker thread."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pending: list[bytes] = []
            self._held = 0

        def write(self, data: bytes, /) -> int:
            self._pending.append(data)
            self._held += len(data)
            if self._held >= COALESCE_BYTES:
                self._flush_pending()
            return len(data)

        def close(self) -> None:
            self._flush_pending()
            super().close()

        def _flush_pending(self) -> None:
            if self._pending:
                block, self._pending, self._held = b"".join(self._pending), [], 0
                super().write(block)

    saved = etcdops.snapshot.Handoff, etcdops.stream.handoff._QUEUE_CHUNKS
    etcdops.snapshot.Handoff = CoalescingHandoff  # type: ignore[misc]
    etcdops.stream.handoff._QUEUE_CHUNKS = QUEUE_BLOCKS
    try:
        yield
    finally:
        etcdops.snapshot.Handoff, etcdops.stream.handoff._QUEUE_CHUNKS = saved  # type: ignore[misc]


@contextlib.contextmanager
def background_sync() -> Iterator[None]:
    """LocalStore writes objects through an AtomicFile that syncs as it goes."""
    import etcdops.stores.local
    from etcdops.stores.local import AtomicFile

    if _already_in(etcdops.stores.local, "_BackgroundSync", "sync"):
        yield
        return

    class SyncingAtomicFile(AtomicFile):
        """Flushes to disk every SYNC_EVERY bytes from a thread that nothing waits for."""

        def __init__(self, path: Path, mode: int = 0o600) -> None:
            super().__init__(path, mode)
            self._since = 0
            self._wanted = threading.Event()
            self._closed = False
            self._syncer = threading.Thread(target=self._sync, name="etcdops-sync", daemon=True)
            self._syncer.start()

        def write(self, data: bytes, /) -> int:
            written = super().write(data)
            self._since += len(data)
            if self._since >= SYNC_EVERY:
                self._since = 0
                self._file.flush()
                self._wanted.set()
            return written

        def commit(self) -> None:
            self._stop_syncing()
            super().commit()

        def abort(self) -> None:
            self._stop_syncing()
            super().abort()

        def _stop_syncing(self) -> None:
            self._closed = True
            self._wanted.set()
            if self._syncer is not threading.current_thread():
                self._syncer.join()

        def _sync(self) -> None:
            fd = self._file.fileno()
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._closed:
                    return
                with contextlib.suppress(OSError):  # commit()'s own fsync reports errors
                    os.fdatasync(fd)

    saved = etcdops.stores.local.AtomicFile
    etcdops.stores.local.AtomicFile = SyncingAtomicFile  # type: ignore[misc]
    try:
        yield
    finally:
        etcdops.stores.local.AtomicFile = saved  # type: ignore[misc]


@contextlib.contextmanager
def zstd_level1() -> Iterator[None]:
    """[local] compression_level = 1, as an operator would set it."""
    saved = os.environ.get("ETCDOPS_LOCAL_COMPRESSION_LEVEL")
    os.environ["ETCDOPS_LOCAL_COMPRESSION_LEVEL"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["ETCDOPS_LOCAL_COMPRESSION_LEVEL"]
        else:
            os.environ["ETCDOPS_LOCAL_COMPRESSION_LEVEL"] = saved


@contextlib.contextmanager
def patched(names: Sequence[str]) -> Iterator[None]:
    """Apply the named patches for the duration of the block."""
    unknown = set(names) - set(PATCHES)
    if unknown:
        raise ValueError(f"unknown patches {sorted(unknown)}; known: {', '.join(PATCHES)}")
    makers = {
        "st": single_threaded_streams,
        "coalesce": coalescing_handoff,
        "sync": background_sync,
        "level1": zstd_level1,
    }
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(makers[name]())
        yield


def main(argv: Sequence[str]) -> None:
    """`--patches=a,b` first, then the etcdops command line."""
    names: list[str] = []
    if argv and argv[0].startswith("--patches="):
        names = [n for n in argv[0].split("=", 1)[1].split(",") if n]
        argv = argv[1:]
    from etcdops.cli.main import run

    sys.argv = ["etcdops", *argv]
    with patched(names):
        run()


if __name__ == "__main__":
    main(sys.argv[1:])
