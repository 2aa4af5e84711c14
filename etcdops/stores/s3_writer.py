"""The streamed multipart upload behind S3Store.open_writer: flat memory, parts sent on daemon
threads while the next fills, and every wait bounded by the store's deadline."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from etcdops.errors import StorageError
from etcdops.stores.base import CommitOnExit
from etcdops.stores.s3_parts import MAX_PARTS, Checksum, composite_crc32
from etcdops.stores.s3_requests import RequestThreads
from etcdops.units import format_duration

if TYPE_CHECKING:
    from etcdops.stores.s3 import S3Store

T = TypeVar("T")

WAIT_SLICE = 0.5  # how often a waiting writer looks at its deadline and at cancel()
FIRST_WAIT_REPORT = 1.0  # a wait is reported after this long, then each time it doubles


class S3Writer(CommitOnExit):
    """A streamed multipart upload with flat memory; the object appears only on commit().

    Data is copied into part buffers of at most part_size, of which there are max_concurrency +
    1: up to max_concurrency parts upload while the next one fills, and write() waits for a
    buffer that a finished part gives back. The same few buffers serve the whole upload, so
    memory is fixed whatever the object's size, and a buffer grows only as far as the data put
    in it: a small object costs its own size, not a part. An object that fits in one part is
    sent with a single PUT at commit().

    Every wait ends at the store's deadline, counted from when the writer was opened, or at
    cancel(); a request that S3 never answers is abandoned on its daemon thread.
    """

    def __init__(
        self, store: S3Store, key: str, part_size: int, max_concurrency: int, *,
        waiting: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._key = key
        self._where = store.describe(key)  # checks the key before anything is sent
        self._part_size = part_size
        self._max_concurrency = max_concurrency
        self._deadline = time.monotonic() + store.deadline
        self._waiting = waiting
        self._cancelled = threading.Event()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._buffers = 0
        self._part: bytearray | None = None
        self._filled = 0
        self._size = 0
        self._upload_id: str | None = None
        self._requests: RequestThreads | None = None
        self._parts: list[Future[tuple[dict[str, Any], bytes]]] = []
        self._calls: list[Future[Any]] = []  # the writer's other requests (create, PUT, ...)
        self._doing = ""  # the request the writer waits for, when it is not parts
        self._failure: BaseException | None = None
        self._state = "open"  # open, committed or aborted
        self._abort_confirmed = True

    def write(self, data: bytes, /) -> int:
        """Buffer data and send every full part; raises StorageError once any part failed."""
        self._check_open()
        view = memoryview(data)
        try:
            while view:
                if self._part is None:
                    self._part, self._filled = self._take_buffer(), 0
                elif self._filled == self._part_size:
                    # a part goes out only when more data follows it, so that the last part is
                    # never empty and an object of exactly one part is a single PUT
                    self._send_part(self._part, self._part_size)
                    self._part, self._filled = self._take_buffer(), 0
                count = min(len(view), self._part_size - self._filled)
                # grows a buffer that is shorter (a new one starts empty), overwrites in place
                # one that a finished part gave back
                self._part[self._filled : self._filled + count] = view[:count]
                self._filled += count
                view = view[count:]
        except BaseException as exc:
            self._fail(exc)
        self._size += len(data)
        return len(data)

    def commit(self) -> None:
        """Send the rest, complete the upload and check what S3 holds; abort on any failure."""
        self._check_open()
        try:
            confirmed = True
            if self._upload_id is None:
                rest = self._part[: self._filled] if self._part is not None else b""
                checksum = self._request(
                    "sending the object", self._store.put_checked, self._key, rest
                )
            else:
                assert self._part is not None
                self._send_part(self._part, self._filled)
                checksum, confirmed = self._complete()
        except BaseException as exc:
            self._fail(exc)
        self._state = "committed"
        self._drop_buffers()
        try:
            self._request(
                "checking what S3 holds", self._store.verify, self._key, self._size, checksum,
                ours=confirmed,
            )
        finally:
            self._close_requests()

    def abort(self) -> bool:
        """Drop the upload and every part sent; safe to call more than once, and after commit.

        Whether nothing can be left: False when a request was still unanswered after the
        store's abort wait (a hung endpoint), so that an upload or object may remain for
        unfinished() and prune to find.
        """
        if self._state != "open":
            return self._abort_confirmed
        self._state = "aborted"
        until = time.monotonic() + self._store.abort_wait
        # parts in flight would land after the abort and be orphaned: wait for them, a while
        requests = [*self._parts, *self._calls]
        for future in requests:
            future.cancel()
        _, unanswered = wait(requests, timeout=self._store.abort_wait)
        self._drop_buffers()
        confirmed = not unanswered
        if self._upload_id is not None:
            # on a thread of its own: the writer's threads may all be stuck in parts
            aborter = RequestThreads(1, "s3-abort")
            done = aborter.submit(self._store.abort_upload, self._key, self._upload_id)
            aborter.close()
            wait([done], timeout=max(0.0, until - time.monotonic()))
            confirmed = confirmed and done.done() and done.exception() is None and done.result()
        self._close_requests()
        self._abort_confirmed = confirmed
        return confirmed

    def cancel(self) -> None:
        """Make a wait of this writer in another thread end now (an interrupt); thread-safe."""
        self._cancelled.set()

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageError(
                f"{self._store.name}: cannot write {self._where}: the upload was {self._state}",
                "start a new upload",
            )

    def _fail(self, exc: BaseException) -> NoReturn:
        """Abort, and raise why: the first part that failed is the cause."""
        # an interrupt stays an interrupt, whatever failed before it
        cause = (self._failure or exc) if isinstance(exc, Exception) else exc
        self.abort()
        raise cause

    def _wait(self, attempt: Callable[[float], T]) -> T:
        """attempt(timeout) until it stops raising queue.Empty or TimeoutError, within the
        deadline; tells waiting what the upload waits for after a second, then at each
        doubling of the wait."""
        started = time.monotonic()
        report_at = started + FIRST_WAIT_REPORT
        while True:
            now = time.monotonic()
            if self._cancelled.is_set():
                raise StorageError(f"{self._store.name}: the upload to {self._where} was stopped")
            if now >= self._deadline:
                raise self._overdue()
            try:
                return attempt(min(WAIT_SLICE, self._deadline - now))
            except (queue.Empty, TimeoutError):
                pass
            now = time.monotonic()
            if self._waiting is not None and now >= report_at:
                self._waiting(
                    f"waiting for the {self._store.name} upload ({self._where}) — "
                    f"{self._status()}, {format_duration(now - started)} so far"
                )
                report_at = started + 2 * (now - started)

    def _status(self) -> str:
        if self._doing:
            return self._doing
        in_flight = sum(1 for part in self._parts if part.running())
        queued = sum(1 for part in self._parts if not part.done()) - in_flight
        return f"{in_flight} part{'' if in_flight == 1 else 's'} in flight" + (
            f", {queued} queued" if queued else ""
        )

    def _overdue(self) -> StorageError:
        section = self._store.section
        return StorageError(
            f"{self._store.name}: the upload to {self._where} did not finish within "
            f"{section}.deadline ({format_duration(self._store.deadline)}): {self._status()}",
            f"check the S3 endpoint {self._store.endpoint}; for a slow link raise "
            f"{section}.deadline",
            retryable=True,
        )

    def _request(self, doing: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """One request of the writer's own (not a part), waited for within the deadline."""
        call = self._threads().submit(fn, *args, **kwargs)
        self._calls.append(call)
        self._doing = doing
        try:
            return self._wait(call.result)
        finally:
            self._doing = ""

    def _threads(self) -> RequestThreads:
        if self._requests is None:
            self._requests = RequestThreads(self._max_concurrency, "s3-part")
        return self._requests

    def _close_requests(self) -> None:
        if self._requests is not None:
            self._requests.close()
            self._requests = None

    def _take_buffer(self) -> bytearray:
        """A part buffer to fill: a free one, a new (empty) one while there are fewer than
        max_concurrency + 1, or else the next one that a finished part gives back."""
        try:
            buffer = self._free.get_nowait()
        except queue.Empty:
            if self._buffers <= self._max_concurrency:
                self._buffers += 1
                return bytearray()
            buffer = self._wait(lambda timeout: self._free.get(timeout=timeout))
        if self._failure is not None:
            raise self._failure
        return buffer

    def _drop_buffers(self) -> None:
        # the parts' futures hold their buffers too, through the callbacks that give them back
        self._part, self._filled, self._parts, self._calls = None, 0, [], []
        while not self._free.empty():
            self._free.get_nowait()

    def _send_part(self, buffer: bytearray, length: int) -> None:
        """Queue one part; its buffer comes back to the free ones when its upload has ended."""
        if self._failure is not None:
            raise self._failure
        if self._upload_id is None:
            self._upload_id = self._request(
                "starting the upload", self._store.start_upload, self._key
            )
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(
                f"{self._store.name}: cannot write {self._where}: more than {MAX_PARTS} parts "
                f"of {self._part_size} bytes",
                "pass the expected size when opening the writer, so that parts are big enough",
            )
        body = buffer if length == len(buffer) else buffer[:length]  # only the last is short
        future = self._threads().submit(
            self._store.upload_part, self._key, self._upload_id, number, body
        )
        future.add_done_callback(lambda done: self._part_done(done, buffer))
        self._parts.append(future)

    def _part_done(self, future: Future[tuple[dict[str, Any], bytes]], buffer: bytearray) -> None:
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()
        self._free.put(buffer)  # after the failure is set, so that the writer waking sees it

    def _parts_sent(self, timeout: float) -> list[tuple[dict[str, Any], bytes]]:
        """Every part's result once all are in; the first failure as soon as one fails."""
        done, pending = wait(self._parts, timeout, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        if pending:
            raise TimeoutError
        return [future.result() for future in self._parts]

    def _complete(self) -> tuple[Checksum, bool]:
        """Complete the upload once every part is in: the composite checksum, and whether S3
        confirmed the completion."""
        results = self._wait(self._parts_sent)
        checksum = Checksum("CRC32", composite_crc32([digest for _, digest in results]))
        confirmed = self._request(
            "completing the upload", self._store.complete_upload, self._key, self._upload_id,
            [part for part, _ in results],
        )
        return checksum, confirmed
