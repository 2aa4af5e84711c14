"""etcdops: keeps etcd recoverable."""

__version__ = "0.1.0"
