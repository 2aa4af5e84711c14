"""A job's metrics in node_exporter's textfile directory: one file per cluster and job.

Every run is a new process (a timer's), so what a file says must outlive it: when a run ends,
the file is read back, this run's counts are added to its counters and its values replace the
ones it set, and the file is written again atomically (prometheus_client's write_to_textfile:
a temporary file renamed over it, no timestamps). A failed run adds to attempts and failures
and leaves the last success's values as they were. Reading and writing happen under a lock on
the directory, so two runs ending together cannot lose each other's counts.

Metrics are a report on the job, never a reason for it to fail: a file that cannot be written
is a logged warning, and the stale-file alert notices it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from etcdops.config import Config
from etcdops.config.loader import CLUSTER_NAME
from etcdops.errors import LockedError
from etcdops.metrics.catalogue import COUNTER, STORE_JOBS, Metric, job_metrics_of

log = logging.getLogger("etcdops.metrics")

# a sample: its name, and its labels sorted
Key = tuple[str, tuple[tuple[str, str], ...]]


class JobMetrics:
    """What one run of a job records; applied to the job's file when the run ends.

    Names are given without the job's prefix: metrics.set("last_success_revision", 5,
    store="local") in the snapshot job is etcdops_snapshot_last_success_revision.
    """

    def __init__(
        self, cluster: str, job: str, stores: Iterable[str] = (),
        configured: Iterable[str] | None = None,
    ) -> None:
        self.cluster, self.job = cluster, job
        self.declared = {metric.name: metric for metric in job_metrics_of(job)}
        stores = list(stores)
        if (job in STORE_JOBS) != bool(stores):
            raise ValueError(f"the {job} job counts per store only if it has stores: {stores}")
        # what each run counts once: every store the job works on, or the job as a whole
        self.units = [{"store": store} for store in stores] or [{}]
        # the stores whose values are carried forward (a store no longer configured is dropped,
        # or its last success would age into an alert forever)
        self.configured = set(stores if configured is None else configured) | set(stores)
        self._sets: dict[Key, float] = {}
        self._adds: dict[Key, float] = {}
        self._failed: list[dict[str, str]] = []
        self._started = time.monotonic()

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge to what this run found."""
        self._sets[self._key(name, labels)] = float(value)

    def add(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add to a counter."""
        key = self._key(name, labels)
        if self.declared[key[0]].kind != COUNTER:
            raise ValueError(f"{key[0]} is not a counter")
        self._adds[key] = self._adds.get(key, 0.0) + amount

    def failed(self, **labels: str) -> None:
        """This run failed for one store (labels), or as a whole (no labels)."""
        self._failed.extend([labels] if labels else self.units)

    def finish(self, now: float | None = None) -> None:
        """Count the run: an attempt for every unit, and a success or failure with its time."""
        now = time.time() if now is None else now
        elapsed = time.monotonic() - self._started
        for unit in self.units:
            self.add("attempts_total", **unit)
            if unit in self._failed:
                self.add("failures_total", **unit)
                self.set("last_failure_timestamp_seconds", now, **unit)
            else:
                self.set("last_success_timestamp_seconds", now, **unit)
                self.set("last_success_duration_seconds", elapsed, **unit)

    def applied(self, previous: dict[Key, float]) -> dict[Key, float]:
        """The file's samples after this run: the previous ones still declared and configured,
        zero where nothing happened yet, plus this run's counts and values."""
        samples = {key: value for key, value in previous.items() if self._carried(key)}
        for metric in self.declared.values():
            if metric.zeroed:
                for unit in self.units:
                    samples.setdefault(self._key(_short(self.job, metric), unit), 0.0)
        for key, amount in self._adds.items():
            samples[key] = samples.get(key, 0.0) + amount
        samples.update(self._sets)
        return samples

    def _key(self, name: str, labels: dict[str, str]) -> Key:
        full = f"etcdops_{self.job}_{name}"
        metric = self.declared.get(full)
        if metric is None:
            raise ValueError(f"{full} is not declared in etcdops.metrics.catalogue")
        if set(labels) != set(metric.labels):
            raise ValueError(f"{full} takes the labels {metric.labels}, not {tuple(labels)}")
        return full, tuple(sorted({"cluster": self.cluster, **labels}.items()))

    def _carried(self, key: Key) -> bool:
        name, labels = key[0], dict(key[1])
        metric = self.declared.get(name)
        if metric is None or set(labels) != {"cluster", *metric.labels}:
            return False
        return labels["cluster"] == self.cluster and labels.get("store") in (
            self.configured if "store" in labels else {None}
        )


def _short(job: str, metric: Metric) -> str:
    return metric.name.removeprefix(f"etcdops_{job}_")


def textfile_path(directory: Path, cluster: str, job: str) -> Path:
    """The file of one cluster's job, named with the cluster as it is: the stale-file alert
    reads the cluster label from the name (monitoring/etcdops.rules.yml), and it must be the
    one the metrics carry. The loader lets only names safe in a file name through."""
    if not CLUSTER_NAME.fullmatch(cluster):
        raise ValueError(f"cluster name {cluster!r} is not one the configuration accepts")
    return directory / f"etcdops_{cluster}_{job}.prom"


@contextlib.contextmanager
def job_metrics(
    config: Config, job: str, *, stores: Iterable[str] = (),
    configured: Iterable[str] | None = None,
) -> Iterator[JobMetrics]:
    """Record one run of a job in its file when [metrics] textfile_dir is set: an exception
    out of the block is the run's failure (recorded, then raised on); the block marks a
    partial failure with failed(store=...). `configured` names the stores whose values are
    kept when the run works on fewer of them (--local-only). A run refused by a lock that
    another run holds is not recorded."""
    metrics = JobMetrics(config.cluster, job, stores, configured)
    try:
        yield metrics
    except LockedError:
        raise  # another run of the job holds the lock: this one did not run at all
    except BaseException:
        metrics.failed()
        _record(config, metrics)
        raise
    _record(config, metrics)


def _record(config: Config, metrics: JobMetrics) -> None:
    directory = config.metrics.textfile_dir
    metrics.finish()
    if directory is None:
        return
    try:
        path = textfile_path(directory, metrics.cluster, metrics.job)
    except ValueError as exc:  # a Config made without the loader
        log.warning("metrics not written: %s", exc)
        return
    try:
        with _locked(directory):
            write_samples(path, metrics, metrics.applied(read_samples(path)))
    except OSError as exc:
        log.warning("metrics not written to %s: %s ([metrics] textfile_dir)", path, exc)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """The directory itself locked (a lock file would sit among node_exporter's files)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def read_samples(path: Path) -> dict[Key, float]:
    """The samples a file holds; nothing when there is no file, or when it does not parse
    (then the counters start again, which Prometheus takes as a reset)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
    except (ValueError, TypeError, IndexError) as exc:
        log.warning("%s does not parse (%s): its values are not carried forward", path, exc)
        return {}


def write_samples(path: Path, metrics: JobMetrics, samples: dict[Key, float]) -> None:
    """Write a job's samples atomically, with a registry of their own, readable by
    node_exporter from the moment the file has its name."""
    from prometheus_client import CollectorRegistry, write_to_textfile

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Samples(metrics, samples))
    # node_exporter runs as another user, and write_to_textfile creates its file under the
    # unit's UMask=0077 (0600): chmod after its rename left the file unreadable for a moment,
    # a failed scrape. So it writes a name node_exporter skips (not *.prom), made 0644 before
    # it is renamed onto the file. The process umask stays: other threads write secrets.
    staging = path.with_name(f".{path.name}.tmp")
    try:
        write_to_textfile(str(staging), registry)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


class _Samples:
    """A collector of fixed samples, in the catalogue's order."""

    def __init__(self, metrics: JobMetrics, samples: dict[Key, float]) -> None:
        self.metrics, self.samples = metrics, samples

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for metric in self.metrics.declared.values():
            names = ["cluster", *metric.labels]
            kind = CounterMetricFamily if metric.kind == COUNTER else GaugeMetricFamily
            family = kind(metric.name, metric.help, labels=names)
            for (name, labels), value in sorted(self.samples.items()):
                if name == metric.name:
                    family.add_metric([dict(labels)[label] for label in names], value)
            if family.samples:
                yield family
