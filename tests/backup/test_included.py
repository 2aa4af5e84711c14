"""[backup] include_files: what is archived, the refusals before any snapshot is taken, the
object that stock age and zstd still read as the plain snapshot, and a read-back that stops at
the end of the files."""

import dataclasses
import hashlib
import json
import os
import subprocess

import pyrage
import pytest
from pyrage import x25519
from typer.testing import CliRunner

from etcdops.backup.included import MAX_ARCHIVE_BYTES, archive_files, read_included
from etcdops.backup.manifest import Manifest
from etcdops.backup.readback import fetch_snapshot, locate
from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.errors import ConfigError
from etcdops.etcd.binaries import find_binary
from etcdops.report import LogReporter
from etcdops.stream.frames import FRAME_MAGIC
from tests.backup.included_files import host_entries, include, make_host_files, manifest_entries


def entries_of(archive):
    return [dataclasses.asdict(entry) for entry in archive.files]


def test_a_file_and_a_directory_are_archived_recursively_with_their_modes(tmp_path):
    made = make_host_files(tmp_path)
    archive = archive_files(host_entries(tmp_path))
    assert entries_of(archive) == manifest_entries(made)
    assert archive.frame[:4] == FRAME_MAGIC.to_bytes(4, "little")


def test_globs_expand_and_a_file_named_twice_is_archived_once(tmp_path):
    made = make_host_files(tmp_path)
    kube = tmp_path / "etc/kubernetes"
    archive = archive_files([f"{kube}/*.yaml", f"{kube}/pki/**/*.key", f"{kube}/pki/etcd/ca.key"])
    wanted = {p: v for p, v in made.items() if p.endswith((".yaml", ".key"))}
    assert entries_of(archive) == manifest_entries(wanted)


def test_a_directory_linked_back_into_itself_is_walked_once(tmp_path):
    made = make_host_files(tmp_path)
    pki = tmp_path / "etc/kubernetes/pki/etcd"
    (pki / "again").symlink_to(".")
    archive = archive_files([str(pki)])
    assert entries_of(archive) == manifest_entries({p: v for p, v in made.items() if "pki" in p})


def test_no_entries_no_frame():
    archive = archive_files(())
    assert (archive.files, archive.frame) == ((), b"")


@pytest.mark.parametrize(("entry", "message"), [
    ("etc/kubernetes/enc.yaml", "entry 'etc/kubernetes/enc.yaml' is not an absolute path"),
    ("{root}/etc/kubernetes/encryption.yaml",
     "entry '{root}/etc/kubernetes/encryption.yaml' matches no file on this host"),
    ("{root}/etc/kubernetes/*.json", "entry '{root}/etc/kubernetes/*.json' matches no file"),
    ("{root}/empty/", "entry '{root}/empty/' matches no file on this host"),
    ("{root}/dangling", "cannot read {root}/dangling: it is a symbolic link to nothing"),
    ("{root}/etc/kubernetes/pki/", "cannot read {root}/etc/kubernetes/pki/etcd/dangling: it is "
     "a symbolic link to nothing"),
    ("{root}/fifo", "entry '{root}/fifo': {root}/fifo is neither a regular file nor a directory"),
    ("{root}/huge", f"come to {MAX_ARCHIVE_BYTES + 1} bytes, more than the {MAX_ARCHIVE_BYTES}"),
], ids=["relative", "missing", "glob matching nothing", "empty directory", "broken link",
        "broken link in a directory", "fifo", "too large"])
def test_what_cannot_be_archived_is_a_config_error_naming_it(tmp_path, entry, message):
    root = tmp_path / "host"
    make_host_files(root)
    (root / "empty").mkdir()
    (root / "dangling").symlink_to(root / "gone")
    os.mkfifo(root / "fifo")
    with open(root / "huge", "wb") as huge:  # sparse: its size, not its bytes, is refused
        huge.truncate(MAX_ARCHIVE_BYTES + 1)
    if "pki/" in entry:
        (root / "etc/kubernetes/pki/etcd/dangling").symlink_to(root / "gone")
    with pytest.raises(ConfigError) as caught:
        archive_files([entry.format(root=root)])
    assert message.format(root=root) in caught.value.message
    assert caught.value.message.startswith("[backup] include_files")
    assert "\n" not in str(caught.value)


# --- saves on real etcd -------------------------------------------------------------------------


def test_a_saved_backup_lists_its_files_and_stock_age_and_zstd_still_give_the_snapshot(
    backup_config, etcd_loaded, age_identity, tmp_path
):
    made = make_host_files(tmp_path / "host")
    config = include(backup_config, *host_entries(tmp_path / "host"))
    result = save_snapshot(config, LogReporter())
    manifest = result.manifest
    assert result.as_dict()["files"] == manifest_entries(made)
    stored_manifest = (config.local.dir / manifest.manifest_key).read_bytes()
    assert json.loads(stored_manifest)["files"] == manifest_entries(made)
    assert Manifest.from_json(stored_manifest, "test").files == manifest.files

    stored = (config.local.dir / manifest.object_key).read_bytes()
    for content, _mode, _mtime in made.values():
        assert content not in stored  # inside the encryption
    identity = x25519.Identity.from_str(
        next(line for line in age_identity.path.read_text().splitlines()
             if line.startswith("AGE-SECRET-KEY-")))
    decrypted = pyrage.decrypt(stored, [identity])
    assert decrypted[:4] == FRAME_MAGIC.to_bytes(4, "little")  # the files come first
    plain = subprocess.run(["zstd", "-d", "-c"], input=decrypted, capture_output=True,
                           check=True, timeout=60).stdout
    assert hashlib.sha256(plain[:-32]).hexdigest() == manifest.snapshot_db_sha256
    assert len(plain) == manifest.snapshot_size
    fetched = tmp_path / "fetched.db"
    fetch_snapshot(config, manifest.id, fetched, LogReporter())
    assert fetched.read_bytes() == plain
    (tmp_path / "stock.db").write_bytes(plain)
    subprocess.run(
        [str(find_binary("etcdutl")), "snapshot", "restore", str(tmp_path / "stock.db"),
         f"--data-dir={tmp_path / 'restored'}"],
        check=True, capture_output=True, timeout=120,
    )
    assert (tmp_path / "restored/member/snap/db").is_file()


def test_a_backup_without_files_has_a_manifest_without_the_key(backup_config, etcd_loaded):
    result = save_snapshot(backup_config, LogReporter())
    stored = (backup_config.local.dir / result.manifest.manifest_key).read_bytes()
    assert "files" not in json.loads(stored)  # what an etcdops from before them still reads
    assert Manifest.from_json(stored, "test").files == ()
    assert result.as_dict()["files"] == []


def test_a_missing_file_fails_the_save_before_the_snapshot_and_stores_nothing(
    backup_config, backup_toml, etcd_loaded, tmp_path
):
    make_host_files(tmp_path / "host")
    missing = str(tmp_path / "host/etc/kubernetes/encryption-config.yaml")
    config = include(backup_config, *host_entries(tmp_path / "host"), missing)
    # before etcd is asked for anything: an etcd that cannot be reached is never noticed
    nowhere = dataclasses.replace(config.etcd, endpoints=("http://127.0.0.1:9",))
    with pytest.raises(ConfigError, match="matches no file on this host"):
        save_snapshot(dataclasses.replace(config, etcd=nowhere), LogReporter())
    assert not config.local.dir.exists() or not any(config.local.dir.rglob("*.db.zst.age"))

    with backup_toml.open("a") as toml:
        toml.write(f'[backup]\ninclude_files = ["{missing}"]\n')
    run = CliRunner().invoke(app, ["snapshot", "save", "--local-only", "--config",
                                   str(backup_toml)])
    assert run.exit_code == 10, run.output
    assert f"entry '{missing}' matches no file on this host" in run.output
    assert not any(config.local.dir.rglob("*.db.zst.age"))


class Counting:
    """A reader that counts what was read from it."""

    def __init__(self, reader, counted):
        self.reader, self.counted = reader, counted

    def read(self, size=-1):
        data = self.reader.read(size)
        self.counted.append(len(data))
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.reader.close()


def test_reading_the_files_back_reads_only_the_start_of_a_large_object(
    backup_config, etcd_loaded, tmp_path
):
    from etcdops.etcd.session import EtcdSession

    with EtcdSession(etcd_loaded.cluster.etcd_config()) as session:
        for index in range(24):  # what does not compress, a request each (etcd's limit)
            session.put_many([(f"/registry/secrets/big/{index}".encode(), os.urandom(1 << 20))])
    made = make_host_files(tmp_path / "host")
    config = include(backup_config, *host_entries(tmp_path / "host"))
    manifest = save_snapshot(config, LogReporter()).manifest
    assert manifest.object_size > 24 << 20
    (source,), _notes = locate(config, manifest.id, LogReporter())
    counted: list[int] = []
    opener = source.opener
    source = dataclasses.replace(source, opener=lambda: Counting(opener(), counted))
    included = read_included(config, source, LogReporter())
    assert {f.entry.path: f.data for f in included.files} == {
        path: content for path, (content, _mode, _mtime) in made.items()
    }
    assert included.checks == (
        "age authentication", "included files' sizes and sha256 against the manifest"
    )
    assert sum(counted) <= 2 << 20
