"""What a journal run did: the chains it started or resumed, and why, and what each store took
(`etcdops journal run -o json` prints it; the demo and the tests read it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from etcdops.journal.publish import StoreCounts


@dataclass(frozen=True)
class ChainStart:
    """One chain the run started or resumed, and why."""

    base_backup_id: str
    base_revision: int
    from_revision: int  # the first revision this run watched for it
    reason: str  # resumed, base, no-backup, compacted, lag, new-backup, long, restored
    started_at: datetime
    cluster_id: str  # the etcd cluster ID of the base: the history the chain is of


@dataclass
class JournalReport:
    """What a run journaled, per chain and per store, and how it ended."""

    chains: list[ChainStart] = field(default_factory=list)
    segments: int = 0
    revisions: int = 0
    events: int = 0
    last_revision: int | None = None  # the newest revision sealed into a segment
    stores: dict[str, StoreCounts] = field(default_factory=dict)
    unpublished: dict[str, int] = field(default_factory=dict)  # per store, segments it lacks
    waited_for: str | None = None  # the holder of the key this run waited for
    released: str | None = None  # why the key could not be released; None when it was

    def as_dict(self) -> dict[str, object]:
        """The report as `--output json` prints it."""
        doc = asdict(self)
        doc["chains"] = [asdict(c) | {"started_at": c.started_at.isoformat()}
                         for c in self.chains]
        doc["stores"] = {name: counts.as_dict() for name, counts in self.stores.items()}
        return doc
