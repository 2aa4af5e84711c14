"""What a chain of segments proves: a pure function of one base backup's segment manifests.

No I/O here (like etcdops.backup.retention), so the rules can be tested case by case and
shown exactly as a restore applies them:
- the window starts at the base backup's revision and reaches as far as the segments cover
  every revision after it: revisions are consecutive (etcdops.journal.segment), so a revision
  in no segment is a change lost, a hole, and nothing after the first hole is provable;
- revisions held by two segments (or by the base backup and a segment) are an overlap: said,
  but not fatal, since etcd's history does not change and every correct copy of a revision
  holds the same changes; a replay applies each revision once, from the first segment of the
  path that holds it;
- a manifest of another chain, given by mistake or found in the wrong folder, is left out.
The segments may be manifests, or segments known from their keys alone (a listing names their
revisions: etcdops.journal.listing), whose window is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar


class Kind(StrEnum):
    HOLE = "hole"  # revisions in no segment: the chain stops proving at the first
    OVERLAP = "overlap"  # revisions in two places
    FOREIGN = "foreign"  # a segment of another chain


@dataclass(frozen=True)
class Finding:
    kind: Kind
    first_revision: int
    last_revision: int
    reason: str


class Span(Protocol):
    """What a window is made of: a segment's chain, revisions and key, and when the journal
    saw its last change (None when that is not known, as from a listing of keys)."""

    @property
    def base_backup_id(self) -> str: ...
    @property
    def first_revision(self) -> int: ...
    @property
    def last_revision(self) -> int: ...
    @property
    def object_key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def last_change_at(self) -> datetime | None: ...


S = TypeVar("S", bound=Span)


@dataclass(frozen=True)
class ChainWindow(Generic[S]):
    base_backup_id: str
    base_revision: int
    # the newest revision the chain proves: every one from base_revision + 1 to it is in path
    last_revision: int
    # when the journal saw last_revision's change; None when only the base is provable
    last_change_at: datetime | None
    path: tuple[S, ...]  # the segments a replay reads, in order
    findings: tuple[Finding, ...]

    @property
    def holes(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind is Kind.HOLE)

    @property
    def complete(self) -> bool:
        """Whether every segment given extends the window (no hole cut it short)."""
        return not self.holes


def window(base_backup_id: str, base_revision: int, manifests: Sequence[S]) -> ChainWindow[S]:
    """The provable window of one base backup's chain, with every hole and overlap found."""
    findings: list[Finding] = []
    ours: list[S] = []
    for manifest in manifests:
        if manifest.base_backup_id == base_backup_id:
            ours.append(manifest)
        else:
            findings.append(Finding(
                Kind.FOREIGN, manifest.first_revision, manifest.last_revision,
                f"{manifest.name} extends another backup than {base_backup_id}: left out",
            ))
    # by first revision, the longest first: a segment inside another adds nothing to the path
    ours.sort(key=lambda m: (m.first_revision, -m.last_revision, m.object_key))
    reach, holder = base_revision, f"the base backup {base_backup_id}"
    path: list[S] = []
    cut = False  # a hole was found: nothing after it is provable
    for segment in ours:
        first, last = segment.first_revision, segment.last_revision
        if last <= reach:
            where = f"the base backup {base_backup_id}" if last <= base_revision else holder
            findings.append(Finding(
                Kind.OVERLAP, first, last,
                f"{segment.name} holds only revisions {first} to {last}, already in {where}",
            ))
            continue
        if first <= reach:
            findings.append(Finding(
                Kind.OVERLAP, first, reach,
                f"revisions {first} to {reach} are in both {holder} and {segment.name}",
            ))
        elif first > reach + 1:
            findings.append(Finding(
                Kind.HOLE, reach + 1, first - 1,
                f"no segment holds revisions {reach + 1} to {first - 1}, between {holder} "
                f"and {segment.name}",
            ))
            cut = True
        if not cut:
            path.append(segment)
        reach, holder = last, segment.name
    end = path[-1].last_revision if path else base_revision
    return ChainWindow(
        base_backup_id=base_backup_id,
        base_revision=base_revision,
        last_revision=end,
        last_change_at=path[-1].last_change_at if path else None,
        path=tuple(path),
        findings=tuple(findings),
    )
