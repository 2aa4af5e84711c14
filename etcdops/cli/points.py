"""The options that name a point in time (`restore`, `dr run`: one wording of each), and the
PointTarget they make (`snapshot verify --drill --at` too)."""

from typing import Any

import typer

_AT = ("Restore the cluster as it was at TIME (ISO 8601 with a zone, e.g. 2026-11-25T09:13:00Z): "
       "the newest backup before it and the journal replayed up to the last segment that ended "
       "by then (precision: one [journal] interval)")
_REVISION = ("Restore the cluster as it was at etcd revision N: the newest backup at or below "
             "it and the journal replayed up to N")
_ALLOW_GAP = ("A hole in the journal (a segment in no store, or unreadable in every one): "
              "restore to the last revision before it, with a warning, instead of refusing")


def at_option(default: str = "") -> Any:
    """--at TIME; default, when given, says what its absence means ("[default: ...]")."""
    return typer.Option("--at", help=" ".join(filter(None, [_AT + ".", default])),
                        show_default=False)


def revision_option() -> Any:
    """--revision N."""
    return typer.Option("--revision", min=1, help=_REVISION + ".", show_default=False)


def allow_gap_option(default: str = "") -> Any:
    """--allow-gap; default as for at_option."""
    return typer.Option("--allow-gap", help=" ".join(filter(None, [_ALLOW_GAP + ".", default])))


def point_target(at: str | None, revision: int | None) -> Any:
    """The point in time --at/--revision name, or None; UsageError for a TIME that is none."""
    if at is None and revision is None:
        return None
    from datetime import datetime

    from etcdops.errors import UsageError
    from etcdops.restore.point_plan import PointTarget

    moment = None
    if at is not None:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            raise UsageError(f"--at {at!r} is not a time",
                             "give ISO 8601 with a zone, e.g. 2026-11-25T09:13:00Z") from None
    return PointTarget(revision=revision, at=moment)
