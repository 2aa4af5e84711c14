"""Backups: taking them, the catalogue of what each store holds, reading them back, replication
and retention."""
