"""`maintain`: compaction, then defragmentation in its window; the timer's and the daemon's job.

Run often (every minute), it keeps `[compaction] retain` of history; inside the off-peak window
(or forced) it then defragments the members that need it. The compaction is not waited for on
disk here: it is applied member by member, so defragmentation waits for each member itself,
just before that member's turn (maintenance/defrag.py), and a run outside the window waits for
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from etcdops.config import Config
from etcdops.etcd.session import EtcdSession
from etcdops.maintenance.compaction import CompactionResult, compact
from etcdops.maintenance.defrag import DefragReport, defragment_cluster
from etcdops.report import Reporter


@dataclass(frozen=True)
class MaintainResult:
    """What the compaction and the defragmentation of one run decided and did."""

    compaction: CompactionResult
    defrag: DefragReport

    def as_dict(self) -> dict[str, object]:
        """The result as `--output json` prints it."""
        return {"compaction": self.compaction.as_dict(), "defrag": self.defrag.as_dict()}


def maintain(
    config: Config,
    reporter: Reporter,
    *,
    force: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> MaintainResult:
    """Compact, then defragment in the window (or forced); EtcdUnavailableError at a problem."""
    with EtcdSession(config.etcd) as session:
        compaction = compact(session, config.compaction, dry_run=dry_run, metrics=config)
        defrag = defragment_cluster(
            session, config, reporter, now=now or datetime.now(UTC), force=force,
            dry_run=dry_run,
        )
    return MaintainResult(compaction, defrag)
