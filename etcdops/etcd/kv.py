"""etcd's KV service: counting, reading, writing and deleting keys, and compacting history."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from etcdops.etcd.connection import Connections, RevisionCompacted, rpc_error
from etcdops.etcd.rpc import import_etcdrpc, import_grpc


@dataclass(frozen=True)
class KeyValue:
    """One key and its value, as Range returns it."""

    key: bytes
    value: bytes


@dataclass(frozen=True)
class KeyRevisions:
    """One key and the revisions it was created and last modified at (a keys-only Range)."""

    key: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class History:
    """Which history etcd serves, and how far it is: its cluster ID and current revision."""

    cluster_id: int  # a restore under a new cluster token gives a new one
    revision: int


class KVCalls(Connections):
    """The KV calls etcdops makes, each served by the first member that answers."""

    def history(self) -> History:
        """etcd's cluster ID and revision, by a linearizable read (a member's Status is not:
        a follower may answer a revision behind what a watch on the leader already gave)."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.RangeRequest(key=b"\0", count_only=True)

        def call(url: str) -> Any:
            return self._unary(url, "KV", "Range", request, "a read of the revision")

        header = self._first_answer("Range", call).header
        return History(int(header.cluster_id), int(header.revision))

    def count_keys(self, revision: int | None = None) -> int:
        """How many keys the whole keyspace holds (at a revision), without reading any value."""
        etcdrpc = import_etcdrpc()

        def call(url: str) -> Any:
            # key and range_end "\0" mean every key; count_only returns no key-values
            request = etcdrpc.RangeRequest(
                key=b"\0", range_end=b"\0", count_only=True, revision=revision or 0
            )
            return self._unary(url, "KV", "Range", request, "key count")

        return int(self._first_answer("key count", call).count)

    def key_pages(
        self, page_size: int = 1000, revision: int | None = None
    ) -> Iterator[list[bytes]]:
        """Every key of the keyspace, a page at a time, without values and all at one revision
        (the first page's, unless given): counts a keyspace of any size in bounded memory."""
        for kvs in self._range_pages(b"\0", b"\0", page_size, revision, keys_only=True):
            yield [kv.key for kv in kvs]

    def prefix_pages(
        self, prefix: bytes, page_size: int = 500, revision: int | None = None
    ) -> Iterator[list[KeyValue]]:
        """Every key-value under a prefix, a page at a time and all at one revision: reads a
        prefix of any size in bounded memory (one Range stops at grpc's 4 MiB messages)."""
        for kvs in self._range_pages(prefix, prefix_end(prefix), page_size, revision):
            yield [KeyValue(kv.key, kv.value) for kv in kvs]

    def key_revisions(
        self, prefix: bytes, page_size: int = 1000, revision: int | None = None
    ) -> Iterator[list[KeyRevisions]]:
        """Every key under a prefix with the revisions it was created and last changed at, a
        page at a time, without values and all at one revision: what a recovery polls to see
        which objects were written since the restore, in bounded memory."""
        for kvs in self._range_pages(prefix, prefix_end(prefix), page_size, revision,
                                     keys_only=True):
            yield [KeyRevisions(kv.key, kv.create_revision, kv.mod_revision) for kv in kvs]

    def _range_pages(
        self, key: bytes, range_end: bytes, page_size: int, revision: int | None,
        *, keys_only: bool = False,
    ) -> Iterator[Any]:
        etcdrpc = import_etcdrpc()
        start, pinned = key, revision or 0
        while True:
            request = etcdrpc.RangeRequest(
                key=start, range_end=range_end, keys_only=keys_only, limit=page_size,
                revision=pinned,
            )

            def call(url: str, request: Any = request) -> Any:
                return self._unary(url, "KV", "Range", request, "a page of keys")

            response = self._first_answer("Range", call)
            if response.kvs:
                yield response.kvs
            if not response.more or not response.kvs:
                return
            pinned = pinned or int(response.header.revision)
            start = response.kvs[-1].key + b"\0"  # the smallest key after the last one read

    def readable_at(self, revision: int) -> bool:
        """Whether etcd still keeps a revision: False once a compaction dropped it."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.RangeRequest(key=b"\0", revision=revision, count_only=True)

        def call(url: str) -> bool:
            try:
                self._unary(url, "KV", "Range", request, f"a read at revision {revision}")
            except RevisionCompacted:
                return False
            return True

        return self._first_answer("Range", call)

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Write key-values in one transaction (one raft entry); returns the new revision."""
        # a member that timed out may have applied the puts before the next one is asked:
        # the same values written twice are the same keys and values, one revision later
        etcdrpc = import_etcdrpc()

        def call(url: str) -> Any:
            request = etcdrpc.TxnRequest(
                success=[
                    etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value))
                    for key, value in items
                ]
            )
            return self._unary(url, "KV", "Txn", request, f"a transaction of {len(items)} puts")

        return int(self._first_answer("put", call).header.revision)

    def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under a prefix, in key order, and the store's revision when it was read."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.RangeRequest(key=prefix, range_end=prefix_end(prefix))

        def call(url: str) -> Any:
            return self._unary(url, "KV", "Range", request, f"a read of {prefix!r}")

        response = self._first_answer("Range", call)
        kvs = [KeyValue(kv.key, kv.value) for kv in response.kvs]
        return kvs, int(response.header.revision)

    def delete_keys(self, keys: Sequence[bytes]) -> int:
        """Delete exact keys in one transaction (etcd allows deletes under NOSPACE)."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.TxnRequest(
            success=[
                etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key))
                for key in keys
            ]
        )

        def call(url: str) -> Any:
            return self._unary(url, "KV", "Txn", request, f"a transaction of {len(keys)} deletes")

        return int(self._first_answer("delete", call).header.revision)

    def compact(self, revision: int, *, physical: bool, timeout: float) -> bool:
        """Drop history before revision, cluster-wide; False when etcd had already dropped it."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.CompactionRequest(revision=revision, physical=physical)

        def call(url: str) -> bool:
            what = f"compaction to revision {revision}"
            try:
                self._unary(url, "KV", "Compact", request, what, timeout=timeout)
            except RevisionCompacted:
                return False  # kube-apiserver (or another node) compacted further already
            return True

        return self._first_answer("Compact", call)

    def wait_compacted(self, endpoint: str, revision: int, *, timeout: float) -> None:
        """Wait until one member has applied every compaction up to revision on disk, then
        commit its backend. revision must already be compacted (at most the oldest revision
        etcd keeps): a Compact to a newer one would compact."""
        # compact returns once the member that served it applied the compaction; the others
        # delete the old revisions later, on a queue of their own. etcd refuses a Compact to a
        # revision already compacted, but with physical set the member asked first waits, on
        # that queue, for the compactions queued before it, and then commits its backend: the
        # member's own signal that its deletions are done (a Range below the revision fails as
        # soon as the compaction is queued, before anything is deleted)
        etcdrpc = import_etcdrpc()
        url = self._url(endpoint)
        request = etcdrpc.CompactionRequest(revision=revision, physical=True)
        try:
            self._unary(url, "KV", "Compact", request,
                        f"waiting for the compaction to revision {revision}", timeout=timeout)
        except RevisionCompacted:
            return
        # accepted: nothing had compacted that far on this member; done on disk all the same

    def put_revisions(self, endpoint: str, key: bytes, count: int, in_flight: int = 128) -> int:
        """Put `key` (empty value) `count` times on one member, `in_flight` puts at a time:
        each put is one revision, so this advances the revision by count; the last revision."""
        grpc, etcdrpc = import_grpc(), import_etcdrpc()
        url = self._url(endpoint)
        connection = self._connection(url)
        put, request = connection.stub("KV").Put, etcdrpc.PutRequest(key=key)
        timeout = self.config.command_timeout
        stop = threading.Event()
        outcome: list[Any] = []

        def writes() -> None:
            # one put waits on fsync; many in flight share each one (etcd batches proposals)
            pending: deque[Any] = deque()
            revision = 0
            try:
                for _ in range(count):
                    if stop.is_set():
                        break
                    if len(pending) == in_flight:
                        revision = max(revision, pending.popleft().result().header.revision)
                    pending.append(put.future(request, timeout=timeout,
                                              metadata=connection.metadata))
                while pending:
                    revision = max(revision, pending.popleft().result().header.revision)
                outcome.append(int(revision))
            except grpc.RpcError as exc:
                outcome.append(rpc_error(exc, url, f"{count} puts of {key!r}", timeout,
                                         self.config.user))
            except Exception as exc:  # raised again in the caller's thread
                outcome.append(exc)
            finally:
                for future in pending:
                    future.cancel()

        # on a thread of their own: Ctrl-C or SIGTERM (a KeyboardInterrupt in the main thread)
        # landing inside grpc's call bookkeeping leaves a call that channel.close() waits for
        # forever; here it lands in join(), and the writes stop at the next put
        worker = threading.Thread(target=writes, name="put-revisions", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
        except BaseException:
            stop.set()
            worker.join()
            raise
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return int(outcome[0])

def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a Range cover every key starting with prefix (as etcdctl does)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"  # a prefix of only 0xff bytes: every key from it to the end
    end[-1] += 1
    return bytes(end)
