"""Which backups to keep: a pure function of the catalogue, the policy and the time.

No I/O here, so the policy can be tested case by case and shown with --dry-run exactly as it
will be applied. The rules, in order of strength:
- never delete a backup that claims to be from the future (a skewed clock must not prune);
- never delete the newest verified backup, and keep the keep_min newest verified ones;
- keep everything taken within keep_within (the seed's 24 hours);
- keep the newest verified backup taken before keep_within began when what extends it (its
  journal chain) reaches into keep_within: it is the base that makes the window's first moments
  restorable;
- anything else goes: older verified backups, unchecked and damaged ones, incomplete leftovers.

Only a backup whose bytes were checked counts as verified. Which unchecked backups deserve a
check before anything is deleted is a policy question too (worth_confirming); doing the checks
is prune's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from etcdops.units import format_duration

# per backup id, the latest moment what extends the backup (its journal chain) reaches
Reaches = Mapping[str, datetime]


class Condition(StrEnum):
    VERIFIED = "verified"  # its bytes were checked against the manifest and have not changed
    UNCHECKED = "unchecked"  # complete, but its bytes changed since checked, or never were
    DAMAGED = "damaged"  # object missing, wrong size or bytes; or a manifest that cannot be trusted
    INCOMPLETE = "incomplete"  # object without a manifest: an interrupted save
    UNFINISHED = "unfinished"  # a write never committed nor aborted: a save killed mid-write


@dataclass(frozen=True)
class Candidate:
    id: str
    created_at: datetime
    condition: Condition
    detail: str | None = None  # what is wrong with it, or how it was confirmed


@dataclass(frozen=True)
class Decision:
    candidate: Candidate
    keep: bool
    reasons: tuple[str, ...]


def _oldest_first(candidates: Sequence[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.created_at, c.id))


def worth_confirming(
    candidates: Sequence[Candidate], keep_min: int, *, reaches: Reaches | None = None,
    window_start: datetime | None = None,
) -> list[Candidate]:
    """The backups decide() would protect if every unchecked one proved good, newest first:
    the ones whose bytes to check before deleting anything, so that a backup that fails its
    check gives its place to an older one rather than leaving fewer good backups kept. With
    reaches and window_start, the base whose chain covers the window's start is one of them."""
    eligible = [
        c for c in _oldest_first(candidates)
        if c.condition in (Condition.VERIFIED, Condition.UNCHECKED)
    ]
    worth = eligible[::-1][:max(keep_min, 1)]
    if window_start is not None:
        base = _covering_base(eligible, reaches or {}, window_start)
        if base is not None and base not in worth:
            worth.append(base)
    return worth


def _covering_base(
    oldest_first: Sequence[Candidate], reaches: Reaches, window_start: datetime
) -> Candidate | None:
    """The newest of these taken before the window started whose chain reaches into the window:
    without it, the window's first moments could not be restored. A newer one before the start
    whose chain does not reach it (no chain: a backup the journal never switched to, or one its
    chain ended before) restores none of those moments, so it does not stand in."""
    for candidate in reversed(oldest_first):
        if candidate.created_at >= window_start:
            continue
        if (reach := reaches.get(candidate.id)) is not None and reach >= window_start:
            return candidate
    return None


def decide(
    candidates: Sequence[Candidate], *, keep_within: float, keep_min: int, now: datetime,
    reaches: Reaches | None = None,
) -> list[Decision]:
    """Keep or delete each candidate, with every reason that applies, oldest first. reaches:
    per backup, until when its journal chain reaches (none: the backup has no chain)."""
    ordered = _oldest_first(candidates)
    verified = [c for c in ordered if c.condition is Condition.VERIFIED]
    newest_verified = verified[-1] if verified else None
    protected = set(c.id for c in verified[-keep_min:]) if keep_min > 0 else set()
    window = timedelta(seconds=keep_within)
    covering = _covering_base(verified, reaches or {}, now - window)
    decisions = []
    for candidate in ordered:
        age = now - candidate.created_at
        keep_reasons = []
        if candidate.created_at > now:
            keep_reasons.append("taken after 'now': the clocks disagree, so it is kept")
        how = f" ({candidate.detail})" if candidate.detail else ""
        if candidate is newest_verified:
            keep_reasons.append(f"the newest verified backup{how}")
        elif candidate.id in protected:
            keep_reasons.append(f"one of the {keep_min} newest verified backups (keep_min){how}")
        if timedelta(0) <= age <= window:
            keep_reasons.append(f"within keep_within ({format_duration(keep_within)})")
        if candidate is covering:
            assert reaches is not None
            reach = format_duration(max((now - reaches[candidate.id]).total_seconds(), 0.0))
            keep_reasons.append(
                f"base of the chain that covers the window's start (the chain reaches until "
                f"{reach} ago, the window starts {format_duration(keep_within)} ago)"
            )
        if keep_reasons:
            decisions.append(Decision(candidate, True, tuple(keep_reasons)))
            continue
        if candidate.condition is Condition.VERIFIED:
            why = f"older than keep_within ({format_duration(keep_within)}) and not protected"
        else:
            why = f"{candidate.condition.value}{how} and older than {format_duration(keep_within)}"
        decisions.append(Decision(candidate, False, (why,)))
    return decisions
