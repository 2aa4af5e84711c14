"""Putting back the files a backup carries besides etcd's data ([backup] include_files).

Each file goes under the destination at the path it was saved from (DIR/etc/kubernetes/enc.yaml)
with its mode and mtime. Nothing is written until every file is known to be writable: a file
already there is refused without force, naming it. With force it is not lost either: it is moved
aside as a hidden `.NAME.etcdops-<UTC time>` beside the new one. Each file appears whole (a
temporary file, fsynced, renamed in), and directories created on the way are 0700, since they
may hold private keys.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from etcdops.backup.included import Included, IncludedFile, read_included
from etcdops.backup.manifest import ManifestFile
from etcdops.backup.readback import BackupSource, first_good, locate
from etcdops.config import Config
from etcdops.errors import StorageError, UsageError
from etcdops.report import Reporter
from etcdops.restore.datadir import aside_path
from etcdops.stores.configured import Stores
from etcdops.stores.local import AtomicFile, file_in_the_way, fsync_dir


@dataclass(frozen=True)
class RestoredFile:
    path: str  # where it was on the host the backup was taken on
    written_to: Path
    size: int
    sha256: str
    mode: str
    moved_aside: Path | None  # where the file that stood there went (force)


@dataclass(frozen=True)
class FilesResult:
    backup_id: str | None  # None for a snapshot file without a manifest
    source: str  # what was read, in words
    store: str | None
    fallbacks: tuple[str, ...]  # copies tried first that failed, and why
    dest_dir: Path
    files: tuple[RestoredFile, ...]
    checks: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """The JSON form: which backup, where the files went, and how they were checked."""
        return {
            "backup_id": self.backup_id,
            "source": self.source,
            "store": self.store,
            "fallbacks": list(self.fallbacks),
            "dest_dir": str(self.dest_dir),
            "files": [
                {"path": f.path, "written_to": str(f.written_to), "size": f.size,
                 "sha256": f.sha256, "mode": f.mode,
                 "moved_aside": str(f.moved_aside) if f.moved_aside else None}
                for f in self.files
            ],
            "checks": list(self.checks),
        }


def restore_files(
    config: Config,
    ref: str,
    dest_dir: Path,
    reporter: Reporter,
    *,
    force: bool = False,
    store: str | None = None,
    stores: Stores | None = None,
) -> FilesResult:
    """Write the files backup REF ('latest', an id or prefix, or a file) carries under dest_dir
    at their recorded paths, each checked against the manifest first; trying each store's copy
    in turn as a restore does. Without force, a file already there refuses the whole operation
    before anything is written."""
    return write_files(check_files(config, ref, dest_dir, reporter, force=force, store=store,
                                   stores=stores), reporter)


@dataclass(frozen=True)
class CheckedFiles:
    """A backup's included files, read and checked, and where they would go: nothing written."""

    source: BackupSource
    included: Included
    fallbacks: tuple[str, ...]
    dest_dir: Path
    force: bool


def check_files(
    config: Config,
    ref: str,
    dest_dir: Path,
    reporter: Reporter,
    *,
    force: bool = False,
    store: str | None = None,
    stores: Stores | None = None,
) -> CheckedFiles:
    """Read and check the files backup REF carries and refuse what could not be written, as
    restore_files does, writing nothing: what `restore --files-to` does before the member."""
    located = locate(config, ref, reporter, store=store, stores=stores)
    source, included, fallbacks = first_good(
        located, lambda s: read_included(config, s, reporter), reporter
    )
    dest = dest_dir.expanduser().absolute()
    _check_targets(dest, included, force)  # refused now; write_files checks again, time passes
    return CheckedFiles(source, included, tuple(fallbacks), dest, force)


def write_files(checked: CheckedFiles, reporter: Reporter) -> FilesResult:
    """Write files checked by check_files, checking their targets once more (time passed)."""
    targets = _check_targets(checked.dest_dir, checked.included, checked.force)
    written = tuple(_write_all(targets, reporter))
    source = checked.source
    if not written:
        reporter.event(f"{source.label} carries no included files")
    return FilesResult(
        backup_id=source.manifest.id if source.manifest else None,
        source=source.label,
        store=source.store,
        fallbacks=checked.fallbacks,
        dest_dir=checked.dest_dir,
        files=written,
        checks=checked.included.checks,
    )


def file_target(dest: Path, entry: ManifestFile, force: bool) -> tuple[Path, str | None]:
    """Where an included file goes back below dest, and why it cannot (None: it can): the one
    rule for `restore --files-to` and for dr run's prerequisites."""
    target = dest.joinpath(*PurePosixPath(entry.path.lstrip("/")).parts)
    if (blocker := file_in_the_way(target.parent)) is not None:
        return target, f"{blocker} is a file, not a directory"
    if target.is_dir():
        return target, f"{target} is a directory"
    if not force and (target.exists() or target.is_symlink()):
        return target, f"{target} already exists (nothing was written)"
    return target, None


def _check_targets(
    dest: Path, included: Included, force: bool
) -> list[tuple[IncludedFile, Path]]:
    """Where each file goes, refusing before anything is written what cannot be."""
    if blocker := file_in_the_way(dest):
        raise UsageError(
            f"--files-to {dest}: {blocker} is a file, not a directory",
            "give a directory (it is created if absent), or move that file away",
        )
    targets = []
    for file in included.files:
        target, problem = file_target(dest, file.entry, force)
        if problem is not None:
            raise UsageError(
                f"cannot restore {file.entry.path} to {target}: {problem}",
                "pass --force to replace an existing file (it is kept as a hidden "
                f".{target.name}.etcdops-<UTC time> beside it), move what is in the way, or "
                "choose another --files-to directory",
            )
        targets.append((file, target))
    return targets


def _write_all(targets: list[tuple[IncludedFile, Path]], reporter: Reporter) -> list[RestoredFile]:
    written: list[RestoredFile] = []
    moment = datetime.now(UTC)
    for file, target in targets:
        try:
            aside = _write(file, target, moment)
        except StorageError as exc:
            done = f"{len(written)} of {len(targets)} files were written first, " if written else ""
            raise StorageError(
                f"cannot restore {file.entry.path} to {target}: {exc.message}",
                f"{done}no file was overwritten (one replaced is kept as a hidden "
                ".NAME.etcdops-<UTC time> beside it); check that directory's permissions and "
                "free space, or choose another --files-to directory",
            ) from exc
        reporter.event(
            f"restored {file.entry.path} to {target} (mode {file.entry.mode})"
            + (f"; the file there is now {aside}" if aside else "")
        )
        written.append(RestoredFile(
            file.entry.path, target, file.entry.size, file.entry.sha256, file.entry.mode, aside
        ))
    return written


def _write(file: IncludedFile, target: Path, moment: datetime) -> Path | None:
    """One file, whole or not at all; the file it replaces moved aside, and put back if the
    rename in fails."""
    _make_parents(target.parent)
    mode = int(file.entry.mode, 8)
    writer = AtomicFile(target, mode & 0o700)  # no more than the owner until the mode is set
    try:
        writer.write(file.data)
    except BaseException:
        writer.abort()
        raise
    aside = None
    if target.exists() or target.is_symlink():
        # hidden: kubelet reads every other file in its static pod directory as a pod
        aside = aside_path(target.with_name(f".{target.name}"), moment)
        try:
            os.rename(target, aside)
        except OSError as exc:
            writer.abort()
            raise StorageError(f"cannot move it aside: {exc.strerror or exc}") from exc
    try:
        writer.commit()
        os.chmod(target, mode)
        os.utime(target, (file.mtime, file.mtime))
    except BaseException as exc:
        if aside is not None and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(aside, target)
        if isinstance(exc, OSError):
            raise StorageError(exc.strerror or str(exc)) from exc
        raise
    return aside


def _make_parents(directory: Path) -> None:
    """Create the missing directories down to this one, each 0700."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
            fsync_dir(path.parent)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to own
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from exc
