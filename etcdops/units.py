"""Durations ("5m", "1h30m") and sizes ("200MiB", "8GB") as operators write them."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_FACTORS = {
    "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4,
}
# Ceilings on what a duration or a size can be at all, so that an absurd value is a clean
# ValueError here rather than an OverflowError or MemoryError wherever it is used (a timedelta,
# a grpc deadline, a buffer); each setting's own range is narrower (config.py).
MAX_DURATION = 36500 * 86400.0  # 100 years, below threading.TIMEOUT_MAX
MAX_SIZE = 1024**5  # 1 PiB


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration such as "90s", "5m", "1h30m" or a bare number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        seconds = float(min(text, 2 * MAX_DURATION))  # float() of a huge int would overflow
    elif not isinstance(text, str):
        raise ValueError(f"expected a duration such as '5m', got {text!r}")
    else:
        spec = text.strip().lower()
        parts = _DURATION_PART.findall(spec)
        if re.fullmatch(r"\d+(\.\d+)?", spec):
            seconds = float(spec)
        elif not parts or "".join(n + u for n, u in parts) != spec:
            raise ValueError(f"expected a duration such as '90s', '5m' or '1h30m', got {text!r}")
        else:
            seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in parts)
    if not seconds <= MAX_DURATION:  # also NaN, which compares false with everything
        raise ValueError(f"expected a duration of at most 36500d (100 years), got {text!r}")
    return seconds


def parse_size(text: str | int) -> int:
    """Bytes in a size such as "200MiB", "8GB" or a bare number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        size = float(min(text, 2 * MAX_SIZE))  # float() of a huge int would overflow
    elif not isinstance(text, str):
        raise ValueError(f"expected a size such as '200MiB', got {text!r}")
    else:
        match = _SIZE.fullmatch(text.strip())
        if not match:
            raise ValueError(f"expected a size such as '200MiB' or '8GB', got {text!r}")
        number, unit = match.groups()
        size = float(number) * _SIZE_FACTORS[(unit or "B").upper()]
    if not math.isfinite(size) or size > MAX_SIZE:
        raise ValueError(f"expected a size of at most 1PiB, got {text!r}")
    return int(text) if isinstance(text, int) else int(size)


def format_size(size: int) -> str:
    """A byte count the way an operator reads it (binary units)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """A duration the way an operator reads it."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
