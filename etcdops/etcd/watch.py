"""etcd's Watch service: every change to every key from a revision on, across member failures.

`changes(from_revision)` opens one raw bidirectional Watch stream on one member (no python-etcd3
watcher threads or callbacks) and yields, in revision order, a `Revision` per revision with all
of its changes, and a `Progress` when etcd confirms that nothing is missing up to a revision.
What a journal needs from it:

- Whole revisions. The watch asks for fragments: without them etcd sends a catch-up of up to
  1,000 revisions as one message, beyond grpc's 4 MiB receive limit once values are large, and
  the stream would fail at the same point on every retry. Fragments may split a revision, so
  events are grouped by mod revision; a revision is complete when the next one starts or the
  last fragment of a response ends. A revision at or below the last one delivered is an
  IntegrityError, never merged.
- No hole and no duplicate across failures. A stream that errors, ends, is left without a
  leader (the "hasleader" metadata makes etcd cancel it), or stays silent past command_timeout
  while a request is unanswered is resumed on the next endpoint from the last delivered
  revision + 1. EtcdUnavailableError only when no endpoint could resume it for command_timeout.
- Compaction: a start (or resume) point etcd has compacted raises WatchCompacted with etcd's
  compact revision, the cue for a new full backup.
- One history: every member that serves the stream must answer with the cluster ID the caller
  follows (the first member's when the caller names none). A restore of the cluster gives a new
  one, at a revision of another history: resuming there would splice two histories together,
  so the stream ends with HistoryChanged instead.
- Auth: a refused watch is asked again once with a fresh token (a simple token dies with its
  member's restart, and etcd 3.5 then answers "permission denied"); refused again, it is an
  EtcdUnavailableError naming the user.
- Bounded memory: responses are read on the caller's thread only when the caller asks for the
  next item, so grpc's flow control holds the rest on the server; at most one revision and one
  message are held here.

Threads: grpc reads the request iterator on a thread of its own for each call; here that
thread also paces the progress requests and watches for silence, and it ends with the call.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

from etcdops.errors import EtcdUnavailableError, IntegrityError
from etcdops.etcd.connection import (
    ENDPOINT_HINT,
    Connection,
    Connections,
    RevisionCompacted,
    Unreachable,
    rpc_error,
)
from etcdops.etcd.rpc import import_etcdrpc, import_grpc, last, newer_fields

# WatchCreateRequest.fragment (= 8, etcd 3.4+) and WatchResponse.fragment (= 7) are newer than
# python3-etcd3's stubs: the request field is merged in as raw bytes (tag 8 varint, value 1),
# which protobuf keeps and serializes as an unknown field
_FRAGMENT_REQUEST = b"\x40\x01"
_FRAGMENT_FIELD = {"fragment": 7}
# etcd's rpctypes.MetadataRequireLeaderKey: a member without a leader refuses or cancels the
# stream instead of keeping it open with nothing to send
_REQUIRE_LEADER = ("hasleader", "true")
# cancel reasons of a watch etcd refused (api/v3rpc/rpctypes/error.go)
_TOKEN_REASONS = ("invalid auth token", "auth revision is old")
_PERMISSION_REASON = "permission denied"
_FATAL_CODES = ("PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_ARGUMENT")
# how often the request thread looks at its queue, the progress schedule and the silence
_TICK = 0.2
# pause after every endpoint failed once, before trying them again
_ROUND_PAUSE = 0.2
_STOP = object()
_ASK = object()


class ChangeKind(enum.Enum):
    """What a change did to its key."""

    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class Change:
    """One key's change as etcd recorded it: everything a replay needs to write it again.

    A delete carries the key and its deletion revision (mod_revision); etcd sends the other
    fields of a delete as zero and empty.
    """

    kind: ChangeKind
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Revision:
    """Every change of one revision (one transaction), in etcd's order."""

    revision: int
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Progress:
    """Every change up to this revision has been delivered before this item, and the member
    watched had no newer revision when asked: "nothing happened" told from "behind"."""

    revision: int


class WatchCompacted(RevisionCompacted):
    """The watch's start or resume point is older than etcd's compaction."""

    def __init__(self, message: str, hint: str, *, revision: int, compact_revision: int) -> None:
        super().__init__(message, hint)
        self.revision = revision  # the first revision the watch asked for
        self.compact_revision = compact_revision  # the oldest revision etcd still has


class HistoryChanged(EtcdUnavailableError):
    """A member answered with another cluster ID than the watch follows: the cluster was
    restored, and its revisions are of another history."""


class _Failed(Exception):
    """One member could not serve the watch: the stream moves to another one."""

    def __init__(self, message: str, *, same_member: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.same_member = same_member  # worth asking the same member again first


class WatchCalls(Connections):
    """The Watch calls etcdops makes, resumed on another member when one fails."""

    def changes(
        self, from_revision: int, *, progress_every: float | None = None,
        cluster_id: int | None = None,
    ) -> ChangeStream:
        """Every change to every key from from_revision on, as Revision and Progress items.

        A context manager and an iterator. from_revision is at most the current revision + 1
        (the revision after the caller's last known one). A progress request goes to etcd on
        `stream.progress()` and every progress_every seconds (default: command_timeout, which
        is also how long an unanswered request may wait before the member counts as failed).
        cluster_id: the etcd cluster whose history from_revision is of (None: the first
        member's); a member of another one ends the stream with HistoryChanged.
        """
        if from_revision < 1:
            raise ValueError(f"a watch starts at revision 1 or later, not {from_revision}")
        every = progress_every or self.config.command_timeout
        if every <= 0:
            raise ValueError(f"progress_every must be positive, not {progress_every}")
        return ChangeStream(self, from_revision, every, cluster_id)


class ChangeStream:
    """An open watch: iterate it for Revision and Progress items; progress() and close() may
    be called from any thread."""

    def __init__(
        self, session: WatchCalls, from_revision: int, every: float, cluster_id: int | None
    ) -> None:
        self.position = from_revision - 1  # every revision up to it is delivered
        self.cluster_id = cluster_id  # the history followed, once known
        self.endpoint: str | None = None  # the member being watched, once one answered
        self._session = session
        self._every = every
        self._timeout = session.config.command_timeout
        self._closed = threading.Event()
        self._asked = threading.Event()  # a progress request to send
        self._progress_at: int | None = None  # a member's revision, to confirm once reached
        self._lock = threading.Lock()
        self._attempt: _Attempt | None = None
        self._give_up_at: float | None = None  # while failing over: when to give up
        self._failures: list[str] = []  # why each member failed, while failing over
        # a member that creates the watch and fails at the same point every time (a message
        # grpc refuses) is still failing over: only delivering something, or serving longer
        # than command_timeout, ends a failover
        self._served_since: float | None = None
        self._advanced = False
        self._fresh_token: set[str] = set()  # members re-authenticated since they last served
        self._items = self._follow()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        if not self._items.gi_running:  # the iterating thread's own cleanup, done here
            self._items.close()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Revision | Progress:
        return next(self._items)

    def progress(self) -> None:
        """Ask etcd for progress: a Progress item follows once every change up to the
        member's current revision has been delivered."""
        self._asked.set()
        with self._lock:
            attempt = self._attempt
        if attempt is not None:
            attempt.requests.put(_ASK)

    def close(self) -> None:
        """End the watch: the call is cancelled and its request thread ends; iteration stops."""
        self._closed.set()
        with self._lock:
            attempt = self._attempt
        if attempt is not None:
            attempt.stop()

    def _follow(self) -> Iterator[Revision | Progress]:
        endpoints = sorted(self._session.endpoints, key=lambda url: url in self._session._down)
        tried = 0
        while not self._closed.is_set():
            url = endpoints[0]
            try:
                attempt = self._start(url)
                try:
                    yield from self._read(attempt)
                finally:
                    attempt.stop()
                if self._closed.is_set():
                    return
                raise _Failed(f"etcd at {url} ended the watch stream")
            except Unreachable as exc:
                failure = _Failed(exc.message)
            except _Failed as exc:
                failure = exc
            if self._closed.is_set():
                return
            self._session._down.add(url)
            now = time.monotonic()
            if self._served_since is not None and (
                self._advanced or now - self._served_since > self._timeout
            ):  # the member served a while: a new failure, not more of the last one
                self._give_up_at, self._failures = None, []
            self._served_since, self._advanced = None, False
            self._failures.append(failure.message)
            if not failure.same_member:
                endpoints.append(endpoints.pop(0))
                tried += 1
            self._give_up_at = self._give_up_at or now + self._timeout
            if now >= self._give_up_at:
                raise EtcdUnavailableError(
                    f"no etcd endpoint resumed the watch from revision {self.position + 1} "
                    f"within {self._timeout:g}s: " + "; ".join(dict.fromkeys(self._failures)),
                    ENDPOINT_HINT,
                )
            if tried >= len(endpoints):  # each one failed once: a new leader may need a moment
                tried = 0
                self._closed.wait(_ROUND_PAUSE)

    def _start(self, url: str) -> _Attempt:
        etcdrpc = import_etcdrpc()
        connection = self._session._connection(url)  # Unreachable when it cannot be dialled
        create = etcdrpc.WatchCreateRequest(
            key=b"\0", range_end=b"\0", start_revision=self.position + 1, progress_notify=True
        )
        create.MergeFromString(_FRAGMENT_REQUEST)
        attempt = _Attempt(self, url, connection)
        with self._lock:
            if self._closed.is_set():
                raise _Failed("closed")
            self._attempt = attempt
        attempt.begin(etcdrpc.WatchRequest(create_request=create))
        return attempt

    def _read(self, attempt: _Attempt) -> Iterator[Revision | Progress]:
        url = attempt.url
        responses = attempt.responses()
        created = next(responses, None)
        if created is None or not created.created:
            raise _Failed(f"etcd at {url} did not create the watch")
        if created.canceled:
            self._refused(created, attempt)
        self._same_history(int(created.header.cluster_id), url)
        self.endpoint = url
        self._fresh_token.discard(url)
        self._session._down.discard(url)
        self._served_since = time.monotonic()
        pending: list[Change] = []
        for response in responses:
            if response.canceled:
                self._refused(response, attempt)
            if not response.events:  # a progress notification
                self._progress_at = max(self._progress_at or 0, int(response.header.revision))
            for event in response.events:
                change = _change(event)
                revision = change.mod_revision
                newest = pending[-1].mod_revision if pending else self.position
                if revision < newest or revision <= self.position:
                    raise IntegrityError(
                        f"etcd at {url} sent revision {revision} after revision {newest}: the "
                        "watch stream is out of order",
                        "report it with the etcd version; restart the job to watch afresh",
                    )
                if pending and revision > newest:
                    yield from self._deliver(pending)
                    pending = []
                pending.append(change)
            if pending and not last(newer_fields(response, _FRAGMENT_FIELD)["fragment"], 0):
                yield from self._deliver(pending)
                pending = []
            if self._progress_at is not None and self._progress_at <= self.position:
                self._progress_at, self._advanced = None, True
                yield Progress(self.position)

    def _same_history(self, cluster_id: int, url: str) -> None:
        if self.cluster_id is None:
            self.cluster_id = cluster_id
        elif cluster_id != self.cluster_id:
            raise HistoryChanged(
                f"etcd at {url} serves cluster ID {cluster_id:x}, not {self.cluster_id:x} whose "
                f"history the watch follows from revision {self.position + 1}: the cluster "
                "was restored",
                "its revisions are of a new history: watch it afresh (the journal starts a "
                "new chain from a new backup)",
            )

    def _deliver(self, changes: list[Change]) -> Iterator[Revision]:
        self.position, self._advanced = changes[0].mod_revision, True
        yield Revision(self.position, tuple(changes))

    def _refused(self, response: Any, attempt: _Attempt) -> None:
        url, reason = attempt.url, response.cancel_reason or ""
        if response.compact_revision:
            raise WatchCompacted(
                f"etcd at {url} has compacted revision {self.position + 1} away (its oldest "
                f"revision is {response.compact_revision}): the watch cannot resume there",
                "take a new full backup and follow the changes from its revision",
                revision=self.position + 1,
                compact_revision=int(response.compact_revision),
            )
        if _PERMISSION_REASON in reason or any(marker in reason for marker in _TOKEN_REASONS):
            if url not in self._fresh_token:
                # a simple token dies with a restart of its member or after --auth-token-ttl,
                # and etcd 3.5 then says "permission denied": a fresh token tells which it is
                connection = attempt.connection
                connection.metadata = self._session._authenticate(connection, url)
                self._fresh_token.add(url)
                raise _Failed(f"etcd at {url} refused the watch: {reason}", same_member=True)
            if _PERMISSION_REASON in reason:
                user = self._session.config.user
                raise EtcdUnavailableError(
                    f"etcd at {url} refused to watch every key to "
                    + (f"user {user!r}" if user else "no user") + f": {reason}",
                    "the journal reads every key: use a user with the root role",
                )
        raise _Failed(f"etcd at {url} cancelled the watch: {reason or 'no reason given'}")


class _Attempt:
    """One Watch call on one member; its request iterator runs on grpc's request thread."""

    def __init__(self, stream: ChangeStream, url: str, connection: Connection) -> None:
        self.url = url
        self.connection = connection
        self.requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stream = stream
        self._call: Any = None
        self._stopped = threading.Event()
        self._silent = False  # cancelled here: the member left a request unanswered
        self._reading_since: float | None = None  # the reader waits for a message since
        self._asked_since: float | None = None  # the oldest request not answered since

    def begin(self, create: Any) -> None:
        """Start the call with its create request."""
        metadata = (*self.connection.metadata, _REQUIRE_LEADER)
        call = self.connection.stub("Watch").Watch(self._requests(create), metadata=metadata)
        self._call = call
        if self._stopped.is_set():  # stopped before the call existed
            call.cancel()

    def stop(self) -> None:
        """Cancel the call and end its request thread (safe to call more than once)."""
        self._stopped.set()
        self.requests.put(_STOP)
        if self._call is not None:
            self._call.cancel()

    def responses(self) -> Iterator[Any]:
        """The call's responses, read on the caller's thread; _Failed when the call fails."""
        grpc = import_grpc()
        while True:
            self._reading_since = time.monotonic()
            try:
                response = next(self._call)
            except StopIteration:
                return
            except grpc.RpcError as exc:
                raise self._failure(exc) from exc
            finally:
                self._reading_since = None
            self._asked_since = None
            yield response

    def _failure(self, exc: Any) -> Exception:
        timeout = self._stream._timeout
        if self._stopped.is_set() and not self._silent:
            return _Failed(f"the watch on etcd at {self.url} was closed")
        if self._silent:
            return _Failed(f"etcd at {self.url} did not answer the watch within {timeout:g}s")
        error = rpc_error(exc, self.url, "the watch", timeout, self._stream._session.config.user)
        if exc.code().name in _FATAL_CODES and not isinstance(error, Unreachable):
            return error  # the same credentials fail on every member
        return _Failed(error.message)

    def _requests(self, create: Any) -> Iterator[Any]:
        etcdrpc = import_etcdrpc()
        stream = self._stream
        self._asked_since = time.monotonic()
        yield create
        next_progress = time.monotonic() + stream._every
        while not self._stopped.is_set():
            try:
                if self.requests.get(timeout=_TICK) is _STOP:
                    return
            except queue.Empty:
                pass
            now = time.monotonic()
            if stream._asked.is_set() or now >= next_progress:
                stream._asked.clear()
                next_progress = now + stream._every
                self._asked_since = self._asked_since or now
                yield etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())
            if self._unanswered(now):
                self._silent = True
                self.stop()
                return

    def _unanswered(self, now: float) -> bool:
        # only while the reader waits: a caller busy with an item leaves messages unread
        reading, asked = self._reading_since, self._asked_since
        if reading is None or asked is None:
            return False
        return now - max(reading, asked) > self._stream._timeout


def _change(event: Any) -> Change:
    kv = event.kv
    return Change(
        kind=ChangeKind.DELETE if event.type == 1 else ChangeKind.PUT,  # mvccpb.Event.DELETE
        key=kv.key,
        value=kv.value,
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )
