"""etcd's Prometheus /metrics page: fetching it, and quantiles estimated from its histograms.

The page holds cumulative histograms since the member started, so a p99 here describes the
member's whole uptime, not the last minutes (that needs Prometheus and rate()). The quantile is
estimated the way Prometheus' histogram_quantile does it: find the bucket that holds the rank
and interpolate linearly inside it.
"""

from __future__ import annotations

import math
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from etcdops.config import EtcdConfig
from etcdops.errors import EtcdUnavailableError

WAL_FSYNC = "etcd_disk_wal_fsync_duration_seconds"
BACKEND_COMMIT = "etcd_disk_backend_commit_duration_seconds"
COMPACTION = "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds"
QUOTA = "etcd_server_quota_backend_bytes"
METHOD = (
    "estimated from etcd's cumulative histograms (since each member started) by linear "
    "interpolation inside the bucket, as Prometheus' histogram_quantile does"
)


@dataclass(frozen=True)
class Quantile:
    """An estimated quantile; above_last_bucket means it is at least `value`, maybe more."""

    value: float
    count: int
    above_last_bucket: bool


class MetricsPage:
    """One parsed /metrics page: histograms and gauges by name."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self._families = {family.name: family for family in text_string_to_metric_families(text)}

    def gauge(self, name: str) -> float | None:
        """The value of a gauge (or counter), None when the page does not have it."""
        family = self._families.get(name)
        return family.samples[0].value if family and family.samples else None

    def quantile(self, name: str, q: float) -> Quantile | None:
        """The q-quantile of a histogram; None without the metric or without observations."""
        family = self._families.get(name)
        if family is None or family.type != "histogram":
            return None
        buckets = sorted(
            (float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")
        )
        return estimate_quantile(buckets, q)


def estimate_quantile(buckets: list[tuple[float, float]], q: float) -> Quantile | None:
    """The q-quantile from cumulative (upper bound, count) buckets, the last one +Inf."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                # the tail is unbounded: all that is known is "more than the last finite bound"
                return Quantile(lower, int(total), above_last_bucket=True)
            inside = cumulative - below
            fraction = (rank - below) / inside if inside else 1.0
            return Quantile(lower + (upper - lower) * fraction, int(total), False)
        lower, below = upper, cumulative
    raise AssertionError("the +Inf bucket holds every observation")


def metrics_url(endpoint: str, endpoints: Sequence[str], config: EtcdConfig) -> str:
    """Where a member serves /metrics: its [etcd] metrics_urls entry, else its client URL."""
    # metrics_urls pair up with [etcd] endpoints by position; both lists are as configured,
    # endpoints normalized by the session
    if endpoint in endpoints and endpoints.index(endpoint) < len(config.metrics_urls):
        return config.metrics_urls[endpoints.index(endpoint)]
    return endpoint.rstrip("/") + "/metrics"


def fetch_page(url: str, config: EtcdConfig) -> MetricsPage:
    """Download and parse a member's /metrics page, with the client's TLS files on https."""
    context = _tls_context(config) if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(url, timeout=config.command_timeout, context=context) as r:
            text = r.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EtcdUnavailableError(
            f"cannot read etcd metrics at {url}: {reason}",
            "check [etcd] metrics_urls (etcd serves /metrics on the client URL and on "
            "--listen-metrics-urls)",
        ) from exc
    return MetricsPage(text)


def _tls_context(config: EtcdConfig) -> Any:
    context = ssl.create_default_context(cafile=str(config.cacert) if config.cacert else None)
    if config.cert and config.key:
        context.load_cert_chain(str(config.cert), str(config.key))
    return context
