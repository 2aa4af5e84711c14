"""The journal of etcd's changes between full backups: segments chained to a base backup."""
