"""The demo's point-in-time restore scene on a real etcd and moto's S3 in two regions: the
member `restore --at` builds holds the deleted namespace exactly as it was before the delete,
read by the test itself from the live cluster and from the restored member."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from etcdops.config import Config, EncryptionConfig, LocalConfig
from etcdops.crypto.keys import generate_identity_file
from etcdops.demo.rewind import Rewind
from etcdops.demo.sample import REGISTRY, load_kubernetes_objects
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.report import LogReporter
from etcdops.restore.inventory import classify
from etcdops.restore.revision import STAGING
from etcdops.restore.staging import start_throwaway
from tests.backup.two_regions import with_s3

OBJECTS = 300
NAMESPACE = "production"


def namespace_objects(config) -> dict[bytes, bytes]:
    """The namespace's objects and its Namespace, key and value, as etcd holds them now."""
    own = REGISTRY + b"namespaces/" + NAMESPACE.encode()
    with EtcdSession(config) as session:
        return {kv.key: kv.value for page in session.prefix_pages(REGISTRY) for kv in page
                if kv.key == own or classify(kv.key).namespace == NAMESPACE}


@pytest.fixture
def config(etcd_single: LocalCluster, s3, tmp_path: Path) -> Config:
    identity = tmp_path / "identity.txt"
    recipient = generate_identity_file(identity)
    with EtcdSession(etcd_single.etcd_config()) as session:
        load_kubernetes_objects(session, OBJECTS)
    return with_s3(Config(
        cluster="rewind", etcd=etcd_single.etcd_config(),
        encryption=EncryptionConfig(recipients=(str(recipient),), identity_file=identity),
        local=LocalConfig(dir=tmp_path / "backups"),
    ), s3)


def test_the_scene_restores_exactly_the_deleted_namespace_as_it_was_before_the_delete(
    config: Config, tmp_path: Path
) -> None:
    with ExitStack() as cleanup:
        scene = Rewind(tmp_path / "rewind", config, OBJECTS, LogReporter(), cleanup,
                       seconds=1.0)
        assert scene.report.namespace == NAMESPACE
        scene.follow()
        at_backup = namespace_objects(config.etcd)
        scene.write()
        before_delete = namespace_objects(config.etcd)
        # the workload changed the namespace after the backup: the backup alone is not it
        changed = {key for key in before_delete if at_backup.get(key) != before_delete[key]}
        assert any(classify(key).resource == "deployments" and key in at_backup
                   for key in changed), "no loaded deployment was rolled out"
        assert any(key not in at_backup for key in changed), "nothing was created"
        scene.delete_namespace()
        assert namespace_objects(config.etcd) == {}
        scene.restore()

        # the restored member, booted and read here, holds the namespace as it was
        member = scene.member
        assert member is not None
        try:
            start_throwaway(member)
            restored = namespace_objects(member.etcd_config())
        finally:
            member.stop()
        assert restored == before_delete

        # and the scene's own check, which reads every object, says the same
        _, facts = scene.check()
    assert facts["same_values"] is True
    assert facts["restored_keys"] == facts["deleted_keys"] == len(before_delete)
    report = scene.report.as_dict()
    first_delete, last_delete = report["delete_revisions"]
    # the moment before the delete, advanced on a staging etcd past every revision the
    # cluster reached (no etcdutl here bumps it)
    revision = report["restore"]["revision"]
    assert revision["snapshot"] == first_delete - 1
    assert revision["method"] == STAGING and revision["restart"] == []
    assert facts["revision"] == revision["after_restore"] > last_delete
    assert report["replay"]["revisions"] >= len(changed)
    assert any("lease" in warning for warning in report["restore"]["warnings"])
