"""Hand bytes to a worker thread, so that reading from etcd overlaps hashing, zstd and age.

etcd sends a snapshot at the speed of its disk and network; compressing and encrypting it in
the same thread would add their time to the stream's instead of hiding it. The reader joins
etcd's 32 KiB messages into 1 MiB blocks, so the queue's lock and wake-up are paid once per MiB
(slices already that large, as a decoder's, pass without the copy), and the queue holds a few
blocks only: memory stays flat, and when the worker falls behind the reader waits (and gRPC
flow control slows etcd down).
"""

from __future__ import annotations

import queue
import threading

from etcdops.stream.writers import Writer

BLOCK_BYTES = 1 << 20
# a slice this large is handed over as it is: joining it would copy it for no saving
_JOIN_BELOW = BLOCK_BYTES // 4
_QUEUE_BLOCKS = 4


class Handoff:
    """A writer whose downstream chain runs in its own thread; close() waits for it."""

    def __init__(self, downstream: Writer, name: str = "etcdops-pipeline") -> None:
        self._downstream = downstream
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_BLOCKS)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def write(self, data: bytes, /) -> int:
        if len(data) >= _JOIN_BELOW:
            self._put_pending()
            self._put(data)
            return len(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BLOCK_BYTES:
            self._put_pending()
        return len(data)

    def close(self) -> None:
        """Wait until every byte written has gone through; re-raise the worker's failure."""
        self._put_pending()
        self._finish()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without finishing, after a failure elsewhere; what is queued is dropped."""
        self._stop.set()
        self._pending, self._pending_bytes = [], 0
        self._finish()

    def _put_pending(self) -> None:
        if self._pending:
            block = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending, self._pending_bytes = [], 0
            self._put(block)

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
        while (block := self._queue.get()) is not None:
            if self._error is not None or self._stop.is_set():
                continue  # keep taking blocks so that the reader never waits on a full queue
            try:
                self._downstream.write(block)
            except BaseException as exc:  # raised in the reader's thread, on its next write
                self._error = exc
