"""Keeping etcd healthy: compaction, defragmentation in its window, the member survey and the
health report against the seed's targets."""
