"""Helpers for [backup] include_files: a host's files as a restore needs them (an
EncryptionConfiguration and etcd's PKI, nested, with their own modes), and a config naming them."""

import dataclasses
import hashlib
import os
from pathlib import Path

from etcdops.config.settings import BackupConfig

# path below the host root -> (content, mode)
HOST_FILES = {
    "etc/kubernetes/enc.yaml": (b"kind: EncryptionConfiguration\nkeys: [secret]\n", 0o600),
    "etc/kubernetes/pki/etcd/ca.crt": (b"-----BEGIN CERTIFICATE-----\nca\n", 0o644),
    "etc/kubernetes/pki/etcd/ca.key": (os.urandom(1200), 0o600),
    "etc/kubernetes/pki/etcd/peers/peer.key": (os.urandom(900), 0o400),
}


def make_host_files(root: Path) -> dict[str, tuple[bytes, int, float]]:
    """HOST_FILES written under root; {absolute path: (content, mode, mtime)}."""
    made = {}
    for relative, (content, mode) in HOST_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
        mtime = 1_700_000_000.5 + len(made)  # distinct, and not "now"
        os.utime(path, (mtime, mtime))
        made[str(path)] = (content, mode, mtime)
    return made


def include(config, *entries):
    """config with [backup] include_files = entries."""
    return dataclasses.replace(config, backup=BackupConfig(include_files=tuple(entries)))


def host_entries(root: Path) -> tuple[str, str]:
    """The two entries an operator writes: the file, and the PKI directory (trailing slash)."""
    return str(root / "etc/kubernetes/enc.yaml"), f"{root / 'etc/kubernetes/pki/etcd'}/"


def manifest_entries(made: dict[str, tuple[bytes, int, float]]) -> list[dict[str, object]]:
    """What the manifest must say of the files made, in path order."""
    return [
        {"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
         "mode": f"{mode:04o}"}
        for path, (content, mode, _mtime) in sorted(made.items())
    ]
