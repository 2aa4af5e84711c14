"""Durations ("5m", "1h30m") and sizes ("200MiB", "8GB") as operators write them."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_FACTORS = {
    "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4,
}


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration such as "90s", "5m", "1h30m" or a bare number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as '5m', got {text!r}")
    spec = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", spec):
        return float(spec)
    parts = _DURATION_PART.findall(spec)
    if not parts or "".join(n + u for n, u in parts) != spec:
        raise ValueError(f"expected a duration such as '90s', '5m' or '1h30m', got {text!r}")
    return sum(float(n) * _DURATION_SECONDS[u] for n, u in parts)


def parse_size(text: str | int) -> int:
    """Bytes in a size such as "200MiB", "8GB" or a bare number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a size such as '200MiB', got {text!r}")
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expected a size such as '200MiB' or '8GB', got {text!r}")
    number, unit = match.groups()
    return int(float(number) * _SIZE_FACTORS[(unit or "B").upper()])


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
