"""etcd's /metrics page: quantiles from histogram buckets, gauges, and reading a real page."""

import math
import re
import urllib.request

import pytest

from etcdops.config import EtcdConfig
from etcdops.errors import EtcdUnavailableError
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.metrics_page import (
    BACKEND_COMMIT,
    COMPACTION,
    QUOTA,
    WAL_FSYNC,
    MetricsPage,
    Quantile,
    estimate_quantile,
    fetch_page,
    metrics_url,
)
from etcdops.maintenance.quota import effective_quota

INF = math.inf

# --- quantiles from buckets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        # rank 99 of 100 falls in (0.002, 0.004] holding ranks 51..100: 49/50 of the way up
        ([(0.001, 0), (0.002, 50), (0.004, 100), (INF, 100)], 0.99, Quantile(0.00396, 100, False)),
        # the median at the top of the first bucket, interpolated from 0
        ([(0.001, 50), (0.002, 100), (INF, 100)], 0.5, Quantile(0.001, 100, False)),
        ([(0.001, 100), (INF, 100)], 0.99, Quantile(0.00099, 100, False)),
        # empty buckets below the rank are skipped; the lower bound is the previous bound
        ([(1, 0), (2, 0), (4, 0), (8, 10), (INF, 10)], 0.5, Quantile(6.0, 10, False)),
        # beyond the last finite bound all that is known is "more than 8"
        ([(1, 0), (8, 90), (INF, 100)], 0.99, Quantile(8.0, 100, True)),
    ],
)
def test_estimate_quantile(buckets, q, expected) -> None:
    estimate = estimate_quantile(buckets, q)
    assert estimate is not None
    assert estimate.value == pytest.approx(expected.value)
    assert estimate.count == expected.count
    assert estimate.above_last_bucket is expected.above_last_bucket


def test_no_observations_is_no_estimate() -> None:
    assert estimate_quantile([(0.1, 0), (INF, 0)], 0.99) is None
    assert estimate_quantile([], 0.99) is None


EXPOSITION = """\
# HELP demo_seconds A histogram.
# TYPE demo_seconds histogram
demo_seconds_bucket{le="0.001"} 10
demo_seconds_bucket{le="0.002"} 60
demo_seconds_bucket{le="0.004"} 110
demo_seconds_bucket{le="+Inf"} 110
demo_seconds_sum 0.2
demo_seconds_count 110
# HELP demo_bytes A gauge.
# TYPE demo_bytes gauge
demo_bytes 1.6777216e+07
"""


def test_a_page_in_the_exposition_format() -> None:
    page = MetricsPage(EXPOSITION)
    estimate = page.quantile("demo_seconds", 0.99)
    assert estimate is not None
    # rank 108.9 in (0.002, 0.004] holding 60..110
    assert estimate.value == pytest.approx(0.002 + 0.002 * (108.9 - 60) / 50)
    assert estimate.count == 110
    assert page.gauge("demo_bytes") == 16 * 1024 * 1024
    assert page.quantile("demo_bytes", 0.99) is None  # not a histogram
    assert page.quantile("missing", 0.99) is None
    assert page.gauge("missing") is None


def test_effective_quota_is_the_lower_of_configured_and_reported() -> None:
    page = MetricsPage(f"# TYPE {QUOTA} gauge\n{QUOTA} 2.147483648e+09\n")
    assert effective_quota(page, 8 * 1024**3) == 2 * 1024**3
    assert effective_quota(page, 1024**3) == 1024**3
    assert effective_quota(None, 8 * 1024**3) == 8 * 1024**3


# --- a real etcd's page -------------------------------------------------------------------------


def _raw_count(text: str, name: str) -> int:
    match = re.search(rf"^{name}_count (\S+)$", text, re.MULTILINE)
    assert match, name
    return int(float(match.group(1)))


def test_a_real_etcd_page(etcd_tiny_quota: LocalCluster, etcd3_client) -> None:
    member = etcd_tiny_quota.members[0]
    client = etcd3_client(member.client_url)
    for index in range(20):
        client.put(f"/registry/pods/default/p{index}", "x")
    client.compact(client.get_response("/").header.revision, physical=True)
    config = etcd_tiny_quota.etcd_config()
    # etcd serves the page on the client URL and on --listen-metrics-urls alike
    url = metrics_url(member.client_url, (member.client_url,), config)
    assert url == member.client_url + "/metrics"
    for page_url in (url, member.metrics_url):
        with urllib.request.urlopen(page_url, timeout=10) as response:
            text = response.read().decode()
        page = MetricsPage(text)
        for name in (WAL_FSYNC, BACKEND_COMMIT):
            estimate = page.quantile(name, 0.99)
            assert estimate is not None, name
            assert 0 < estimate.value <= 8.192  # etcd's largest finite bucket for both
            # the buckets parsed hold every observation etcd counted
            assert estimate.count == _raw_count(text, name) > 0, name
        assert page.quantile(COMPACTION, 0.99) is not None  # the compaction above
        assert fetch_page(page_url, config).gauge(QUOTA) == 16 * 1024 * 1024
        assert effective_quota(page, 8 * 1024**3) == 16 * 1024 * 1024


def test_configured_metrics_urls_pair_with_endpoints_by_position(
    etcd_cluster3: LocalCluster,
) -> None:
    members = etcd_cluster3.members
    config = etcd_cluster3.etcd_config(metrics_urls=tuple(m.metrics_url for m in members[:2]))
    endpoints = tuple(etcd_cluster3.client_urls)
    assert metrics_url(members[1].client_url, endpoints, config) == members[1].metrics_url
    # no entry for the third endpoint: its client URL serves the page too
    third = members[2].client_url
    assert metrics_url(third, endpoints, config) == third + "/metrics"
    for member in members:
        page = fetch_page(metrics_url(member.client_url, endpoints, config), config)
        assert page.gauge(QUOTA) == 2 * 1024**3  # etcd's default quota


def test_an_unreachable_page_names_the_url(unreachable_endpoint: str) -> None:
    url = unreachable_endpoint + "/metrics"
    with pytest.raises(EtcdUnavailableError, match=re.escape(url)):
        fetch_page(url, EtcdConfig(command_timeout=2.0))
