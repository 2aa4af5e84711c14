import pytest

from etcdops.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("24h", 86400), ("1h30m", 5400), ("90s", 90), ("250ms", 0.25), ("2d", 172800),
     ("45", 45), (10, 10), (1.5, 1.5)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "5x", "-5m", "1h 30m", True, [5], -1])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("200MiB", 200 * 2**20), ("8GB", 8 * 10**9), ("1.5GiB", int(1.5 * 2**30)), ("512", 512),
     (4096, 4096), ("10 kib", 10240)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", False, -3])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_formats_read_naturally():
    assert format_size(512) == "512 B"
    assert format_size(3 * 2**20) == "3.0 MiB"
    assert format_size(5 * 2**40) == "5120.0 GiB"
    assert format_duration(0.012) == "12ms"
    assert format_duration(42.25) == "42.2s"
    assert format_duration(600) == "10m00s"
    assert format_duration(3 * 3600 + 60) == "3h01m"


@pytest.mark.parametrize(
    "text", ["99999999999h", "9" * 400, "9" * 400 + "d", float("inf"), float("nan"), 10**400]
)
def test_parse_duration_rejects_what_no_clock_can_wait_for(text):
    with pytest.raises(ValueError, match="at most 36500d|expected"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["9" * 400, "9" * 400 + "TiB", "2EiB", "1e30", 2**70, 10**400])
def test_parse_size_rejects_absurd_sizes_cleanly(text):
    with pytest.raises(ValueError):
        parse_size(text)
