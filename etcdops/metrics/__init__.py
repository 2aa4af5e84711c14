"""Prometheus metrics of the jobs, written for node_exporter's textfile collector."""
