"""A segment's manifest, and where a chain's segments live in a store.

As with a backup (etcdops.backup.manifest), the manifest is written after its object and says
what the object is: a segment without its manifest does not exist. The layout, beside the
cluster's snapshots:

    {prefix}{cluster}/journal/{base backup id}/{first:020d}-{last:020d}.seg.zst.age
    ... and beside it {first:020d}-{last:020d}.seg.manifest.json

One folder per chain (the full backup the segments extend), zero-padded revisions so that a
listing is in revision order.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from etcdops.backup.manifest import manifest_time
from etcdops.errors import IntegrityError
from etcdops.journal.segment import FORMAT

SCHEMA_VERSION = 1
OBJECT_SUFFIX = ".seg.zst.age"
MANIFEST_SUFFIX = ".seg.manifest.json"
_NAME = re.compile(r"(\d{20})-(\d{20})")


@dataclass(frozen=True)
class SegmentManifest:
    cluster: str
    base_backup_id: str  # the full backup this chain extends
    # the revision the segment follows: the chain's previous segment's last revision, or the
    # base backup's own revision for the first; always first_revision - 1 (revisions are
    # consecutive, etcdops.journal.segment), stated so that a chain proves itself link by link
    previous_revision: int
    first_revision: int
    last_revision: int
    revisions: int
    events: int
    first_change_at: datetime  # when the journal saw the first change, and the last
    last_change_at: datetime
    plain_size: int
    plain_sha256: str
    object_key: str
    object_size: int
    object_sha256: str
    compression: dict[str, Any]
    encryption: dict[str, Any]
    created_at: datetime
    tool_version: str
    format: str = FORMAT
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if problem := self._problem():
            raise ValueError(problem)

    def _problem(self) -> str | None:
        """What makes the manifest contradict itself, or None."""
        if self.format != FORMAT:
            return f"unsupported segment format {self.format!r}"
        if self.first_revision != self.previous_revision + 1:
            return (f"first revision {self.first_revision} does not follow previous revision "
                    f"{self.previous_revision}")
        if not self.first_revision <= self.last_revision:
            return f"first revision {self.first_revision} is after last {self.last_revision}"
        if self.revisions != self.last_revision - self.first_revision + 1:
            return f"{self.revisions} revisions from {self.first_revision} to {self.last_revision}"
        if self.events < self.revisions:
            return f"{self.events} changes in {self.revisions} revisions"
        if self.last_change_at < self.first_change_at:
            return "its last change is older than its first"
        expected = segment_key(
            "", self.cluster, self.base_backup_id, self.first_revision, self.last_revision
        )
        if not self.object_key.endswith(expected):
            return f"object key {self.object_key} is not where it belongs ({expected})"
        return None

    @property
    def manifest_key(self) -> str:
        return SegmentKeys.of(self.object_key).manifest

    @property
    def name(self) -> str:
        """How an operator reads it: the chain and the revisions."""
        return f"segment {self.first_revision}-{self.last_revision} of chain {self.base_backup_id}"

    def to_json(self) -> bytes:
        """The manifest as stored: stable key order so that copies compare equal."""
        doc = asdict(self)
        for moment in ("first_change_at", "last_change_at", "created_at"):
            doc[moment] = manifest_time(getattr(self, moment))
        doc["tool"] = {"name": "etcdops", "version": doc.pop("tool_version")}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> SegmentManifest:
        """Parse a stored manifest; IntegrityError names the file when it is not one."""
        try:
            doc = json.loads(data)
            if doc.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"unsupported schema_version {doc.get('schema_version')!r}")
            for moment in ("first_change_at", "last_change_at", "created_at"):
                doc[moment] = datetime.fromisoformat(doc[moment])
            doc["tool_version"] = doc.pop("tool")["version"]
            return cls(**doc)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(
                f"segment manifest {source} is unreadable: {exc}",
                "the segment's manifest is damaged; read the segment from another store",
            ) from exc


@dataclass(frozen=True)
class SegmentKeys:
    """The keys of one segment's files in a store, derived from either of them."""

    object: str
    manifest: str

    @classmethod
    def of(cls, key: str) -> SegmentKeys:
        """The keys beside a segment's object or manifest key."""
        for suffix in (OBJECT_SUFFIX, MANIFEST_SUFFIX):
            if key.endswith(suffix) and _NAME.fullmatch(key.removesuffix(suffix)[-41:]):
                base = key.removesuffix(suffix)
                return cls(base + OBJECT_SUFFIX, base + MANIFEST_SUFFIX)
        raise ValueError(f"{key} is not a journal segment's key")


def revisions_of(key: str) -> tuple[int, int]:
    """The first and last revision a segment's object or manifest key names (a listing then
    tells a chain's extent without reading a manifest)."""
    name = SegmentKeys.of(key).object.removesuffix(OBJECT_SUFFIX)[-41:]
    first, last = name.split("-")
    return int(first), int(last)


def journal_prefix(prefix: str, cluster: str) -> str:
    """Where every chain of one cluster lives in a store."""
    return f"{prefix}{cluster}/journal/"


def chain_prefix(prefix: str, cluster: str, base_backup_id: str) -> str:
    """Where the segments extending one full backup live."""
    return f"{journal_prefix(prefix, cluster)}{base_backup_id}/"


def segment_key(prefix: str, cluster: str, base_backup_id: str, first: int, last: int) -> str:
    """The object key of the segment holding revisions first to last of a chain."""
    return f"{chain_prefix(prefix, cluster, base_backup_id)}{first:020d}-{last:020d}{OBJECT_SUFFIX}"
