"""The plain format of a journal segment: etcd's changes over a run of revisions.

A segment is UTF-8 text, one record per line, each line ending in "\\n":

etcdops-journal/1
{"create_revision":12,"key":"L3JlZ2lzdHJ5L2E=","lease":0,"revision":12,"type":"put","value":"eA==","version":1}
{"key":"L3JlZ2lzdHJ5L2I=","revision":13,"type":"delete"}

The first line names the format and its version; a reader refuses any other. Every later line
is one JSON object, one change, with exactly these members:

- "revision": the change's mod revision, the revision of the transaction that made it;
- "type": "put" or "delete";
- "key": the key's bytes, base64 (RFC 4648, padded);
- for a put only: "value" (base64, "" for an empty value), "create_revision", "version" and
  "lease" (the lease id, 0 for none), as etcd's watch reports them.

Lines are in revision order; the changes of one revision (one transaction: its puts and deletes
together) are adjacent, in the order etcd's watch gave them, and a revision never spans two
segments. Revisions are consecutive: etcd adds a revision only for a write that changes at least
one key, and the journal watches every key, so a revision missing from the sequence is a change
lost. A segment holds at least one revision.

Why this and not etcd's protobuf: it is read with `jq` and `base64 -d` by an operator who has
nothing but `age -d | zstd -d`, needs no schema compiler, and is defined in this docstring. Its
overhead (base64, repeated member names) is what zstd takes away: the stored segment is
compressed. A segment is small (seconds of changes), so it is built and read whole in memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

from etcdops.errors import IntegrityError
from etcdops.etcd.watch import Change, ChangeKind, Revision

FORMAT = "etcdops-journal/1"
HEADER = FORMAT.encode() + b"\n"
PUT, DELETE = ChangeKind.PUT.value, ChangeKind.DELETE.value
_DELETE_MEMBERS = frozenset({"revision", "type", "key"})
_PUT_MEMBERS = _DELETE_MEMBERS | {"value", "create_revision", "version", "lease"}
_NUMBERS = ("revision", "create_revision", "version", "lease")
_INT64_MAX = (1 << 63) - 1


def _kind(change: Change) -> str:
    if not isinstance(change.kind, ChangeKind):
        raise ValueError(f"a change is a put or a delete, not {change.kind!r}")
    return change.kind.value


def _change_problem(kind: str, revision: int, create: int, version: int, lease: int) -> str | None:
    """What makes a put impossible in etcd, or None."""
    if kind == DELETE:
        return None
    if not 1 <= create <= revision:
        return f"create_revision {create} is not between 1 and its revision"
    if version < 1 or (version == 1) != (create == revision):
        return f"version {version} does not fit create_revision {create}"
    if not 0 <= lease <= _INT64_MAX:
        return f"lease {lease} is not an etcd lease id"
    return None


def _revision_problem(
    revision: int, span: tuple[int, int] | None, keys: Sequence[bytes]
) -> str | None:
    """What makes a revision impossible after the span of revisions before it, or None."""
    if span is not None and revision != span[1] + 1:
        first, previous = span
        if first <= revision <= previous:
            return f"revision {revision} is split: it comes again after revision {previous}"
        if revision < first:
            return f"revision {revision} is out of order after revision {previous}"
        missing = (f"revision {previous + 1} is" if revision == previous + 2
                   else f"revisions {previous + 1} to {revision - 1} are")
        return f"{missing} missing (after {previous})"
    if revision < 1:
        return f"revision {revision} is not an etcd revision"
    if not keys:
        return f"revision {revision} has no changes"
    if len(set(keys)) != len(keys):
        # etcd refuses a transaction that writes one key twice
        return f"revision {revision} changes one key twice"
    return None


def _encode_change(revision: int, change: Change) -> bytes:
    kind = _kind(change)
    if change.mod_revision != revision:
        raise ValueError(f"a change at mod revision {change.mod_revision} in revision {revision}")
    problem = _change_problem(
        kind, revision, change.create_revision, change.version, change.lease
    )
    if problem:
        raise ValueError(f"revision {revision}: {problem}")
    record: dict[str, object] = {
        "revision": revision, "type": kind, "key": base64.b64encode(change.key).decode()
    }
    if kind == PUT:
        record |= {
            "value": base64.b64encode(change.value).decode(),
            "create_revision": change.create_revision,
            "version": change.version,
            "lease": change.lease,
        }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


class SegmentBuffer:
    """The segment being filled, a revision at a time, with what its manifest says of it.

    add() refuses what the format forbids (a revision out of order, split, or after a gap; a
    change etcd cannot make), so a bad segment is never written. ValueError: the caller's bug.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._lines = io.BytesIO()
        self._lines.write(HEADER)
        self.first_revision: int | None = None
        self.last_revision: int | None = None
        self.revisions = 0
        self.events = 0
        # when the journal saw its first and last change: the segment's time span
        self.first_seen: datetime | None = None
        self.last_seen: datetime | None = None

    def add(self, revision: Revision) -> None:
        """Append one revision's changes, in the order etcd gave them."""
        changes = list(revision.changes)
        span = None
        if self.first_revision is not None and self.last_revision is not None:
            span = (self.first_revision, self.last_revision)
        problem = _revision_problem(revision.revision, span, [change.key for change in changes])
        if problem:
            raise ValueError(problem)
        lines = b"".join(_encode_change(revision.revision, change) for change in changes)
        self._lines.write(lines)
        seen = self._clock()
        if self.first_revision is None:
            self.first_revision, self.first_seen = revision.revision, seen
        self.last_revision, self.last_seen = revision.revision, seen
        self.revisions += 1
        self.events += len(changes)

    @property
    def size(self) -> int:
        """The plain bytes so far: what a cut at max_bytes measures."""
        return self._lines.tell()

    def data(self) -> bytes:
        """The plain segment; a segment holds at least one revision."""
        if self.first_revision is None:
            raise ValueError("an empty segment is never written")
        return self._lines.getvalue()


def encode(revisions: Iterable[Revision]) -> bytes:
    """The plain segment of these revisions (in order, consecutive)."""
    buffer = SegmentBuffer()
    for revision in revisions:
        buffer.add(revision)
    return buffer.data()


def decode(data: bytes | Iterable[bytes], source: str) -> Iterator[Revision]:
    """The revisions of a plain segment, each with its changes, checked as strictly as they
    were written; IntegrityError names source and the line at the first problem."""
    lines = iter(io.BytesIO(data) if isinstance(data, bytes) else data)
    first = next(lines, b"")
    if first != HEADER:
        shown = first[:40].decode(errors="replace").rstrip("\n")
        raise _damaged(source, 1, f"the first line is {shown!r}, not {FORMAT!r}")
    group: list[Change] = []
    span: tuple[int, int] | None = None
    number = 1
    for number, line in enumerate(lines, start=2):
        change = _decode_line(line, source, number)
        if group and change.mod_revision != group[0].mod_revision:
            span = _checked(group, span, source, number - 1)
            yield Revision(span[1], tuple(group))
            group = []
        group.append(change)
    if not group:
        raise _damaged(source, number, "it holds no change")
    yield Revision(_checked(group, span, source, number)[1], tuple(group))


def _checked(
    group: list[Change], span: tuple[int, int] | None, source: str, number: int
) -> tuple[int, int]:
    """The span of revisions read so far, with group's (ending at line number) checked."""
    revision = group[0].mod_revision
    if problem := _revision_problem(revision, span, [change.key for change in group]):
        raise _damaged(source, number, problem)
    return (span[0] if span else revision, revision)


def _decode_line(line: bytes, source: str, number: int) -> Change:
    if not line.endswith(b"\n"):
        raise _damaged(source, number, "the last line is cut short")
    try:
        record = json.loads(line, object_pairs_hook=_unique_members)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        kind = record.get("type")
        members = {PUT: _PUT_MEMBERS, DELETE: _DELETE_MEMBERS}.get(kind)
        if members is None:
            raise ValueError(f"type {kind!r} is neither put nor delete")
        if set(record) != members:
            raise ValueError(f"a {kind} has the members {sorted(members)}, not {sorted(record)}")
        numbers = [record.get(name, 0) for name in _NUMBERS]
        if not all(type(value) is int for value in numbers):
            raise ValueError("revisions, version and lease are integers")
        revision, create, version, lease = numbers
        if problem := _change_problem(kind, revision, create, version, lease):
            raise ValueError(problem)
        key = base64.b64decode(record["key"], validate=True)
        value = base64.b64decode(record.get("value", ""), validate=True)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise _damaged(source, number, str(exc)) from exc
    return Change(ChangeKind(kind), key, value, create, revision, version, lease)


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads keeps the last of two equal members: a line that says two things is damage
    record = dict(pairs)
    if len(record) != len(pairs):
        raise ValueError("a member is given twice")
    return record


def _damaged(source: str, number: int, problem: str) -> IntegrityError:
    return IntegrityError(
        f"{source} is not a valid journal segment: line {number}: {problem}",
        "this copy of the segment is damaged; read it from another store",
    )
