"""The off-peak window decision: wall-clock hours in a named timezone, across midnight, DST."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from etcdops.errors import ConfigError
from etcdops.maintenance.window import parse_window


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


CASES = [
    # window, zone, moment (UTC), inside?
    ("02:00-05:00", "UTC", "2026-01-15T03:00", True),
    ("02:00-05:00", "UTC", "2026-01-15T02:00", True),  # the start is inside
    ("02:00-05:00", "UTC", "2026-01-15T04:59:59", True),
    ("02:00-05:00", "UTC", "2026-01-15T05:00", False),  # the end is not
    ("02:00-05:00", "UTC", "2026-01-15T01:59:59", False),
    ("02:00-05:00", "UTC", "2026-01-15T14:00", False),
    # across midnight
    ("22:00-02:00", "UTC", "2026-01-15T23:30", True),
    ("22:00-02:00", "UTC", "2026-01-15T00:00", True),
    ("22:00-02:00", "UTC", "2026-01-15T01:59", True),
    ("22:00-02:00", "UTC", "2026-01-15T02:00", False),
    ("22:00-02:00", "UTC", "2026-01-15T21:59", False),
    ("22:00-02:00", "UTC", "2026-01-15T12:00", False),
    # another zone: 02:30 in Berlin is 01:30Z in winter (CET) and 00:30Z in summer (CEST)
    ("02:00-05:00", "Europe/Berlin", "2026-01-15T01:30", True),
    ("02:00-05:00", "Europe/Berlin", "2026-07-15T00:30", True),
    ("02:00-05:00", "Europe/Berlin", "2026-07-15T03:30", False),  # inside in UTC, not there
    ("02:00-05:00", "Asia/Kolkata", "2026-01-15T21:00", True),  # 02:30 at +05:30
    ("02:00-05:00", "Asia/Kolkata", "2026-01-15T03:00", False),  # 08:30 there
    # DST changes do not matter: the wall clock decides. New York springs forward at 02:00 on
    # 8 March 2026 (02:00-03:00 does not exist) and falls back at 02:00 on 1 November 2026.
    ("02:00-05:00", "America/New_York", "2026-03-08T06:59", False),  # 01:59 EST
    ("02:00-05:00", "America/New_York", "2026-03-08T07:30", True),  # 03:30 EDT
    ("02:00-05:00", "America/New_York", "2026-03-08T09:00", False),  # 05:00 EDT
    ("02:00-05:00", "America/New_York", "2026-11-01T05:30", False),  # 01:30 EDT
    ("02:00-05:00", "America/New_York", "2026-11-01T06:30", False),  # 01:30 EST, again
    ("02:00-05:00", "America/New_York", "2026-11-01T07:30", True),  # 02:30 EST
]


@pytest.mark.parametrize(("spec", "zone", "moment", "inside"), CASES)
def test_window_contains(spec: str, zone: str, moment: str, inside: bool) -> None:
    assert parse_window(spec, zone).contains(utc(moment)) is inside


def test_the_offset_of_the_moment_itself_does_not_matter() -> None:
    window = parse_window("02:00-05:00", "UTC")
    moment = datetime(2026, 1, 15, 5, 30, tzinfo=timezone(timedelta(hours=2)))  # 03:30Z
    assert window.contains(moment)


def test_a_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        parse_window("02:00-05:00", "UTC").contains(datetime(2026, 1, 15, 3, 0))


@pytest.mark.parametrize(
    ("spec", "zone", "message"),
    [
        ("2-5", "UTC", "invalid [defrag] window"),
        ("02:00", "UTC", "invalid [defrag] window"),
        ("25:00-03:00", "UTC", "invalid [defrag] window"),
        ("02:61-03:00", "UTC", "invalid [defrag] window"),
        ("02:00-02:00", "UTC", "starts where it ends"),
        ("02:00-05:00", "Mars/Olympus_Mons", "unknown [defrag] timezone"),
        ("02:00-05:00", "../../etc/passwd", "unknown [defrag] timezone"),
    ],
)
def test_invalid_windows_are_configuration_errors(spec: str, zone: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_window(spec, zone)


def test_the_window_names_itself() -> None:
    assert str(parse_window(" 22:00 - 02:30 ", "Europe/Berlin")) == "22:00-02:30 Europe/Berlin"
