"""How journal chains are shown: `snapshot list`'s windows and gaps, `snapshot prune`'s chains,
a line each however many segments they hold."""

from datetime import datetime
from typing import Any

from etcdops.units import format_duration

WINDOW_COLUMNS = ["base", "restores (ago)", "revisions", "segments", "note"]


def window_rows(journaled: Any, since: Any) -> list[list[Any]]:
    """One row per chain (oldest first), and one per gap where it lies between them."""
    gaps = {gap.after: gap for gap in journaled.gaps}
    rows = []
    for base, chain in sorted(journaled.chains.items(),
                              key=lambda item: item[1].base_created_at):
        found = chain.window
        holes = found.holes
        note = (f"hole: revisions {holes[0].first_revision}-{holes[0].last_revision} in no "
                "store" if holes else "")
        until = since(chain.last_change_at) if chain.last_change_at else "the base only"
        rows.append([base, f"{since(chain.base_created_at)} to {until}",
                     f"{found.base_revision}-{found.last_revision}", len(found.path), note])
        if gap := gaps.get(base):
            rows.append(["(gap)", f"{since(gap.since)} to {since(gap.until)}",
                         f"{gap.first_revision}-{gap.last_revision}", "",
                         "in no chain: not restorable"])
    return rows


CHAIN_COLUMNS = ["chain", "segments", "revisions", "changes", "action", "why"]


def chain_cells(chain: Any, now: datetime) -> list[Any]:
    """A chain in one line, however many segments: its base, count, revisions, and how old its
    changes are (as of prune's 'now')."""
    segments = chain.segments
    if not segments:
        return [chain.base_backup_id, 0, "", ""]
    revisions = f"{segments[0].first_revision}-{max(s.last_revision for s in segments)}"
    if chain.holes:
        revisions += f" (hole after {chain.window.last_revision})"

    def age(moment: datetime | None) -> str:
        return format_duration((now - moment).total_seconds()) if moment else "?"

    return [chain.base_backup_id, len(segments), revisions,
            f"{age(chain.first_change_at)} to {age(chain.last_change_at)} old"]
