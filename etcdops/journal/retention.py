"""Which journal chains to keep: a pure function of the backups' decisions, the policy and the
time (no I/O, as etcdops.backup.retention, whose decide() it follows).

- A chain lives as long as the base backup it extends: its segments go exactly when retention
  deletes that backup in the same store, never before (a segment is useless without its base,
  and a base is restorable to every point its chain reaches). retention.decide keeps the base
  of the chain that covers keep_within's start, so every point of the window stays
  restorable; the newest verified backup is never deleted, so neither is its chain.
- A chain whose base backup is not in the store (an orphan: its base was deleted, or never
  reached that store) goes once its newest change is older than keep_within: the base may be
  in another store, whose restore reads segments from every store, and the journal may still
  be writing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from etcdops.backup.retention import Condition, Decision, Reaches
from etcdops.journal.listing import ChainSummary
from etcdops.units import format_duration

# what a backup's manifest in the store makes it (retention.Condition): a base; an object
# without a manifest (incomplete) is not one
_BASES = (Condition.VERIFIED, Condition.UNCHECKED, Condition.DAMAGED)


@dataclass(frozen=True)
class ChainDecision:
    chain: ChainSummary
    keep: bool
    reasons: tuple[str, ...]
    orphan: bool  # its base backup is not in the store: deleted on its own, not with a base

    def as_dict(self) -> dict[str, object]:
        """The chain and the decision, as prune's JSON shows them."""
        return self.chain.as_dict() | {
            "orphan": self.orphan, "action": "keep" if self.keep else "delete",
            "reasons": list(self.reasons),
        }


def reaches(chains: Iterable[ChainSummary]) -> Reaches:
    """Per base backup, until when its chain reaches: what retention.decide weighs."""
    return {c.base_backup_id: c.last_change_at for c in chains if c.segments}


def decide_chains(
    chains: Sequence[ChainSummary], backups: Sequence[Decision], *, keep_within: float,
    now: datetime,
) -> list[ChainDecision]:
    """Keep or delete each chain of a store, given retention's decisions on its backups."""
    decided = {d.candidate.id: d for d in backups if d.candidate.condition in _BASES}
    window = format_duration(keep_within)
    decisions = []
    for chain in sorted(chains, key=lambda c: c.base_backup_id):
        base = decided.get(chain.base_backup_id)
        if base is not None:
            # the base's own reasons are in its decision: one place says why
            why = f"its base backup is {'kept' if base.keep else 'deleted'}"
            decisions.append(ChainDecision(chain, base.keep, (why,), orphan=False))
            continue
        orphan = "its base backup is not in this store"
        newest = chain.last_change_at
        if newest > now:
            keep, why = True, f"{orphan}, but its newest change is after 'now': kept"
        elif now - newest <= timedelta(seconds=keep_within):
            keep, why = True, f"{orphan}; its newest change is within keep_within ({window})"
        else:
            keep, why = False, f"{orphan}, and its newest change is older than {window}"
        decisions.append(ChainDecision(chain, keep, (why,), orphan=True))
    return decisions
