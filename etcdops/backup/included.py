"""What a restore needs besides etcd's data ([backup] include_files), carried inside the backup.

A restored etcd is of little use without the kube-apiserver's EncryptionConfiguration (Secrets
encrypted at rest cannot be read without its keys) or, on a rebuilt host, etcd's PKI. Those
files travel in the backup's own object, inside the same age encryption as the snapshot, as a
POSIX tar in a zstd skippable frame ahead of the snapshot's frame (etcdops.stream.frames):
`age -d | zstd -d` still yields the plain snapshot alone, and prune, replication and the
object's sha256 cover the files unchanged. The manifest lists each file's path, size, sha256 and
mode; reading them back stops at the end of the leading frames, so it costs the first age
chunks of an object, not the whole snapshot.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import NoReturn

from etcdops.backup.manifest import Manifest, ManifestFile
from etcdops.backup.readback import READ_SIZE, BackupSource, damage_or_wrong_key
from etcdops.config import Config
from etcdops.errors import ConfigError, CryptoError, IntegrityError
from etcdops.report import Reporter
from etcdops.stream.frames import LeadingFrames, skippable_frame
from etcdops.stream.writers import AgeDecrypt

# These files are small (a PKI is a few dozen KiB, an EncryptionConfiguration less) and the
# archive is held in memory on its way into the backup and back out. The cap keeps a glob that
# matches far more than was meant (a whole /etc, a log directory) from costing a save its memory
# or slipping into every backup unnoticed; 64 MiB is a thousand times what a restore needs.
MAX_ARCHIVE_BYTES = 64 << 20
TAG = b"etcdops-files/"  # the start of our frames' payload, then the format version's line
FORMAT_VERSION = b"1\n"
_ENTRY = "[backup] include_files"


@dataclass(frozen=True)
class Archive:
    """The files of one save, ready to go ahead of the snapshot."""

    files: tuple[ManifestFile, ...]
    frame: bytes = field(repr=False)  # b"" when there are no files


@dataclass(frozen=True)
class IncludedFile:
    """One file read back out of a backup, checked."""

    entry: ManifestFile
    mtime: float
    data: bytes = field(repr=False)

    @property
    def relative(self) -> PurePosixPath:
        """Its path below the directory it is restored into."""
        return PurePosixPath(self.entry.path.lstrip("/"))


@dataclass(frozen=True)
class Included:
    """The files a backup carries, and the checks they passed."""

    files: tuple[IncludedFile, ...]
    checks: tuple[str, ...]


def archive_files(entries: Sequence[str]) -> Archive:
    """Expand include_files (paths or globs; directories recursively) and archive what they
    name. ConfigError, before any snapshot is taken, for an entry that names no file, a file
    that cannot be read, or more than MAX_ARCHIVE_BYTES: a backup without them is no restore.

    Config errors and not storage ones (exit 10, not 14): the fix is in the configuration or on
    this host's files, and no store was involved."""
    if not entries:
        return Archive((), b"")
    paths = _expand(entries)
    total = sum(size for _path, size in paths)
    if total > MAX_ARCHIVE_BYTES:
        _too_large(total)
    buffer = io.BytesIO()
    files = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, _size in paths:
            data, status = _read(path)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mtime = len(data), status.st_mtime
            info.mode = stat.S_IMODE(status.st_mode)
            tar.addfile(info, io.BytesIO(data))
            files.append(ManifestFile(
                path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                mode=f"{info.mode:04o}",
            ))
    tar_bytes = buffer.getvalue()
    if len(tar_bytes) > MAX_ARCHIVE_BYTES:
        _too_large(len(tar_bytes))
    return Archive(tuple(files), skippable_frame(TAG, FORMAT_VERSION + tar_bytes))


def _too_large(size: int) -> NoReturn:
    raise ConfigError(
        f"{_ENTRY} come to {size} bytes, more than the {MAX_ARCHIVE_BYTES} a backup carries",
        "include only what a restore needs (the EncryptionConfiguration, etcd's PKI), not "
        "whole directories of other files",
    )


def _expand(entries: Sequence[str]) -> list[tuple[str, int]]:
    """Every file the entries name, once each, in path order, with its size."""
    found: dict[str, int] = {}
    for entry in entries:
        if not os.path.isabs(entry):
            raise ConfigError(
                f"{_ENTRY} entry {entry!r} is not an absolute path",
                "write the full path or glob, e.g. /etc/kubernetes/enc.yaml",
            )
        files: dict[str, int] = {}
        for match in sorted(glob.glob(entry, recursive=True)):
            _add(os.path.normpath(match), entry, files)
        if not files:
            raise ConfigError(
                f"{_ENTRY} entry {entry!r} matches no file on this host",
                "restore the file, correct the path, or remove the entry; a backup without the "
                "files a restore needs is not taken",
            )
        found |= files
    return sorted(found.items())


def _add(path: str, entry: str, files: dict[str, int]) -> None:
    """A matched path: a file, or a directory's files (symbolic links followed, each directory
    once, so that a link back up cannot loop)."""
    status = _stat(path)
    if stat.S_ISREG(status.st_mode):
        files[path] = status.st_size
        return
    if not stat.S_ISDIR(status.st_mode):
        _not_a_file(path, entry)
    seen: set[tuple[int, int]] = set()
    for directory, subdirectories, names in os.walk(path, followlinks=True, onerror=_walk_error):
        here = os.stat(directory)
        if (here.st_dev, here.st_ino) in seen:
            subdirectories.clear()
            continue
        seen.add((here.st_dev, here.st_ino))
        subdirectories.sort()
        for name in names:
            member = os.path.join(directory, name)
            member_status = _stat(member)
            if not stat.S_ISREG(member_status.st_mode):
                _not_a_file(member, entry)
            files[member] = member_status.st_size


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        _unreadable(path, exc)


def _walk_error(exc: OSError) -> NoReturn:
    _unreadable(exc.filename, exc)


def _read(path: str) -> tuple[bytes, os.stat_result]:
    try:
        with open(path, "rb") as handle:
            return handle.read(), os.fstat(handle.fileno())
    except OSError as exc:
        _unreadable(path, exc)


def _unreadable(path: str, exc: OSError) -> NoReturn:
    broken = os.path.islink(path) and not os.path.exists(path)
    why = "it is a symbolic link to nothing" if broken else (exc.strerror or str(exc))
    raise ConfigError(
        f"{_ENTRY}: cannot read {path}: {why}",
        "run the save as a user that can read it (root for /etc/kubernetes/pki), fix the file, "
        "or remove it from include_files",
    ) from exc


def _not_a_file(path: str, entry: str) -> NoReturn:
    raise ConfigError(
        f"{_ENTRY} entry {entry!r}: {path} is neither a regular file nor a directory",
        "include regular files and directories only",
    )


def read_included(config: Config, source: BackupSource, reporter: Reporter) -> Included:
    """The files a backup carries, checked against its manifest (every path, size and sha256),
    reading the object only as far as the end of its leading frames. IntegrityError when they
    differ; a plain snapshot, or a backup saved without include_files, carries none."""
    manifest = source.manifest
    if not source.encrypted:
        return Included((), ())
    from etcdops.crypto.keys import configured_identities

    identities = configured_identities(config.encryption)
    frames = LeadingFrames(TAG, MAX_ARCHIVE_BYTES + len(FORMAT_VERSION), source.label)
    decrypt = AgeDecrypt(frames, identities)
    reporter.event(f"reading the included files of {source.label}")
    try:
        with source.opener() as reader:
            while not frames.done and (block := reader.read(READ_SIZE)):
                decrypt.write(block)
            if not frames.done:
                decrypt.close()  # a small object: age authenticates its last chunk here
                frames.close()
    except CryptoError as exc:
        raise damage_or_wrong_key(exc, source, identities) from exc
    if len(frames.payloads) > 1:
        raise IntegrityError(
            f"{source.label} carries {len(frames.payloads)} included files archives, not one",
            "this is not an object etcdops wrote; use another copy of the backup",
        )
    tar = _payload(frames.payloads[0], source.label) if frames.payloads else None
    files = _unpack(tar, source.label) if tar is not None else ()
    checks = ["age authentication"]
    if manifest is not None:
        _compare(manifest, files, source.label)
        checks.append("included files' sizes and sha256 against the manifest")
    return Included(files, tuple(checks))


def _payload(payload: bytes, label: str) -> bytes:
    version, _, tar = payload.partition(b"\n")
    if version + b"\n" != FORMAT_VERSION:
        raise IntegrityError(
            f"{label}: its included files are in format {version[:16]!r}, which this etcdops "
            f"does not read (it reads {FORMAT_VERSION.strip()!r})",
            "read them with the etcdops version that saved the backup, or a newer one",
        )
    return tar


def _unpack(tar_bytes: bytes, label: str) -> tuple[IncludedFile, ...]:
    """Every member of the archive, refusing what is not a regular file at a safe relative path
    (no absolute path, no '..'): a damaged or hostile archive must not write outside the
    directory it is restored into."""
    files: dict[str, IncludedFile] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if not member.isreg() or name.is_absolute() or ".." in name.parts or not name.parts:
                    raise IntegrityError(
                        f"{label}: its included files hold {member.name!r}, which is not a "
                        "regular file at a relative path",
                        "this is not an archive etcdops wrote; use another copy of the backup",
                    )
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                path = "/" + name.as_posix()
                if path in files:
                    raise IntegrityError(
                        f"{label}: its included files hold {path} twice",
                        "this is not an archive etcdops wrote; use another copy of the backup",
                    )
                files[path] = IncludedFile(
                    ManifestFile(path, len(data), hashlib.sha256(data).hexdigest(),
                                 f"{stat.S_IMODE(member.mode):04o}"),
                    float(member.mtime), data,
                )
    except tarfile.TarError as exc:
        raise IntegrityError(
            f"{label}: its included files archive is unreadable: {exc}",
            "use another copy of the backup",
        ) from exc
    return tuple(files.values())


def _compare(manifest: Manifest, files: tuple[IncludedFile, ...], label: str) -> None:
    listed = {entry.path: entry for entry in manifest.files}
    held = {file.entry.path: file.entry for file in files}
    for path in sorted(listed.keys() | held.keys()):
        want, got = listed.get(path), held.get(path)
        if want == got:
            continue
        if got is None:
            problem = "is listed in its manifest but missing from the backup"
        elif want is None:
            problem = "is in the backup but not in its manifest"
        else:
            problem = ", ".join(
                f"{what} {getattr(got, what)} where the manifest says {getattr(want, what)}"
                for what in ("size", "sha256", "mode") if getattr(got, what) != getattr(want, what)
            )
        raise IntegrityError(
            f"{label}: included file {path} {problem}",
            "this copy is damaged or not the backup its manifest describes; use another copy",
        )

