"""Hand bytes to a worker thread, so that reading from etcd overlaps hashing, zstd and age.

etcd sends a snapshot at the speed of its disk and network; compressing and encrypting it in
the same thread would add their time to the stream's instead of hiding it. The queue is bounded,
so memory stays flat: when the worker falls behind, the reader waits (and gRPC flow control
slows etcd down).
"""

from __future__ import annotations

import queue
import threading

from etcdops.stream.writers import Writer

# 32 KiB chunks from etcd: 128 of them bound the hand-off at 4 MiB.
_QUEUE_CHUNKS = 128
# The worker joins whatever is queued into blocks of up to this size: fewer, larger writes
# through the stages downstream.
_BATCH_BYTES = 1 << 20


class Handoff:
    """A writer whose downstream chain runs in its own thread; close() waits for it."""

    def __init__(self, downstream: Writer, name: str = "etcdops-pipeline") -> None:
        self._downstream = downstream
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def write(self, data: bytes, /) -> int:
        self._put(data)
        return len(data)

    def close(self) -> None:
        """Wait until every byte written has gone through; re-raise the worker's failure."""
        self._finish()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without finishing, after a failure elsewhere; what is queued is dropped."""
        self._stop.set()
        self._finish()

    def _put(self, item: bytes | None) -> None:
        # short timeouts so that a worker failure reaches the reader even with a full queue
        while True:
            if self._error is not None and item is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    return

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._put(None)
            self._thread.join()

    def _run(self) -> None:
        done = False
        while not done:
            batch, size = [], 0
            while size < _BATCH_BYTES:
                try:
                    item = self._queue.get(block=not batch)
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
                size += len(item)
            if batch and self._error is None and not self._stop.is_set():
                try:
                    self._downstream.write(batch[0] if len(batch) == 1 else b"".join(batch))
                except BaseException as exc:  # raised in the reader's thread, on its next write
                    self._error = exc
