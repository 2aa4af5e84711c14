"""The stores a configuration names: local always, S3 primary and replica when configured."""

from __future__ import annotations

from etcdops.config import Config
from etcdops.stores.base import Store
from etcdops.stores.local import LocalStore

LOCAL, PRIMARY, REPLICA = "local", "primary", "replica"
READ_ORDER = (LOCAL, PRIMARY, REPLICA)


def open_stores(config: Config, *, local_only: bool = False) -> dict[str, Store]:
    """Every configured store by name, in the order reads try them."""
    stores: dict[str, Store] = {LOCAL: LocalStore(config.local.dir, LOCAL)}
    if config.s3 is None or local_only:
        return stores
    from etcdops.stores.s3 import S3Store

    stores[PRIMARY] = S3Store(config.s3, PRIMARY)
    if config.s3.replica is not None:
        stores[REPLICA] = S3Store(config.s3.replica, REPLICA)
    return stores
