"""Helpers for backups in two S3 regions on moto: the config and operator's TOML that reach it
(optionally through a fault proxy), and the check that no store lists a backup it lacks."""

import dataclasses
import hashlib

from etcdops.config import S3Config
from etcdops.stores.configured import open_stores


def with_s3(config, s3, *, primary_url=None, replica_url=None):
    primary = dataclasses.replace(s3.primary, endpoint_url=primary_url or s3.endpoint_url)
    replica = dataclasses.replace(s3.replica, endpoint_url=replica_url or s3.endpoint_url)
    return dataclasses.replace(
        config, s3=S3Config(**dataclasses.asdict(primary), replica=replica)
    )


def toml_for(config, path, s3_settings="", replica_settings=""):
    """The config as an operator's etcdops.toml (s3_settings: more lines for the [s3] table,
    which the replica inherits unless replica_settings, for [s3.replica], set its own)."""
    lines = [f'cluster = "{config.cluster}"', "[etcd]",
             f'endpoints = ["{config.etcd.endpoints[0]}"]', "[encryption]",
             f'recipients = ["{config.encryption.recipients[0]}"]',
             f'identity_file = "{config.encryption.identity_file}"',
             "[local]", f'dir = "{config.local.dir}"']
    for table, location in (("s3", config.s3), ("s3.replica", config.s3.replica)):
        lines.append(f"[{table}]")
        for name in ("bucket", "region", "prefix", "endpoint_url"):
            lines.append(f'{name} = "{getattr(location, name)}"')
        lines.append(s3_settings if table == "s3" else replica_settings)
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_listing_honest(config):
    """Every backup any store lists as good is complete there: its bytes match its manifest."""
    from etcdops.backup.catalog import Catalog

    for name, store in open_stores(config).items():
        for entry in Catalog(store, config.cluster).entries():
            if not entry.good:
                continue
            with store.open_reader(entry.manifest.object_key) as reader:
                digest = hashlib.sha256(reader.read()).hexdigest()
            assert digest == entry.manifest.object_sha256, (name, entry.manifest.id)


def corrupt_primary_copy(config, s3, manifest):
    """Lose this host's local copy and flip one byte of the primary's, keeping its size: only
    reading it end to end finds the damage, and the replica's copy is the good one."""
    (config.local.dir / manifest.object_key).unlink()
    client = s3.client("us-east-1")
    key = "backups/" + manifest.object_key
    data = bytearray(client.get_object(Bucket="etcdops-primary", Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket="etcdops-primary", Key=key, Body=bytes(data))
