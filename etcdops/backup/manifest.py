"""The manifest: what a backup is, written beside its object and always last.

A backup without its manifest does not exist: the object may be half-written or half-deleted.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from etcdops.errors import IntegrityError

SCHEMA_VERSION = 1
OBJECT_SUFFIX = ".db.zst.age"
MANIFEST_SUFFIX = ".manifest.json"
CHECK_SUFFIX = ".check.json"  # when the copy beside it was last checked (etcdops.backup.checks)


def etcd_id(value: int) -> str:
    """An etcd cluster or member ID as a manifest records it: hex, as etcdctl prints it."""
    return f"{value:x}"


@dataclass(frozen=True)
class EtcdSource:
    endpoint: str
    cluster_id: str
    member_id: str
    version: str
    revision: int
    raft_index: int
    db_size: int
    keys: int


@dataclass(frozen=True)
class ManifestFile:
    """One file a restore needs besides etcd's data ([backup] include_files), as it was saved."""

    path: str  # absolute, on the host the backup was taken on
    size: int
    sha256: str
    mode: str  # octal permission bits, e.g. "0600"


@dataclass(frozen=True)
class Manifest:
    id: str
    cluster: str
    created_at: datetime
    etcd: EtcdSource
    snapshot_size: int
    snapshot_db_sha256: str
    object_key: str
    object_size: int
    object_sha256: str
    compression: dict[str, Any]
    encryption: dict[str, Any]
    tool_version: str
    durations: dict[str, float] = field(default_factory=dict)
    files: tuple[ManifestFile, ...] = ()  # what the object carries ahead of the snapshot
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        """The manifest as stored: stable key order so that copies compare equal."""
        doc = asdict(self)
        doc["created_at"] = manifest_time(self.created_at)
        doc["tool"] = {"name": "etcdops", "version": doc.pop("tool_version")}
        if not self.files:
            # absent rather than empty: a backup without included files stays readable by an
            # etcdops from before them, which refuses keys it does not know
            del doc["files"]
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Manifest:
        """Parse a stored manifest; IntegrityError names the file when it is not one."""
        try:
            doc = json.loads(data)
            if doc.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"unsupported schema_version {doc.get('schema_version')!r}")
            doc["created_at"] = datetime.fromisoformat(doc["created_at"])
            doc["etcd"] = EtcdSource(**doc["etcd"])
            doc["tool_version"] = doc.pop("tool")["version"]
            doc["files"] = tuple(ManifestFile(**entry) for entry in doc.get("files", ()))
            return cls(**doc)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(
                f"manifest {source} is unreadable: {exc}",
                "the backup's manifest is damaged; use another copy or another backup",
            ) from exc

    @property
    def manifest_key(self) -> str:
        return BackupKeys.of(self.object_key).manifest

    @property
    def check_key(self) -> str:
        return BackupKeys.of(self.object_key).check


@dataclass(frozen=True)
class BackupKeys:
    """The keys of one backup's files in a store, all derived from where one of them is."""

    object: str
    manifest: str
    check: str

    @classmethod
    def of(cls, key: str) -> BackupKeys:
        """The keys beside an object, manifest or check record key."""
        for suffix in (OBJECT_SUFFIX, MANIFEST_SUFFIX, CHECK_SUFFIX):
            if key.endswith(suffix):
                base = key.removesuffix(suffix)
                return cls(base + OBJECT_SUFFIX, base + MANIFEST_SUFFIX, base + CHECK_SUFFIX)
        raise ValueError(f"{key} is not a backup's key")

    @property
    def id(self) -> str:
        return backup_id_of(self.object)


def manifest_time(moment: datetime) -> str:
    """A moment as every manifest writes it: UTC, to the millisecond, with a Z."""
    # milliseconds: two backups in one second must still sort in the order they were taken
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_backup_id(created: datetime) -> str:
    """A sortable, unique id: the UTC time plus randomness for two saves in one second."""
    return created.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def backup_id_of(object_key: str) -> str:
    """The backup id an object key names: {...}/{id}.db.zst.age."""
    return object_key.rsplit("/", 1)[-1].removesuffix(OBJECT_SUFFIX)


def backup_id_time(backup_id: str) -> datetime | None:
    """When the save that chose this id began (to the second), or None for another name."""
    try:
        return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def object_key(prefix: str, cluster: str, backup_id: str, created: datetime) -> str:
    """The design's layout: {prefix}{cluster}/snapshots/{YYYY}/{MM}/{DD}/{id}.db.zst.age."""
    day = created.astimezone(UTC).strftime("%Y/%m/%d")
    return f"{prefix}{cluster}/snapshots/{day}/{backup_id}{OBJECT_SUFFIX}"


def snapshots_prefix(prefix: str, cluster: str) -> str:
    """Where every backup of one cluster lives in a store."""
    return f"{prefix}{cluster}/snapshots/"
