"""Segments published in every store, each store on a thread of its own, none waiting on another.

A segment is sealed once (etcdops.journal.store.seal) and the same stored bytes go to every
store, so that a store that fell behind can be caught up from any store that holds them. Each
store has its own worker and queue, in revision order, so a store's chain only ever lacks its
newest segments (never one in the middle), and a store that fails is retried with a backoff
while the others and the watch go on.

Memory stays bounded: a queue holds the bytes of at most `held` segments; beyond that only the
segment's manifest is queued, and its bytes are read back, when the store's turn comes, from a
store that has them (the local one first), checked against the manifest's sha256. The local
store is the exception: it is the copy the others fall back on, so its queue never drops the
bytes, and a full queue makes the caller wait (the watch then lags, which the run measures).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from etcdops.errors import EtcdopsError, StorageError
from etcdops.journal.manifest import SegmentManifest
from etcdops.journal.store import SealedSegment, publish
from etcdops.stores.base import Store
from etcdops.stores.configured import LOCAL

log = logging.getLogger("etcdops.journal.publish")

# segments whose bytes a store's queue holds before it keeps only their manifests
HELD_SEGMENTS = 16
# retries of a failing store: doubled from the first pause up to the last
FIRST_PAUSE, LAST_PAUSE = 0.5, 30.0


@dataclass
class StoreCounts:
    """What one store was given and did: the journal's metrics and report per store."""

    published: int = 0
    bytes: int = 0
    failures: int = 0
    last_revision: int | None = None  # the newest segment's last revision stored there
    last_stored_at: float | None = None  # when (Unix time) its manifest was written
    last_error: str | None = None  # why the store is failing now; None once it caught up
    pending: int = 0  # segments queued, not yet stored

    def as_dict(self) -> dict[str, object]:
        return dict(vars(self))


@dataclass
class _Queue:
    items: deque[SealedSegment | SegmentManifest] = field(default_factory=deque)
    held: int = 0  # items holding their bytes
    busy: bool = False  # the worker is storing the head item


class Publisher:
    """One worker thread per store; submit() queues a sealed segment for all of them."""

    def __init__(self, stores: Mapping[str, Store], *, held: int = HELD_SEGMENTS) -> None:
        self._stores = dict(stores)
        self._held = held
        self._cond = threading.Condition()
        self._queues = {name: _Queue() for name in self._stores}
        self.counts = {name: StoreCounts() for name in self._stores}
        self._closing = False
        self._threads = [
            threading.Thread(target=self._work, args=(name,), name=f"journal-{name}", daemon=True)
            for name in self._stores
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, sealed: SealedSegment) -> None:
        """Queue a segment in every store; waits only while the local store's queue is full."""
        with self._cond:
            for name, queue in self._queues.items():
                if name == LOCAL:
                    while queue.held >= self._held and not self._closing:
                        self._cond.wait(0.5)
                self._append(name, sealed)
            self._cond.notify_all()

    def owe(self, name: str, manifests: list[SegmentManifest]) -> None:
        """Queue segments another store holds and this one lacks (a catch-up after a restart)."""
        with self._cond:
            for manifest in manifests:
                self._queues[name].items.append(manifest)
                self.counts[name].pending += 1
            self._cond.notify_all()

    def _append(self, name: str, sealed: SealedSegment) -> None:
        queue = self._queues[name]
        if name == LOCAL or queue.held < self._held:
            queue.items.append(sealed)
            queue.held += 1
        else:
            queue.items.append(sealed.manifest)  # its bytes are read back when its turn comes
        self.counts[name].pending += 1

    def held_bytes(self, name: str) -> int:
        """The stored bytes one store's queue holds in memory (what the bound limits)."""
        with self._cond:
            return sum(len(item.stored) for item in self._queues[name].items
                       if isinstance(item, SealedSegment))

    def drain(self, timeout: float) -> dict[str, int]:
        """Wait until every queue is empty or timeout passes: what each store still lacks."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(q.items for q in self._queues.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            return {name: len(q.items) for name, q in self._queues.items() if q.items}

    def close(self) -> None:
        """Stop the workers (what is still queued is lost here, not in the stores)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(5.0)

    def _work(self, name: str) -> None:
        store, queue, counts = self._stores[name], self._queues[name], self.counts[name]
        pause = FIRST_PAUSE
        while True:
            with self._cond:
                while not queue.items and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                item = queue.items[0]
            try:
                sealed = item if isinstance(item, SealedSegment) else self._read_back(name, item)
                publish(store, sealed)
            except Exception as exc:  # any failure: this thread retries, it must not die
                message = exc.message if isinstance(exc, EtcdopsError) else repr(exc)
                with self._cond:
                    counts.failures += 1
                    if counts.last_error is None:
                        log.warning("journal: the %s store failed; retrying without holding up "
                                    "the others: %s", name, message)
                    counts.last_error = message
                    self._cond.wait(pause)  # close() wakes it
                pause = min(pause * 2, LAST_PAUSE)
                continue
            pause = FIRST_PAUSE
            manifest = sealed.manifest
            with self._cond:
                queue.items.popleft()
                if isinstance(item, SealedSegment):
                    queue.held -= 1
                if counts.last_error is not None:
                    log.warning("journal: the %s store caught up with %s", name, manifest.name)
                counts.published += 1
                counts.bytes += manifest.object_size
                counts.pending -= 1
                counts.last_revision = manifest.last_revision
                counts.last_stored_at = time.time()
                counts.last_error = None
                self._cond.notify_all()
            log.debug("journal: %s stored in the %s store", manifest.name, name)

    def _read_back(self, target: str, manifest: SegmentManifest) -> SealedSegment:
        """The stored bytes of a segment whose bytes were not kept, from a store that has them."""
        problems = []
        for name, store in self._stores.items():
            if name == target:
                continue
            try:
                stored = store.get_bytes(manifest.object_key)
            except EtcdopsError as exc:
                problems.append(f"{name}: {exc.message}")
                continue
            if hashlib.sha256(stored).hexdigest() == manifest.object_sha256:
                return SealedSegment(manifest, stored)
            problems.append(f"{name}: its copy does not match the manifest's sha256")
        raise StorageError(
            f"no store holds {manifest.name} to copy it to the {target} store yet: "
            + ("; ".join(problems) or "no other store is configured"),
            "the copy is tried again; the local store catches up first",
        )
