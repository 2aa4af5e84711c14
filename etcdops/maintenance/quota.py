"""The quota rules, one home each: the quota a member is held to, when its database is above a
share of it, and which alarms and status errors are NOSPACE (what a full quota raises).

etcd measures the quota against the db file's size, free pages included (as etcd-defrag does), so
the share rule takes db_size, never the size in use.
"""

from __future__ import annotations

from collections.abc import Iterable

from etcdops.etcd.maintenance import NOSPACE, Alarm
from etcdops.etcd.metrics_page import QUOTA, MetricsPage
from etcdops.units import format_size

# etcd 3.5 also lists each raised alarm among a member's status errors, as "...alarm:NOSPACE"
_NOSPACE_STATUS_ERROR = "alarm:" + NOSPACE


def effective_quota(page: MetricsPage | None, configured: int) -> int:
    """The quota a member is held to: its own --quota-backend-bytes when lower than configured."""
    reported = page.gauge(QUOTA) if page is not None else None
    return min(configured, int(reported)) if reported else configured


def above_share(db_size: int, quota: int, percent: int) -> bool:
    """Whether a database of db_size bytes is above percent % of quota (exact, no rounding)."""
    return db_size * 100 > quota * percent


def share_text(percent: int, quota: int) -> str:
    """The share as reports name it: '80% of quota 8.0 GiB'."""
    return f"{percent}% of quota {format_size(quota)}"


def nospace_alarms(alarms: Iterable[Alarm]) -> list[Alarm]:
    """The NOSPACE alarms among alarms: etcd refuses writes while one is raised."""
    return [alarm for alarm in alarms if alarm.nospace]


def is_nospace_error(error: str) -> bool:
    """Whether a member's status error is its NOSPACE alarm (which maintenance repairs)."""
    return _NOSPACE_STATUS_ERROR in error
