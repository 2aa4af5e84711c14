"""The off-peak window: whether a wall-clock moment in a named timezone falls inside it.

Defragmentation blocks each member while it runs, so it waits for low traffic. The window is the
operator's wall-clock hours ("02:00-05:00") in a named zone: the decision converts the moment to
that zone and compares clock times, so a DST change moves nothing, and "22:00-02:00" runs across
midnight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etcdops.errors import ConfigError

_WINDOW = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


@dataclass(frozen=True)
class Window:
    start: time
    end: time
    zone: ZoneInfo

    def contains(self, moment: datetime) -> bool:
        """Whether an aware moment is inside the window, judged by the zone's wall clock."""
        if moment.tzinfo is None:
            raise ValueError("the moment must carry a timezone")
        clock = moment.astimezone(self.zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end  # across midnight

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.zone.key}"


def parse_window(spec: str, timezone: str) -> Window:
    """The window of `[defrag] window` and `timezone`; ConfigError naming the key if invalid."""
    match = _WINDOW.fullmatch(spec)
    if not match:
        raise ConfigError(
            f"invalid [defrag] window {spec!r}",
            'write it as "HH:MM-HH:MM", for example "02:00-05:00" or "22:00-02:00"',
        )
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    try:
        start, end = time(start_h, start_m), time(end_h, end_m)
    except ValueError as exc:
        raise ConfigError(
            f"invalid [defrag] window {spec!r}: {exc}", "hours run 00-23, minutes 00-59"
        ) from exc
    if start == end:
        raise ConfigError(
            f"[defrag] window {spec!r} starts where it ends",
            "give a window with distinct start and end (use --force to run outside it)",
        )
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown [defrag] timezone {timezone!r}",
            'use an IANA zone name such as "UTC" or "Europe/Berlin"',
        ) from exc
    return Window(start, end, zone)
