"""Daemon threads for S3 requests, so that a request stuck on a hung endpoint never holds the
process at exit."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class RequestThreads:
    """Daemon threads that send S3 requests and hand back futures.

    A ThreadPoolExecutor's threads are joined at exit, each after its request's last retry: an
    upload abandoned on a hung endpoint would hold the process that long. These end with the
    process; what an abandoned request leaves, the upload's abort or unfinished() deals with.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._workers = workers
        for index in range(workers):
            threading.Thread(target=self._run, name=f"{name}-{index}", daemon=True).start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run fn on the next free thread."""
        future: Future[T] = Future()

        def job() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)

        self._jobs.put(job)
        return future

    def close(self) -> None:
        """Let each thread end once the requests given to it have."""
        for _ in range(self._workers):
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()
