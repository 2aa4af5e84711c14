"""Prometheus metrics of the jobs, written for node_exporter's textfile collector."""

from etcdops.metrics.textfile import JobMetrics, job_metrics

__all__ = ["JobMetrics", "job_metrics"]
