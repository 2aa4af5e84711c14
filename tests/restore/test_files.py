"""Putting the included files back ([backup] include_files) from real backups of etcd_loaded:
byte for byte with their modes, never over a file without force, nothing written on a refusal,
a tampered or hostile archive refused, the replica read when the primary's copy is damaged, and
the drill's check of them."""

import dataclasses
import json
import os
import stat
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
from typer.testing import CliRunner

import etcdops.backup.save as save_module
from etcdops.backup.included import FORMAT_VERSION, TAG
from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.config import Config, EncryptionConfig
from etcdops.crypto.age import Identity, load_identities
from etcdops.crypto.keys import generate_identity_file
from etcdops.errors import CryptoError, IntegrityError, UsageError
from etcdops.report import LogReporter
from etcdops.restore.drill import PHASES, verify_backup
from etcdops.restore.files import restore_files
from etcdops.stream.frames import skippable_frame
from etcdops.stream.pipeline import SnapshotEncoder
from tests.backup.included_files import host_entries, include, make_host_files
from tests.backup.two_regions import with_s3
from tests.stream.test_pipeline import Sink
from tests.stream.test_writers import bbolt_db, snapshot_bytes


@pytest.fixture
def host(tmp_path):
    """The host's files: {absolute path: (content, mode, mtime)}."""
    return make_host_files(tmp_path / "host")


@pytest.fixture
def files_config(backup_config, host, tmp_path):
    return include(backup_config, *host_entries(tmp_path / "host"))


@pytest.fixture
def saved_with_files(files_config, etcd_loaded):
    return save_snapshot(files_config, LogReporter()).manifest


def restored_at(dest: Path, path: str) -> Path:
    return dest / path.lstrip("/")


def tree(path: Path) -> dict[str, bytes]:
    """Every file below path and its content."""
    return {str(p.relative_to(path)): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else {}


def test_the_files_come_back_byte_for_byte_with_their_modes_and_times(
    files_config, saved_with_files, host, tmp_path
):
    dest = tmp_path / "dest"
    result = restore_files(files_config, "latest", dest, LogReporter())
    assert (result.backup_id, result.store, result.fallbacks) == (saved_with_files.id, "local", ())
    assert result.checks == (
        "age authentication", "included files' sizes and sha256 against the manifest"
    )
    assert sorted(f.path for f in result.files) == sorted(host)
    for path, (content, mode, mtime) in host.items():
        target = restored_at(dest, path)
        assert target.read_bytes() == content
        assert stat.S_IMODE(target.stat().st_mode) == mode
        assert target.stat().st_mtime == pytest.approx(mtime, abs=1e-6)
    assert len(tree(dest)) == len(host)  # nothing else, no temporary file left
    # the directories made on the way may hold private keys
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert stat.S_IMODE(restored_at(dest, str(tmp_path / "host/etc")).stat().st_mode) == 0o700
    document = json.loads(json.dumps(result.as_dict()))
    assert {f["path"]: f["mode"] for f in document["files"]} == {
        path: f"{mode:04o}" for path, (_c, mode, _t) in host.items()
    }
    assert all(f["moved_aside"] is None for f in document["files"])


def test_an_existing_file_refuses_the_whole_restore_before_anything_is_written(
    files_config, saved_with_files, host, tmp_path
):
    dest = tmp_path / "dest"
    enc = next(path for path in host if path.endswith("enc.yaml"))
    restored_at(dest, enc).parent.mkdir(parents=True)
    restored_at(dest, enc).write_bytes(b"the one already there")
    before = tree(dest)
    with pytest.raises(UsageError) as caught:
        restore_files(files_config, saved_with_files.id, dest, LogReporter())
    assert caught.value.message.endswith(
        f"{restored_at(dest, enc)} already exists (nothing was written)")
    assert "--force" in caught.value.hint
    assert tree(dest) == before


def test_force_replaces_a_file_and_keeps_the_old_one_aside_hidden(
    files_config, saved_with_files, host, tmp_path
):
    dest = tmp_path / "dest"
    enc = next(path for path in host if path.endswith("enc.yaml"))
    target = restored_at(dest, enc)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the one already there")
    result = restore_files(files_config, saved_with_files.id, dest, LogReporter(), force=True)
    assert target.read_bytes() == host[enc][0]
    (replaced,) = [f.moved_aside for f in result.files if f.moved_aside]
    assert replaced.parent == target.parent
    assert replaced.name.startswith(f".{target.name}.etcdops-")  # hidden from kubelet's reads
    assert replaced.read_bytes() == b"the one already there"
    assert len(tree(dest)) == len(host) + 1


def test_a_file_in_the_way_of_a_directory_is_refused_before_anything_is_written(
    files_config, saved_with_files, host, tmp_path
):
    dest = tmp_path / "dest"
    blocker = restored_at(dest, str(tmp_path / "host/etc/kubernetes/pki"))
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"a file where a directory goes")
    with pytest.raises(UsageError, match=f"{blocker} is a file, not a directory"):
        restore_files(files_config, saved_with_files.id, dest, LogReporter(), force=True)
    assert tree(dest) == {str(blocker.relative_to(dest)): b"a file where a directory goes"}


def wrong_first_sha256(real):
    """save's archive_files, with the manifest's sha256 of the first file wrong."""
    def tampered(entries):
        archive = real(entries)
        first = dataclasses.replace(archive.files[0], sha256="0" * 64)
        return dataclasses.replace(archive, files=(first, *archive.files[1:]))
    return tampered


def test_a_file_that_does_not_match_the_manifest_is_an_integrity_error_and_not_verified(
    files_config, etcd_loaded, host, tmp_path, monkeypatch, backup_toml, scratch
):
    monkeypatch.setattr(save_module, "archive_files", wrong_first_sha256(save_module.archive_files))
    manifest = save_snapshot(files_config, LogReporter()).manifest
    monkeypatch.undo()
    first = manifest.files[0].path
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError) as caught:
        restore_files(files_config, manifest.id, dest, LogReporter())
    assert f"included file {first} sha256 " in caught.value.message
    assert f"where the manifest says {'0' * 64}" in caught.value.message
    assert not dest.exists()

    result = verify_backup(files_config, manifest.id, LogReporter(), drill=True, under=scratch)
    assert not result.verified
    assert any(f"included file {first}" in problem for problem in result.drill.problems)
    assert list(scratch.iterdir()) == []
    run = CliRunner().invoke(app, ["snapshot", "verify", manifest.id, "--drill",
                                   "--config", str(backup_toml)])
    assert run.exit_code == 15, run.output
    assert f"included file {first}" in run.output


def test_the_drill_extracts_and_checks_the_files(files_config, saved_with_files, host, scratch):
    result = verify_backup(files_config, saved_with_files.id, LogReporter(), drill=True,
                           under=scratch)
    drill = result.drill
    assert result.verified and not drill.problems
    assert sorted(drill.files) == sorted(host)
    assert f"{len(host)} included files extracted and checked against the manifest" in drill.notes
    assert result.how.endswith("; included files checked)")
    assert list(drill.phases) == list(PHASES) and "files" in PHASES
    assert result.as_dict()["drill"]["files"] == list(drill.files)
    assert list(scratch.iterdir()) == []  # the files, in the clear, went with the scratch dir


def test_a_backup_without_files_restores_none_and_the_drill_says_so(
    backup_config, saved, tmp_path, scratch
):
    result = restore_files(backup_config, saved.id, tmp_path / "dest", LogReporter())
    assert result.files == () and result.backup_id == saved.id
    assert not (tmp_path / "dest").exists()
    verified = verify_backup(backup_config, saved.id, LogReporter(), drill=True, under=scratch)
    assert verified.verified and verified.drill.files == ()
    assert "no included files in this backup" in verified.drill.notes


def test_the_replica_is_read_when_the_start_of_the_primarys_copy_is_damaged(
    files_config, etcd_loaded, host, s3, tmp_path
):
    config = with_s3(files_config, s3)
    manifest = save_snapshot(config, LogReporter()).manifest
    (config.local.dir / manifest.object_key).unlink()
    client = s3.client("us-east-1")
    key = "backups/" + manifest.object_key
    data = bytearray(client.get_object(Bucket="etcdops-primary", Key=key)["Body"].read())
    data[400] ^= 0x01  # past the age header, in the first chunk: inside the files' frame
    client.put_object(Bucket="etcdops-primary", Key=key, Body=bytes(data))
    result = restore_files(config, manifest.id, tmp_path / "dest", LogReporter())
    assert result.store == "replica"
    assert any("primary store failed" in note for note in result.fallbacks)
    assert tree(tmp_path / "dest") == {
        path.lstrip("/"): content for path, (content, _m, _t) in host.items()
    }


def test_a_wrong_identity_is_a_key_error_and_writes_nothing(
    files_config, saved_with_files, tmp_path
):
    other = tmp_path / "other-identity.txt"
    generate_identity_file(other)
    config = dataclasses.replace(files_config, encryption=dataclasses.replace(
        files_config.encryption, identity_file=other))
    with pytest.raises(CryptoError):
        restore_files(config, saved_with_files.id, tmp_path / "dest", LogReporter())
    assert not (tmp_path / "dest").exists()


def own_key(tmp_path: Path) -> tuple[Config, Identity]:
    """A config with nothing but a fresh identity, and that identity."""
    identity_file = tmp_path / "identity.txt"
    recipient = generate_identity_file(identity_file)
    config = Config(encryption=EncryptionConfig(recipients=(str(recipient),),
                                                identity_file=identity_file))
    return config, load_identities(identity_file)[0]


def hostile_object(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], identity):
    """An age file as etcdops writes one, whose files' archive holds the members given."""
    buffer = BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, BytesIO(data))
    sink = Sink()
    encoder = SnapshotEncoder(sink, [identity.recipient()], 1, "test",
                              preamble=skippable_frame(TAG, FORMAT_VERSION + buffer.getvalue()))
    encoder.write(snapshot_bytes(bbolt_db(b"x" * 5000)))
    encoder.close()
    path.write_bytes(bytes(sink.data))


def member(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o600
    return info


@pytest.mark.parametrize("hostile", [
    member("../../escaped"), member("/etc/escaped"), member("etc/a/../../../escaped"),
    member("etc/link", tarfile.SYMTYPE, "/etc/passwd"), member("etc/dir", tarfile.DIRTYPE),
], ids=["parent", "absolute", "parent inside", "symlink", "directory"])
def test_an_archive_that_would_write_outside_or_not_a_file_is_refused(tmp_path, hostile):
    config, identity = own_key(tmp_path)
    evil = tmp_path / "in" / "evil.db.zst.age"
    evil.parent.mkdir()
    hostile_object(evil, [(member("etc/fine.yaml"), b"fine"), (hostile, b"evil")], identity)
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(IntegrityError, match="which is not a regular file at a relative path"):
        restore_files(config, str(evil), dest, LogReporter())
    assert tree(tmp_path / "deep") == {}
    assert not (tmp_path / "escaped").exists() and not Path("/etc/escaped").exists()


def test_a_file_without_a_manifest_gives_its_files_checked_by_age_alone(tmp_path):
    config, identity = own_key(tmp_path)
    copied = tmp_path / "copied-out.db.zst.age"
    info = member("etc/kubernetes/enc.yaml")
    info.mode = 0o640
    hostile_object(copied, [(info, b"keys")], identity)
    result = restore_files(config, str(copied), tmp_path / "dest", LogReporter())
    assert result.backup_id is None and result.checks == ("age authentication",)
    target = tmp_path / "dest/etc/kubernetes/enc.yaml"
    assert target.read_bytes() == b"keys" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path / "dest") == ["etc"]


def test_restore_files_to_puts_them_back_first_and_an_existing_one_stops_it_all(
    files_config, saved_with_files, host, backup_toml, tmp_path
):
    def restore(*extra: str):
        peer = "http://127.0.0.1:2380"
        return CliRunner().invoke(app, [
            "restore", saved_with_files.id, "--data-dir", str(data_dir), "--name", "cp-1",
            "--initial-cluster", f"cp-1={peer}", "--initial-advertise-peer-urls", peer,
            "--files-to", str(dest), *extra, "--config", str(backup_toml), "-o", "json",
        ])

    data_dir, dest = tmp_path / "member" / "etcd", tmp_path / "restored"
    data_dir.mkdir(parents=True)
    (data_dir / "old").write_text("the old data dir")
    first = restore()
    assert first.exit_code == 0, first.output
    document = json.loads(first.stdout)
    assert document["backup_id"] == saved_with_files.id
    assert len(document["files"]["files"]) == len(host) > 0
    for path, (content, _mode, _mtime) in host.items():
        assert restored_at(dest, path).read_bytes() == content
    assert (data_dir / "member").is_dir() and document["moved_aside"]

    # again: the files are there now, so nothing is touched, the new data dir included
    before_files, before_member = tree(dest), tree(data_dir.parent)
    again = restore()
    assert again.exit_code == 2, again.output
    errors = [line for line in again.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--force" in errors[0]
    assert tree(dest) == before_files and tree(data_dir.parent) == before_member

    forced = restore("--force")
    assert forced.exit_code == 0, forced.output
    assert all(file["moved_aside"] for file in json.loads(forced.stdout)["files"]["files"])
    assert tree(dest) != before_files  # the old copies kept aside beside the new ones


def test_force_without_files_to_is_a_usage_error(backup_toml, tmp_path):
    result = CliRunner().invoke(app, [
        "restore", "latest", "--data-dir", str(tmp_path / "d"), "--name", "a",
        "--initial-cluster", "a=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--force",
        "--config", str(backup_toml),
    ])
    assert result.exit_code == 2 and "--files-to" in result.stderr
    assert not (tmp_path / "d").exists()


def test_a_member_restore_that_fails_writes_no_files_and_a_rerun_needs_no_force(
    files_config, saved_with_files, host, backup_toml, tmp_path
):
    from etcdops.etcd.binaries import find_binary

    failing = tmp_path / "bin" / "etcdutl"
    failing.parent.mkdir()
    failing.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "snapshot restore" ]; then echo "no space left on device" >&2; exit 1; fi\n'
        f'exec {find_binary("etcdutl")} "$@"\n')
    failing.chmod(0o755)
    data_dir, dest = tmp_path / "member" / "etcd", tmp_path / "restored"
    data_dir.parent.mkdir()
    peer = "http://127.0.0.1:2380"

    def restore(env=None):
        return CliRunner().invoke(app, [
            "restore", saved_with_files.id, "--data-dir", str(data_dir), "--name", "cp-1",
            "--initial-cluster", f"cp-1={peer}", "--initial-advertise-peer-urls", peer,
            "--files-to", str(dest), "--config", str(backup_toml),
        ], env=env)

    failed = restore({"ETCDOPS_ETCD_ETCDUTL": str(failing)})
    # the snapshot holds no compaction sample, so no staging etcd: the member's etcdutl fails
    assert failed.exit_code == 1 and "no space left on device" in failed.stderr, failed.output
    assert not dest.exists() and list(data_dir.parent.iterdir()) == []
    rerun = restore()
    assert rerun.exit_code == 0, rerun.output
    for path, (content, _mode, _mtime) in host.items():
        assert restored_at(dest, path).read_bytes() == content
