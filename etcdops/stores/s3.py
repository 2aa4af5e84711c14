"""A store in an S3 bucket (AWS or an S3-compatible service), with the local store's promises.

An object appears under its key complete or not at all: big objects go up as a multipart
upload that only a successful commit completes, and every failure aborts it, so neither a
partial object nor orphan parts are left behind. Every part carries its own CRC32, which S3
checks on arrival; after completing, a HEAD checks the size and S3's composite checksum. Those
checks catch damage in transit; what proves a backup intact is the SHA-256 of the whole object
that the manifest keeps (S3 has no whole-object SHA-256 of a multipart object). A server that
refuses S3's checksum headers gets signed bodies instead (see _send); one that cannot list or
abort unfinished uploads makes that feature unavailable, never the store (see _uploads).

A hung endpoint ends a write in bounded time: each request gives up after the configured
connect and read timeouts and max_attempts tries, every wait of a writer ends at its deadline,
and requests run on daemon threads, so that one stuck in a socket read never holds the process
at exit.

Only this module and its parts (s3_client, s3_writer, s3_copy, s3_delete, s3_reader,
s3_errors, s3_parts, s3_requests) import botocore, and only when a store is created, so that
`etcdops --help` and local-only runs never pay for importing it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from etcdops.config import S3Location
from etcdops.errors import (
    ConfigError,
    EtcdopsError,
    FeatureUnavailable,
    NotFoundError,
    StorageError,
)
from etcdops.stores.base import ObjectInfo, check_key
from etcdops.stores.s3_client import make_client
from etcdops.stores.s3_copy import copy_by_ranges
from etcdops.stores.s3_delete import delete_in_batches
from etcdops.stores.s3_errors import (
    PERMISSIONS,
    checksums_refused,
    refusal,
    s3_error,
)
from etcdops.stores.s3_parts import (
    Checksum,
    MiB,
    b64,
    choose_part_size,
    crc32_digest,
    sha256_checksum,
)
from etcdops.stores.s3_reader import S3Reader
from etcdops.stores.s3_writer import S3Writer

COPY_PART_SIZE = 256 * MiB  # copies move no bytes through us: big parts mean fewer requests
# An abort (after a failure, or on Ctrl-C) waits for the requests in flight and S3's answer this
# long at most, and never longer than one reply may take (read_timeout): an interrupted save
# must end promptly, and what an unanswered abort leaves, unfinished() finds.
ABORT_WAIT = 10.0
log = logging.getLogger("etcdops.stores.s3")


class S3Store:
    """Objects in one bucket below one prefix, in one region."""

    def __init__(
        self,
        location: S3Location,
        name: str,
        *,
        part_size: int | None = None,
        max_concurrency: int | None = None,
        copy_part_threshold: int = 5 * 1024**3,
        copy_part_size: int = COPY_PART_SIZE,
        section: str = "s3",
    ) -> None:
        self.name = name
        self.fingerprint_is_digest = True
        self.section = section  # the config section messages name
        # their ranges are checked where the config loads
        self.part_size = part_size or location.part_size
        self.max_concurrency = max_concurrency or location.upload_concurrency
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.copy_part_threshold = copy_part_threshold
        self.copy_part_size = copy_part_size
        self.deadline = location.deadline
        self.abort_wait = min(ABORT_WAIT, location.read_timeout)
        self.sse = location.sse  # what a refusal's hint names beside the S3 permission
        # what every object written gets: encryption and storage class
        self.write_args = self._object_settings(location)
        self._location = location
        self._client = make_client(location, self.max_concurrency)
        # a server that refuses S3's checksum headers is sent none from then on (see _send)
        self.checksums = True
        self.batch_deletes = True  # until the server refuses DeleteObjects (see delete_many)
        self._switching = threading.Lock()
        self.region: str = location.region or self._client.meta.region_name or "us-east-1"
        self.endpoint: str = location.endpoint_url or self._client.meta.endpoint_url

    def _object_settings(self, location: S3Location) -> dict[str, str]:
        """Encryption and storage class, applied to every object written or copied here."""
        if location.kms_key_id and location.sse != "aws:kms":
            raise ConfigError(
                f"{self.section}.kms_key_id is set but {self.section}.sse is "
                f"{location.sse or 'not set'}",
                f'set {self.section}.sse = "aws:kms", or remove kms_key_id',
            )
        args = {}
        if location.sse:
            args["ServerSideEncryption"] = location.sse
        if location.kms_key_id:
            args["SSEKMSKeyId"] = location.kms_key_id
        if location.storage_class:
            args["StorageClass"] = location.storage_class
        return args

    def full_key(self, key: str) -> str:
        """The S3 key of an object: the store prefix and the checked key."""
        return self.prefix + check_key(key)

    def describe(self, key: str) -> str:
        """Where an object lives, for messages."""
        return f"s3://{self.bucket}/{self.full_key(key)} ({self.region})"

    def error(self, exc: Exception, action: str, target: str | None = None) -> EtcdopsError:
        """The etcdops error for a botocore failure: one line naming the store, bucket and act."""
        return s3_error(self, exc, action, target)

    @contextlib.contextmanager
    def _calling(self, action: str, target: str | None = None) -> Iterator[None]:
        """Turn the botocore failures of the block into etcdops errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self.error(exc, action, target) from exc

    def _send(
        self, operation: str, checksum_args: dict[str, str] | None = None, /, **args: Any
    ) -> Any:
        """One S3 call, with checksum_args while the server takes checksum headers.

        A server that refuses them (Backblaze B2, Cloudflare R2, OVH and other S3-compatible
        ones answer InvalidArgument or NotImplemented naming the header) is told once in a
        warning and sent none from then on: the call is made again by a client that signs every
        body instead, so the server still checks that what arrived is what was sent, and the
        manifest's SHA-256 of every object is checked on every read as before. Only the
        composite checksum that verify() compares after an upload is lost.
        """
        from botocore.exceptions import ClientError

        if self.checksums:
            try:
                return getattr(self._client, operation)(**args, **(checksum_args or {}))
            except ClientError as exc:
                refused = checksums_refused(exc)
                if refused is None:
                    raise
                self._drop_checksums(refused)
        return getattr(self._client, operation)(**args)

    def _drop_checksums(self, answer: str) -> None:
        with self._switching:
            if not self.checksums:
                return  # another part's request found out first
            self._client = make_client(self._location, self.max_concurrency, checksums=False)
            self.checksums = False
        log.warning(
            "%s: the server at %s refuses S3 checksum headers (%s): requests go without them "
            "from now on, each body covered by its SigV4 signature (signed payload) instead; "
            "every read still checks the manifest's sha256", self.name, self.endpoint, answer,
        )

    def create_bucket(self) -> None:
        """Create the bucket in this store's region, for the demo and test setups; a bucket that
        exists and is ours already is fine."""
        from botocore.exceptions import BotoCoreError, ClientError

        target = f"s3://{self.bucket} ({self.region})"
        # us-east-1 is the one region that refuses its own name as a LocationConstraint
        where = {} if self.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": self.region}
        }
        try:
            self._client.create_bucket(Bucket=self.bucket, **where)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise self.error(exc, "create bucket", target) from exc
        except BotoCoreError as exc:
            raise self.error(exc, "create bucket", target) from exc

    def open_writer(
        self, key: str, expected_size: int | None = None, *,
        waiting: Callable[[str], None] | None = None,
    ) -> S3Writer:
        """Start writing an object; it exists only after commit(), within the store's deadline.

        waiting, when given, is told now and then what a writer that waits on S3 waits for.
        """
        part_size = choose_part_size(expected_size, self.part_size)
        return S3Writer(self, key, part_size, self.max_concurrency, waiting=waiting)

    def open_reader(self, key: str) -> S3Reader:
        """Read an object as a stream."""
        with self._calling("read", self.describe(key)):
            response = self._send("get_object", Bucket=self.bucket, Key=self.full_key(key))
        return S3Reader(response["Body"], lambda exc: self.error(exc, "read", self.describe(key)))

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object (a manifest) in one request that S3 checks against its SHA-256."""
        self.put_checked(key, data)

    def put_checked(self, key: str, data: bytes | bytearray) -> Checksum | None:
        """Write an object in one PUT that S3 checks against its SHA-256; that checksum, or
        None from a server that takes no checksums (its signed payload was checked instead)."""
        checksum = Checksum("SHA256", sha256_checksum(data))
        with self._calling("write", self.describe(key)):
            sent = self._send(
                "put_object",
                {"ChecksumAlgorithm": checksum.algorithm, "ChecksumSHA256": checksum.value},
                Bucket=self.bucket, Key=self.full_key(key), Body=data, **self.write_args,
            )
        return checksum if sent else None

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole."""
        with self.open_reader(key) as reader:
            return reader.read()

    def head(self, key: str) -> ObjectInfo | None:
        """Size and time of an object, or None when it does not exist."""
        try:
            with self._calling("stat", self.describe(key)):
                response = self._client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except NotFoundError:
            # HEAD has no error body: a missing bucket looks like a missing key here, but
            # list() and every write name the bucket
            return None
        return ObjectInfo(
            key, response["ContentLength"], response["LastModified"], response.get("ETag")
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with prefix, in key order."""
        paginator = self._client.get_paginator("list_objects_v2")
        with self._calling("list", f"s3://{self.bucket}/{self.prefix}{prefix} ({self.region})"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix):]
                    yield ObjectInfo(key, item["Size"], item["LastModified"], item.get("ETag"))

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error (S3 says 204 either way)."""
        with self._calling("delete", self.describe(key)):
            self._client.delete_object(Bucket=self.bucket, Key=self.full_key(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove objects, DELETE_BATCH to a DeleteObjects request (etcdops.stores.s3_delete);
        missing ones are not an error, and S3 promises no order within a request."""
        delete_in_batches(self, self._client, keys)

    def unfinished(self, prefix: str = "") -> list[ObjectInfo]:
        """Multipart uploads in progress: their parts cost money and no listing shows them. The
        size is 0: S3 says what an upload holds only part by part.

        Raises FeatureUnavailable when the server does not implement ListMultipartUploads or
        the credentials may not call it: finding them is optional (a lifecycle rule with
        AbortIncompleteMultipartUpload removes them too), retention is not.
        """
        paginator = self._client.get_paginator("list_multipart_uploads")
        found = []
        with self._uploads("list uploads in", f"s3://{self.bucket}/{self.prefix}{prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                found += [
                    ObjectInfo(upload["Key"][len(self.prefix):], 0, upload["Initiated"])
                    for upload in page.get("Uploads", [])
                ]
        return sorted(found, key=lambda info: (info.key, info.modified))

    def abort_unfinished(self, key: str) -> None:
        """Abort every multipart upload in progress to key, and with it the parts it holds;
        FeatureUnavailable when S3 refuses to (as unfinished())."""
        full_key = self.full_key(key)
        paginator = self._client.get_paginator("list_multipart_uploads")
        # named by the store, not the key: one warning however many uploads are refused
        with self._uploads("abort uploads in", f"s3://{self.bucket}/{self.prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_key):
                for upload in page.get("Uploads", []):
                    if upload["Key"] == full_key:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=full_key, UploadId=upload["UploadId"]
                        )

    @contextlib.contextmanager
    def _uploads(self, action: str, where: str) -> Iterator[None]:
        """_calling for the optional work on unfinished uploads: a call S3 refuses for good
        (not implemented, access denied) raises FeatureUnavailable, naming the call and the
        permission it needs."""
        from botocore.exceptions import ClientError

        try:
            with self._calling(action, where):
                yield
        except StorageError as exc:
            cause = exc.__cause__
            refused = refusal(cause)
            if refused is None or not isinstance(cause, ClientError):
                raise
            not_implemented, answer = refused
            operation = cause.operation_name
            if not_implemented:
                said, fix = f"the server does not implement {operation}", "or use one that does"
            else:
                resource = f"arn:aws:s3:::{self.bucket}" + (
                    "" if operation == "ListMultipartUploads" else f"/{self.prefix}*"
                )
                said = f"access denied to {operation}"
                fix = f"or allow {PERMISSIONS[operation]} on {resource}"
            raise FeatureUnavailable(
                f"{self.name}: {said} on {where} ({answer}): unfinished uploads (of saves "
                "killed mid-write) are not listed or aborted in this store",
                f"add a lifecycle rule with AbortIncompleteMultipartUpload to the bucket, {fix}",
            ) from cause

    def verify(
        self, key: str, size: int, checksum: Checksum | None = None, *, ours: bool = True
    ) -> None:
        """Check that what S3 holds under key is what was sent; delete it when it is not.

        ours=False when S3 never confirmed the write: then a mismatch may be an older object
        under the same key, which is not ours to delete.
        """
        try:
            with self._calling("check", self.describe(key)):
                response = self._send(
                    "head_object", {"ChecksumMode": "ENABLED"},
                    Bucket=self.bucket, Key=self.full_key(key),
                )
        except NotFoundError as exc:
            raise StorageError(
                f"{self.name}: {self.describe(key)} is missing right after it was written",
                "retry; if it recurs, check for a lifecycle rule or another writer on the bucket",
                retryable=True,
            ) from exc
        problem = None
        if response["ContentLength"] != size:
            problem = f"holds {response['ContentLength']} bytes, {size} were sent"
        stored = response.get(f"Checksum{checksum.algorithm}") if checksum else None
        # Services that keep no checksum (some S3-compatible ones) leave the size check alone.
        # Only the value before "-N" is compared: real S3 returns "value-N" for a multipart
        # object, moto the value alone; the value covers every part's checksum anyway.
        if checksum and stored and stored.partition("-")[0] != checksum.value.partition("-")[0]:
            problem = f"has {checksum.algorithm} checksum {stored}, {checksum.value} was sent"
        if problem:
            if ours:
                with contextlib.suppress(StorageError):
                    self.delete(key)
            raise StorageError(
                f"{self.name}: {self.describe(key)} {problem}"
                + ("; the object was deleted" if ours else ""),
                "retry the upload; if it recurs, check the S3 endpoint or any proxy in between",
            )

    def can_copy_from(self, source: object) -> bool:
        """Server-side copies reach another bucket through this client (the ServerSideCopy
        capability)."""
        return isinstance(source, S3Store)

    def copy_from(self, source: S3Store, key: str, size: int) -> None:
        """Copy one object server-side from another bucket (another region) to the same key here.

        size is what the caller expects (the manifest's): the source is checked against it
        first, so that a multipart copy by byte ranges cannot silently cut a bigger object.
        """
        info = source.head(key)
        if info is None:
            raise NotFoundError(
                f"{self.name}: cannot copy {source.describe(key)}: no such object",
                "run 'etcdops snapshot list --store all'",
            )
        if info.size != size:
            raise StorageError(
                f"{self.name}: cannot copy {source.describe(key)}: it holds {info.size} bytes, "
                f"{size} were expected",
                "check the backup with 'etcdops snapshot status'",
            )
        copy_source = {"Bucket": source.bucket, "Key": source.full_key(key)}
        target = f"{source.describe(key)} to {self.describe(key)}"
        with self._calling("copy", target):
            if size < self.copy_part_threshold:
                # a checksum algorithm asks S3 for a full-object checksum of the copy, which GETs
                # then verify (moto would otherwise stamp the source's composite value on it as
                # a full-object one, and every read of the copy would fail its check)
                self._send(
                    "copy_object", {"ChecksumAlgorithm": "CRC32"},
                    Bucket=self.bucket, Key=self.full_key(key), CopySource=copy_source,
                    **self.write_args,
                )
            else:
                copy_by_ranges(self, self._client, copy_source, key, size)
        self.verify(key, size)

    # The steps of a multipart upload, which S3Writer drives (its waits, buffers and threads
    # are its own); each fails as every method here does, naming the store, object and act.

    def start_upload(self, key: str) -> str:
        """Begin a multipart upload whose parts carry CRC32s; its upload id."""
        with self._calling("write", self.describe(key)):
            return self._send(
                "create_multipart_upload", {"ChecksumAlgorithm": "CRC32"},
                Bucket=self.bucket, Key=self.full_key(key), **self.write_args,
            )["UploadId"]

    def upload_part(
        self, key: str, upload_id: str, number: int, body: bytes | bytearray
    ) -> tuple[dict[str, Any], bytes]:
        """Send one part with its CRC32, which S3 checks before accepting it: the part as
        complete_upload takes it, and its CRC32 (4 bytes) for the object's composite."""
        digest = crc32_digest(body)
        checksum = b64(digest)
        with self._calling("write", self.describe(key)):
            response = self._send(
                "upload_part", {"ChecksumAlgorithm": "CRC32", "ChecksumCRC32": checksum},
                Bucket=self.bucket, Key=self.full_key(key), UploadId=upload_id,
                PartNumber=number, Body=body,
            )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if self.checksums:
            part["ChecksumCRC32"] = checksum
        return part, digest

    def complete_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> bool:
        """Join the parts into the object; whether S3 confirmed it."""
        from botocore.exceptions import ClientError

        with self._calling("write", self.describe(key)):
            if not self.checksums:
                # parts sent before the server refused checksums may carry one
                parts = [{k: v for k, v in p.items() if k != "ChecksumCRC32"} for p in parts]
            try:
                self._send(
                    "complete_multipart_upload",
                    Bucket=self.bucket, Key=self.full_key(key), UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except ClientError as exc:
                # a retried Complete whose first attempt succeeded (its reply was lost) may find
                # the upload gone; then the writer's HEAD check decides whether the object is ours
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
                return False
        return True

    def abort_upload(self, key: str, upload_id: str) -> bool:
        """Drop a multipart upload and its parts; best effort, as it runs after a failure.
        Whether S3 confirmed it.

        What it cannot drop, unfinished() finds, and a lifecycle rule with
        AbortIncompleteMultipartUpload removes.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.full_key(key), UploadId=upload_id
            )
        except (BotoCoreError, ClientError):
            return False
        return True
