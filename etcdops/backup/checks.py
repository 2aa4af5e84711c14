"""Check records: when a copy's bytes were last checked against its manifest, how, and what the
store's fingerprint of the object was then.

A size that matches says nothing of the bytes (a `cp` of another backup over an object keeps
its size). So each copy has a small `{id}.check.json` beside it, written when its bytes were
checked: by the save that hashed them on their way in, by a copy, by prune before it relies on
it. The check holds only while the store's fingerprint of the object is the one it saw; any
rewrite changes that fingerprint, and the copy is unchecked until it is checked again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from etcdops import __version__
from etcdops.backup.manifest import Manifest
from etcdops.backup.retention import Condition
from etcdops.errors import EtcdopsError, StorageError
from etcdops.stores.base import ObjectInfo, Store
from etcdops.stream.writers import Digest, Discard

AS_WRITTEN = "sha256 as written"  # hashed on its way into the store
COPIED = "server-side copy of a checked copy"  # S3 copied it; size and checksum checked
REREAD = "sha256 re-read"  # read back whole and hashed
ETAG = "ETag matches the one recorded at write"  # S3's own digest of what it holds
READ_SIZE = 1 << 20


@dataclass(frozen=True)
class CheckRecord:
    checked_at: datetime
    method: str
    fingerprint: str
    object_sha256: str  # the manifest's sha256 that the bytes were checked against
    problem: str | None = None  # None when the bytes matched the manifest

    def to_json(self, backup_id: str) -> bytes:
        """The record as stored beside the copy it is about."""
        doc = {
            "id": backup_id,
            "checked_at": self.checked_at.astimezone(UTC).isoformat(timespec="milliseconds"),
            "method": self.method,
            "fingerprint": self.fingerprint,
            "object_sha256": self.object_sha256,
            "problem": self.problem,
            "tool": {"name": "etcdops", "version": __version__},
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> CheckRecord:
        """Parse a stored record; ValueError when it is not one."""
        try:
            doc = json.loads(data)
            return cls(
                datetime.fromisoformat(doc["checked_at"]), str(doc["method"]),
                str(doc["fingerprint"]), str(doc["object_sha256"]), doc.get("problem"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"check record is unreadable: {exc}") from exc


def judge(
    manifest: Manifest, info: ObjectInfo, record: CheckRecord | None
) -> tuple[Condition, str | None]:
    """Whether a complete copy's bytes are known to match its manifest, and if not, why."""
    if record is None:
        return Condition.UNCHECKED, "never checked"
    if info.fingerprint is None or info.fingerprint != record.fingerprint:
        return Condition.UNCHECKED, f"changed since checked at {_when(record)} by {record.method}"
    if record.object_sha256 != manifest.object_sha256:
        return Condition.UNCHECKED, f"checked at {_when(record)} against another manifest"
    if record.problem is not None:
        return Condition.DAMAGED, f"failed its check at {_when(record)}: {record.problem}"
    return Condition.VERIFIED, None


def record_check(
    store: Store, manifest: Manifest, check_key: str, method: str, info: ObjectInfo | None = None,
    problem: str | None = None,
) -> CheckRecord:
    """Write the record of a check of the copy under manifest.object_key (info: the object as
    the check saw it; looked up now when the check has just written it)."""
    seen = info if info is not None else store.head(manifest.object_key)
    if seen is None or seen.fingerprint is None:
        raise StorageError(
            f"{store.describe(manifest.object_key)} vanished or has no fingerprint",
            "run 'etcdops snapshot list --store all'",
        )
    record = CheckRecord(
        datetime.now(UTC), method, seen.fingerprint,
        manifest.object_sha256, problem,
    )
    store.put_bytes(check_key, record.to_json(manifest.id))
    return record


def confirm(
    store: Store, manifest: Manifest, object_key: str, record: CheckRecord | None
) -> tuple[str, ObjectInfo, str | None]:
    """Check a copy's bytes again, as cheaply as the store allows: (how, the object as seen,
    why it does not match its manifest or None).

    A local file's fingerprint says nothing of its bytes, so it is re-hashed (seconds per GiB).
    On S3 an ETag equal to the one a check recorded is S3's own word that the bytes are those
    checked; without such a record the object is read back whole.
    """
    info = store.head(object_key)
    if info is None:
        raise StorageError(
            f"{store.describe(object_key)} is missing", "run 'etcdops snapshot list --store all'"
        )
    if info.size != manifest.object_size:
        return REREAD, info, f"object is {info.size} bytes, manifest says {manifest.object_size}"
    if (
        store.fingerprint_is_digest and record is not None and record.problem is None
        and record.fingerprint == info.fingerprint
        and record.object_sha256 == manifest.object_sha256
    ):
        return ETAG, info, None
    digest = Digest(Discard())
    with store.open_reader(object_key) as reader:
        while block := reader.read(READ_SIZE):
            digest.write(block)
    after = store.head(object_key)
    if after is None or after.fingerprint != info.fingerprint:
        return REREAD, info, "it changed while it was being read"
    if digest.hexdigest() != manifest.object_sha256:
        return REREAD, info, (
            f"its sha256 is {digest.hexdigest()[:16]}..., "
            f"its manifest says {manifest.object_sha256[:16]}..."
        )
    return REREAD, info, None


def try_record(
    store: Store, manifest: Manifest, check_key: str, method: str
) -> CheckRecord | None:
    """record_check for a copy just written: a failure leaves it complete but unchecked (listed
    as such, and checked again by prune before it counts), which is no reason to drop it."""
    try:
        return record_check(store, manifest, check_key, method)
    except EtcdopsError:
        return None


def _when(record: CheckRecord) -> str:
    return record.checked_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
