"""Restore: bring etcd back from a backup (one member now; the five-step recovery builds on it)."""
