"""Reading backups back: every check, every refusal, and nothing written when a check fails."""

import dataclasses
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from etcdops.backup.readback import fetch_snapshot, snapshot_status
from etcdops.backup.save import save_snapshot
from etcdops.config import Config, EncryptionConfig, LocalConfig
from etcdops.crypto.age import Identity, Recipient
from etcdops.errors import CryptoError, IntegrityError, NotFoundError, UsageError
from etcdops.report import LogReporter
from etcdops.stream.writers import AgeEncrypt, ZstdCompress


@pytest.fixture
def saved(backup_config, etcd_loaded):
    return save_snapshot(backup_config, LogReporter()).manifest


def object_path(config, manifest):
    return config.local.dir / manifest.object_key


def test_status_of_a_backup_checks_everything(backup_config, saved, etcd_loaded):
    status = snapshot_status(backup_config, saved.id, LogReporter())
    assert status.kind == "backup"
    assert status.backup_id == saved.id
    assert status.revision == saved.etcd.revision
    assert status.keys == len(etcd_loaded.objects)
    assert status.snapshot_size == saved.snapshot_size
    assert status.stored_size == saved.object_size
    assert status.db_sha256 == saved.snapshot_db_sha256
    assert status.checks == (
        "age authentication", "etcd sha256 trailer", "manifest sizes and sha256"
    )


def test_refs_latest_prefix_and_ambiguity(backup_config, saved):
    second = save_snapshot(backup_config, LogReporter()).manifest
    assert snapshot_status(backup_config, "latest", LogReporter()).backup_id == second.id
    assert snapshot_status(backup_config, saved.id[:-2], LogReporter()).backup_id == saved.id
    with pytest.raises(UsageError, match="matches 2 backups"):
        snapshot_status(backup_config, "2", LogReporter())
    with pytest.raises(NotFoundError, match="no backup 'nope'"):
        snapshot_status(backup_config, "nope", LogReporter())


def test_wrong_identity_is_a_key_error(backup_config, saved, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(str(Identity.generate()) + "\n")
    config = dataclasses.replace(
        backup_config, encryption=dataclasses.replace(backup_config.encryption, identity_file=other)
    )
    with pytest.raises(CryptoError):
        snapshot_status(config, saved.id, LogReporter())


def test_missing_identity_is_a_key_error(backup_config, saved):
    config = dataclasses.replace(
        backup_config, encryption=dataclasses.replace(backup_config.encryption, identity_file=None)
    )
    with pytest.raises(CryptoError, match="no identity configured"):
        snapshot_status(config, saved.id, LogReporter())


@pytest.mark.parametrize("where", ["wrapped file key", "header mac", "payload", "last chunk"])
def test_flipped_byte_is_an_integrity_error_and_fetch_writes_nothing(
    backup_config, saved, tmp_path, where
):
    path = object_path(backup_config, saved)
    data = bytearray(path.read_bytes())
    mac_line = data.index(b"\n--- ")
    offset = {
        "wrapped file key": mac_line - 5,
        "header mac": mac_line + 10,
        "payload": mac_line + 200,
        "last chunk": len(data) - 20,
    }[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        snapshot_status(backup_config, saved.id, LogReporter())
    out = tmp_path / "out.db"
    with pytest.raises(IntegrityError):
        fetch_snapshot(backup_config, saved.id, out, LogReporter())
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_truncated_object_is_an_integrity_error(backup_config, saved):
    path = object_path(backup_config, saved)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="object is"):
        snapshot_status(backup_config, saved.id, LogReporter())
    # the same truncated copy given as a file, without the catalogue's size check
    loose = backup_config.local.dir / "loose.db.zst.age"
    loose.write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError):
        snapshot_status(backup_config, str(loose), LogReporter())


def test_object_swapped_for_another_backup_fails_the_manifest_check(backup_config, saved):
    other = save_snapshot(backup_config, LogReporter()).manifest
    shutil.copy(object_path(backup_config, other), object_path(backup_config, saved))
    # same size (same data) but a different encryption: the stored sha256 tells them apart
    with pytest.raises(IntegrityError, match="stored sha256|object is"):
        snapshot_status(backup_config, saved.id, LogReporter())


def test_encrypted_file_with_and_without_manifest(backup_config, saved, tmp_path):
    with_manifest = snapshot_status(
        backup_config, str(object_path(backup_config, saved)), LogReporter()
    )
    assert with_manifest.kind == "backup"
    assert with_manifest.revision == saved.etcd.revision
    copy = tmp_path / "copy.age"
    shutil.copy(object_path(backup_config, saved), copy)
    alone = snapshot_status(backup_config, str(copy), LogReporter())
    assert alone.kind == "encrypted file"
    assert alone.revision == saved.etcd.revision  # etcdutl read it from the decrypted copy
    assert alone.db_sha256 == saved.snapshot_db_sha256


def test_fetch_gives_a_plain_snapshot_that_etcdutl_reads(backup_config, saved, tmp_path):
    out = tmp_path / "plain.db"
    fetch_snapshot(backup_config, saved.id, out, LogReporter())
    assert out.stat().st_mode & 0o077 == 0
    status = snapshot_status(backup_config, str(out), LogReporter())
    assert status.kind == "plain snapshot"
    assert status.revision == saved.etcd.revision
    assert status.keys > saved.etcd.keys  # bbolt entries include etcd's own meta keys
    assert status.db_sha256 == saved.snapshot_db_sha256
    assert "etcdutl snapshot status" in status.checks
    with pytest.raises(UsageError, match="already exists"):
        fetch_snapshot(backup_config, saved.id, out, LogReporter())
    fetch_snapshot(backup_config, saved.id, out, LogReporter(), force=True)
    with pytest.raises(UsageError, match="already a plain snapshot"):
        fetch_snapshot(backup_config, str(out), tmp_path / "again.db", LogReporter())


@pytest.fixture
def offline_config(age_identity, tmp_path):
    """Enough configuration to read files: no etcd is reached."""
    return Config(
        encryption=EncryptionConfig(
            recipients=(age_identity.recipient,), identity_file=age_identity.path
        ),
        local=LocalConfig(dir=tmp_path / "backups"),
    )


NOT_SNAPSHOTS = {
    "random bytes": lambda: os.urandom(256 << 10),
    "zeros": lambda: bytes(256 << 10),
    "a manifest": lambda: json.dumps({"schema_version": 1, "id": "20270101T000000Z-abcdef",
                                      "object_size": 1234}, indent=2).encode(),
}


@pytest.mark.parametrize("what", list(NOT_SNAPSHOTS))
def test_what_is_not_a_snapshot_is_refused_by_status_and_fetch(offline_config, tmp_path, what):
    junk = tmp_path / "junk.db"
    junk.write_bytes(NOT_SNAPSHOTS[what]())
    with pytest.raises(IntegrityError, match=f"{junk} is not an etcd snapshot"):
        snapshot_status(offline_config, str(junk), LogReporter())
    out = tmp_path / "out.db"
    with pytest.raises(IntegrityError, match=f"{junk} is not an etcd snapshot"):
        fetch_snapshot(offline_config, str(junk), out, LogReporter())
    assert not out.exists()


def test_an_encrypted_file_whose_plaintext_is_no_snapshot_says_so(offline_config, tmp_path):
    # authentic age, valid zstd, even etcd's trailer right: only the bbolt page tells
    db = os.urandom(64 << 10)
    stored = io.BytesIO()
    encrypt = AgeEncrypt(stored, [Recipient.parse(offline_config.encryption.recipients[0])])
    compress = ZstdCompress(encrypt, level=1)
    compress.write(db + hashlib.sha256(db).digest())
    compress.close()
    encrypt.close()
    sealed = tmp_path / "sealed.db.zst.age"
    sealed.write_bytes(stored.getvalue())
    with pytest.raises(IntegrityError, match="decrypted .*sealed.db.zst.age is not an etcd snap"):
        snapshot_status(offline_config, str(sealed), LogReporter())
    out = tmp_path / "out.db"
    with pytest.raises(IntegrityError, match="not an etcd snapshot"):
        fetch_snapshot(offline_config, str(sealed), out, LogReporter())
    assert not out.exists()


@pytest.mark.parametrize("ref, what", [("DIR", "is a directory"), (".", "is a directory"),
                                       ("/dev/zero", "is a character device")])
def test_what_is_not_a_regular_file_is_named_for_what_it_is(offline_config, tmp_path, ref, what):
    ref = str(tmp_path) if ref == "DIR" else ref
    for read in (
        lambda: snapshot_status(offline_config, ref, LogReporter()),
        lambda: fetch_snapshot(offline_config, ref, tmp_path / "out.db", LogReporter()),
    ):
        with pytest.raises(UsageError, match=f"{ref} {what}, not a snapshot file"):
            read()


def test_keywords_win_over_files_in_the_working_directory(
    backup_config, saved, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    fetch_snapshot(backup_config, "latest", Path("latest"), LogReporter())
    assert snapshot_status(backup_config, "latest", LogReporter()).backup_id == saved.id
    assert snapshot_status(backup_config, "./latest", LogReporter()).kind == "plain snapshot"
    Path(saved.id[:10]).write_bytes(b"a file named like an id prefix")
    assert snapshot_status(backup_config, saved.id[:10], LogReporter()).backup_id == saved.id
    # no backup id has a '.': a bare name with one is a file in this directory
    shutil.copy("latest", "snap.db")
    assert snapshot_status(backup_config, "snap.db", LogReporter()).kind == "plain snapshot"
    with pytest.raises(NotFoundError, match="no backup 'snap'") as missing:
        snapshot_status(backup_config, "snap", LogReporter())
    assert "./snap" not in missing.value.hint
    Path("snap").write_bytes(b"x")
    with pytest.raises(NotFoundError, match="no backup 'snap'") as shadowed:
        snapshot_status(backup_config, "snap", LogReporter())
    assert "'./snap'" in shadowed.value.hint


def test_an_identity_file_others_can_read_is_used_with_a_warning(backup_config, saved):
    identity = backup_config.encryption.identity_file
    assert snapshot_status(backup_config, saved.id, LogReporter()).warnings == ()
    identity.chmod(0o644)
    status = snapshot_status(backup_config, saved.id, LogReporter())
    [warning] = status.warnings
    assert str(identity) in warning and f"chmod 600 {identity}" in warning
    assert status.as_dict()["warnings"] == [warning]


def test_every_copy_damaged_names_the_backup_each_failure_and_an_older_backup(
    backup_config, s3, etcd_loaded
):
    from tests.backup.two_regions import corrupt_primary_copy, with_s3

    config = with_s3(backup_config, s3)
    manifest = save_snapshot(config, LogReporter()).manifest
    corrupt_primary_copy(config, s3, manifest)  # the local copy lost, the primary's damaged
    client = s3.client("us-west-2")
    key = manifest.object_key  # the replica has no prefix
    data = bytearray(client.get_object(Bucket="etcdops-replica", Key=key)["Body"].read())
    data[-20] ^= 0x01  # its last chunk
    client.put_object(Bucket="etcdops-replica", Key=key, Body=bytes(data))
    with pytest.raises(IntegrityError) as raised:
        snapshot_status(config, manifest.id, LogReporter())
    message = raised.value.message
    assert message.startswith(f"backup {manifest.id} could not be read from any store: ")
    assert "primary store: damaged (age payload chunk" in message
    assert "replica store: damaged (age payload chunk" in message
    assert raised.value.hint == "use an older backup (`etcdops snapshot list --store all` " \
        "lists them)"
    with pytest.raises(IntegrityError) as only:
        snapshot_status(config, manifest.id, LogReporter(), store="primary")
    assert only.value.message.startswith(f"backup {manifest.id} could not be read from any")
    assert "leave out --from" in only.value.hint
