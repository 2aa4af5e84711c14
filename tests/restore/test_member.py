"""Restoring one member on real parts: a backup of etcd_loaded, etcdutl 3.5.1, a real etcd
booted on the restored data dir; and every refusal leaves the host as it was."""

import dataclasses
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from etcdops.backup.save import save_snapshot
from etcdops.config.settings import RestoreConfig
from etcdops.crypto.age import Identity
from etcdops.errors import CryptoError, IntegrityError, StorageError, ToolError, UsageError
from etcdops.etcd.local import LocalCluster, LocalEtcd
from etcdops.etcd.session import EtcdSession
from etcdops.report import LogReporter
from etcdops.restore.member import RestoreRequest, restore_member
from tests.backup.two_regions import corrupt_primary_copy, with_s3
from tests.restore.standins import bumping_etcdutl


def new_member(base: Path, name: str = "etcd-r") -> LocalEtcd:
    """A member to restore into (its ports picked), its data dir's parent created."""
    base.mkdir(parents=True, exist_ok=True)
    return LocalEtcd(name, base / "data", log_path=base.parent / f"{name}.log")


def request(member: LocalEtcd, ref: str = "latest", **overrides) -> RestoreRequest:
    return RestoreRequest(ref, member.data_dir, member.name, member.initial_cluster,
                          member.peer_url, **overrides)


def files(path: Path) -> dict[str, str]:
    """Every file below path and its sha256: what 'intact' means for a data dir."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def stored(member: LocalEtcd) -> tuple[dict[bytes, bytes], int]:
    with EtcdSession(member.etcd_config()) as session:
        kvs, revision = session.get_prefix(b"/")
    return {kv.key: kv.value for kv in kvs}, revision


def test_a_restored_member_boots_with_every_key_and_value(backup_config, saved, etcd_loaded,
                                                          tmp_path):
    member = new_member(tmp_path / "restored")
    result = restore_member(backup_config, request(member), LogReporter())
    assert (result.backup_id, result.store, result.fallbacks) == (saved.id, "local", ())
    assert result.data_dir == member.data_dir and result.moved_aside is None
    assert result.revision == saved.etcd.revision
    assert result.member.token_generated and result.member.token.startswith("test-restore-")
    # the working directory, the plaintext in it, is gone: only the data dir is there
    assert [p.name for p in member.data_dir.parent.iterdir()] == ["data"]
    assert oct(member.data_dir.stat().st_mode & 0o777) == "0o700"
    took = result.durations
    assert took["total"] >= took["download_decode"] + took["etcdutl"] > 0
    member.start()
    try:
        objects, revision = stored(member)
    finally:
        member.stop()
    assert objects == etcd_loaded.objects
    assert revision == saved.etcd.revision  # etcdutl 3.5.1 cannot bump: it went back to this


def test_three_members_from_one_backup_and_token_form_one_new_cluster(
    backup_config, saved, etcd_loaded, tmp_path
):
    cluster = LocalCluster.three(tmp_path / "new")
    token = None
    for member in cluster.members:
        member.data_dir.parent.mkdir(parents=True)
        result = restore_member(backup_config, RestoreRequest(
            saved.id, member.data_dir, member.name, cluster.initial_cluster, member.peer_url,
            token=token,
        ), LogReporter())
        assert result.member.token_generated == (token is None)
        token = result.member.token
    with cluster, EtcdSession(cluster.etcd_config()) as session:
        statuses = session.statuses()
        objects, _ = stored(cluster.members[2])
    with EtcdSession(etcd_loaded.cluster.etcd_config()) as session:
        original = session.status(etcd_loaded.cluster.client_urls[0])
    assert sum(s.is_leader for s in statuses) == 1
    assert len({s.cluster_id for s in statuses}) == 1  # one cluster, and a new one
    assert statuses[0].cluster_id != original.cluster_id
    assert objects == etcd_loaded.objects


def test_an_existing_data_dir_is_moved_aside_intact(backup_config, saved, etcd_loaded):
    source = etcd_loaded.cluster.members[0]
    source.stop()  # the disaster: restore the member over its own old data dir
    before = files(source.data_dir)
    result = restore_member(backup_config, request(source), LogReporter())
    aside = result.moved_aside
    assert aside is not None and aside.parent == source.data_dir.parent
    assert aside.name.startswith("data.etcdops-") and aside.name.endswith("Z")
    assert files(aside) == before
    assert not [p for p in source.data_dir.parent.iterdir() if ".etcdops-restore" in p.name]
    source.start()
    assert stored(source)[0] == etcd_loaded.objects


def test_the_restart_warning_comes_with_etcd_distros_etcdutl(backup_config, saved, tmp_path):
    result = restore_member(backup_config, request(new_member(tmp_path / "r")), LogReporter())
    [warning] = result.warnings
    assert "has no --bump-revision" in warning
    assert "kube-apiserver, kube-controller-manager, kube-scheduler, every kubelet and every " \
           "kube-proxy" in warning
    document = result.as_dict()
    assert document["revision"]["method"] == "none"
    assert document["revision"]["after_restore"] == saved.etcd.revision
    assert document["warnings"] == [warning]


def test_an_etcdutl_that_can_bump_is_given_the_configured_bump(backup_config, saved, tmp_path):
    etcdutl, log = bumping_etcdutl(tmp_path / "bin")
    config = dataclasses.replace(
        backup_config, etcd=dataclasses.replace(backup_config.etcd, etcdutl=str(etcdutl)),
        restore=RestoreConfig(bump_revision=5000),
    )
    result = restore_member(config, request(new_member(tmp_path / "r")), LogReporter())
    # etcdops checked the trailer as it wrote the snapshot: etcdutl need not hash it again
    assert log.read_text().split()[-4:] == [
        "--bump-revision", "5000", "--mark-compacted", "--skip-hash-check"]
    assert result.warnings == ()
    assert result.as_dict()["revision"]["after_restore"] == saved.etcd.revision + 5000


def test_the_replica_is_read_when_the_primary_copy_is_corrupt(backup_config, s3, tmp_path,
                                                                etcd_loaded):
    config = with_s3(backup_config, s3)
    manifest = save_snapshot(config, LogReporter()).manifest
    corrupt_primary_copy(config, s3, manifest)
    member = new_member(tmp_path / "r")
    result = restore_member(config, request(member), LogReporter())
    assert result.store == "replica"
    assert any("primary store failed" in note for note in result.fallbacks)
    with pytest.raises(IntegrityError):  # --from primary: no other copy to fall back on
        restore_member(config, request(new_member(tmp_path / "p"), store="primary"),
                       LogReporter())
    assert list((tmp_path / "p").iterdir()) == []
    member.start()
    try:
        assert stored(member)[0] == etcd_loaded.objects
    finally:
        member.stop()


# --- refusals: one error, nothing changed ---------------------------------------------------

@pytest.fixture
def occupied(tmp_path):
    """A data dir with something in it, and a snapshot of its parent to compare with."""
    base = tmp_path / "host"
    (base / "data" / "member").mkdir(parents=True)
    (base / "data" / "member" / "old").write_text("old data")
    return base


def unchanged(base: Path) -> dict[str, str]:
    return {str(p.relative_to(base)): p.read_text() if p.is_file() else "dir"
            for p in sorted(base.rglob("*"))}


def member_in(base: Path) -> LocalEtcd:
    return LocalEtcd("etcd-r", base / "data")


def corrupt(config, manifest) -> None:
    path = config.local.dir / manifest.object_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def other_identity(config, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(str(Identity.generate()) + "\n")
    return dataclasses.replace(
        config, encryption=dataclasses.replace(config.encryption, identity_file=other)
    )


def missing_etcdutl(config, tmp_path):
    return dataclasses.replace(
        config, etcd=dataclasses.replace(config.etcd, etcdutl=str(tmp_path / "no-etcdutl"))
    )


@pytest.mark.parametrize(("case", "error", "says"), [
    ("wrong identity", CryptoError, "no identity given matches"),
    ("corrupt object", IntegrityError, "the data was modified"),
    ("missing etcdutl", ToolError, "[etcd] etcdutl"),
    ("bad initial cluster", UsageError, "--initial-cluster has no member named 'etcd-r'"),
])
def test_a_refusal_changes_nothing(backup_config, saved, occupied, tmp_path, case, error, says):
    config, member = backup_config, member_in(occupied)
    wanted = request(member)
    if case == "wrong identity":
        config = other_identity(config, tmp_path)
    elif case == "corrupt object":
        corrupt(config, saved)
    elif case == "missing etcdutl":
        config = missing_etcdutl(config, tmp_path)
    else:
        wanted = dataclasses.replace(wanted, initial_cluster="other=http://127.0.0.1:1")
    before = unchanged(occupied)
    with pytest.raises(error) as caught:
        restore_member(config, wanted, LogReporter())
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)
    assert unchanged(occupied) == before


def test_a_parent_that_cannot_be_written_is_a_storage_error_before_any_read(
    backup_config, saved, occupied
):
    if not shutil.which("chattr"):
        pytest.skip("chattr is not installed")
    before = unchanged(occupied)
    # root ignores mode bits; the immutable attribute stops even root from renaming in it
    if subprocess.run(["chattr", "+i", str(occupied)], capture_output=True).returncode:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        with pytest.raises(StorageError, match=f"cannot create a temporary directory in "
                                               f"{occupied}"):
            restore_member(backup_config, request(member_in(occupied)), LogReporter())
    finally:
        subprocess.run(["chattr", "-i", str(occupied)], check=True)
    assert unchanged(occupied) == before


def test_no_staging_time_is_reported_when_no_staging_etcd_ran(backup_config, saved, tmp_path):
    from etcdops.backup.readback import fetch_snapshot

    plain = tmp_path / "plain.db"  # no manifest: no age, so no staging etcd
    fetch_snapshot(backup_config, saved.id, plain, LogReporter())
    result = restore_member(backup_config, request(new_member(tmp_path / "r"), str(plain)),
                            LogReporter())
    assert "without a manifest has no age" in result.warnings[0]
    assert set(result.durations) == {"download_decode", "etcdutl", "total"}


def test_a_read_only_parent_is_named_for_what_it_is_in_a_dry_run_as_in_a_restore(
    backup_config, saved, tmp_path, bind_mount
):
    from etcdops.restore.preflight import dry_run

    (tmp_path / "ro").mkdir()
    parent = bind_mount(tmp_path / "ro", tmp_path / "ro", read_only=True)
    member = LocalEtcd("etcd-r", parent / "data")
    with pytest.raises(StorageError) as real:
        restore_member(backup_config, request(member), LogReporter())
    with pytest.raises(StorageError) as dry:
        dry_run(backup_config, request(member), LogReporter())
    assert real.value.message.endswith(": Read-only file system")
    assert dry.value.message == real.value.message
