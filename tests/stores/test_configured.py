"""The store topology: roles, read order, which failure is partial, each store opened on use."""

import dataclasses

import pytest

from etcdops.config import Config, LocalConfig, S3Config
from etcdops.errors import ConfigError, UsageError
from etcdops.stores.configured import open_stores


@pytest.fixture
def config(s3, tmp_path):
    return Config(
        cluster="test",
        local=LocalConfig(dir=tmp_path / "backups"),
        s3=S3Config(**dataclasses.asdict(s3.primary), replica=s3.replica),
    )


def test_roles_and_read_order(config):
    stores = open_stores(config)
    assert list(stores) == ["local", "primary", "replica"]
    assert stores.streamed == ["local", "primary"]
    assert stores.copied == ["replica"]
    assert stores.copy_targets == ["primary", "replica"]
    assert stores.local == "local" and stores.second_region == "replica"
    only_local = open_stores(config, local_only=True)
    assert list(only_local) == ["local"] and only_local.copy_targets == []


def test_only_a_replica_failure_is_partial(config):
    stores = open_stores(config)
    assert stores.partial(["replica"])
    assert not stores.partial(["primary", "replica"])
    assert not stores.partial(["local"])
    assert not stores.partial([])


def test_one_store_of_the_topology_or_a_usage_error(config):
    replica = open_stores(config).only("replica")
    assert list(replica) == ["replica"] and replica["replica"].name == "replica"
    with pytest.raises(UsageError, match="no replica store is configured"):
        open_stores(dataclasses.replace(config, s3=None)).only("replica")


def test_a_store_is_opened_when_used_and_names_its_own_config_section(config):
    broken = dataclasses.replace(config, s3=dataclasses.replace(
        config.s3, replica=dataclasses.replace(config.s3.replica, kms_key_id="alias/dr")
    ))
    stores = open_stores(broken)  # a read of the local store alone never meets the mistake
    assert stores["local"].name == "local"
    assert stores["primary"].section == "s3"
    with pytest.raises(ConfigError, match=r"s3\.replica\.kms_key_id is set"):
        stores.open()
