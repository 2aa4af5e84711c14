"""A store in an S3 bucket (AWS or an S3-compatible service), with the local store's promises.

An object appears under its key complete or not at all: big objects go up as a multipart
upload that only a successful commit completes, and every failure aborts it, so neither a
partial object nor orphan parts are left behind. Every part carries its own CRC32, which S3
checks on arrival; after completing, a HEAD checks the size and S3's composite checksum. Those
checks catch damage in transit; what proves a backup intact is the SHA-256 of the whole object
that the manifest keeps (S3 has no whole-object SHA-256 of a multipart object).

This is the only module that imports botocore, and only when a store is created, so that
`etcdops --help` and local-only runs never pay for importing it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import math
import queue
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, NoReturn

from etcdops.config import S3Location
from etcdops.errors import ConfigError, EtcdopsError, NotFoundError, StorageError
from etcdops.stores.base import ObjectInfo, check_key

MiB = 1024**2
MIN_PART_SIZE = 5 * MiB  # S3 rejects smaller parts, except the last one
MAX_PARTS = 10_000
COPY_PART_SIZE = 256 * MiB  # copies move no bytes through us: big parts mean fewer requests

_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "AllAccessDisabled"}
_TRANSIENT = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
              "ThrottlingException", "NoSuchUpload"}


def choose_part_size(expected_size: int | None, minimum: int = MIN_PART_SIZE) -> int:
    """A part size that keeps an object of about expected_size well under S3's 10,000 parts."""
    if not expected_size:
        return minimum
    # 5% headroom for a stream that comes out a little bigger than announced, and 9,000 of the
    # 10,000 parts, so that the estimate can be off without the upload running out of parts
    wanted = math.ceil(expected_size * 1.05 / 9000)
    return max(minimum, math.ceil(wanted / MiB) * MiB)


@functools.cache
def _api_models() -> Any:
    """botocore's loader of API models, shared: parsing them again costs ~0.15 s per client."""
    import botocore.loaders

    return botocore.loaders.create_loader()


class Checksum(NamedTuple):
    """A checksum as S3 keeps it: the algorithm's name and the base64 value ("-N" when it is a
    multipart object's composite of N parts)."""

    algorithm: str
    value: str


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def sha256_checksum(data: bytes | bytearray | memoryview) -> str:
    """S3's ChecksumSHA256 of data."""
    return _b64(hashlib.sha256(data).digest())


def crc32_digest(data: bytes | bytearray | memoryview) -> bytes:
    """The CRC32 S3 computes (zlib's, big-endian), as 4 bytes."""
    return zlib.crc32(data).to_bytes(4, "big")


def composite_crc32(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: the CRC32 of the parts' CRC32s, with the count."""
    return f"{_b64(crc32_digest(b''.join(part_digests)))}-{len(part_digests)}"


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
        connect_timeout: float = 10,
        read_timeout: float = 60,
    ) -> None:
        import botocore.session
        from botocore.config import Config

        self.name = name
        self._section = "s3.replica" if name == "replica" else "s3"
        self.part_size = part_size or location.part_size
        if self.part_size < MIN_PART_SIZE:
            raise ConfigError(
                f"{self._section}.part_size is {self.part_size} bytes, below S3's minimum part "
                f"of {MIN_PART_SIZE // MiB} MiB",
                f'set {self._section}.part_size = "5MiB" or more',
            )
        self.max_concurrency = max_concurrency or location.upload_concurrency
        if self.max_concurrency < 1:
            raise ConfigError(
                f"{self._section}.upload_concurrency is {self.max_concurrency}",
                f"set {self._section}.upload_concurrency to 1 or more",
            )
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.copy_part_threshold = copy_part_threshold
        self.copy_part_size = copy_part_size
        self._write_args = self._object_settings(location)
        options: dict[str, Any] = {
            "retries": {"mode": "standard", "max_attempts": 5},
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            # parts in flight plus the reads and HEADs that may run beside an upload
            "max_pool_connections": max(10, 2 * self.max_concurrency),
            # GETs check S3's full-object checksum as they end (the SHA-256 of an object sent in
            # one PUT, the CRC32 of a copy); a multipart object has only a composite one, and the
            # manifest's sha256 covers it
            "response_checksum_validation": "when_supported",
        }
        # Every body goes with a checksum header that S3 checks, and the headers are signed: a
        # SigV4 hash of the body as well (botocore's habit over plain http) would be a third pass
        # over every byte uploaded
        options["s3"] = {"payload_signing_enabled": False}
        if location.endpoint_url:
            # moto and most S3-compatible services have no per-bucket DNS names
            options["s3"]["addressing_style"] = "path"
        # a session per store resolves credentials through the standard AWS chain when the
        # store is made (boto3's default session would keep the first ones it found)
        session = botocore.session.Session()
        session.register_component("data_loader", _api_models())
        self._client = session.create_client(
            "s3",
            region_name=location.region,
            endpoint_url=location.endpoint_url,
            config=Config(**options),
        )
        self.region: str = location.region or self._client.meta.region_name or "us-east-1"
        self.endpoint: str = location.endpoint_url or self._client.meta.endpoint_url

    def _object_settings(self, location: S3Location) -> dict[str, str]:
        """Encryption and storage class, applied to every object written or copied here."""
        if location.kms_key_id and location.sse != "aws:kms":
            raise ConfigError(
                f"{self._section}.kms_key_id is set but {self._section}.sse is "
                f"{location.sse or 'not set'}",
                f'set {self._section}.sse = "aws:kms", or remove kms_key_id',
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
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            FlexibleChecksumError,
            HTTPClientError,
            IncompleteReadError,
            NoCredentialsError,
            ResponseStreamingError,
        )

        if isinstance(exc, EtcdopsError):
            return exc
        where = target or f"s3://{self.bucket}/{self.prefix} ({self.region})"
        head = f"{self.name}: cannot {action} {where}"
        if isinstance(exc, NoCredentialsError):
            return ConfigError(
                f"{self.name}: no AWS credentials found to {action} {where}",
                "configure the standard AWS credential chain: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/credentials, or an instance "
                "profile / IAM role",
            )
        transient = (ConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError)
        if isinstance(exc, transient):
            return StorageError(
                f"{head}: connection to S3 endpoint {self.endpoint} failed: {_one_line(exc)}",
                f"check the network path to {self.endpoint} and {self._section}.region / "
                f"{self._section}.endpoint_url; retrying may succeed",
                retryable=True,
            )
        if isinstance(exc, FlexibleChecksumError):
            return StorageError(
                f"{head}: the bytes received do not match the object's checksum: {_one_line(exc)}",
                "retry; if it recurs, check any proxy between this host and S3",
                retryable=True,
            )
        if not isinstance(exc, ClientError):
            return StorageError(f"{head}: {_one_line(exc)}")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = _one_line(exc.response.get("Error", {}).get("Message") or code or exc)
        if code in ("404", "NoSuchKey", "NotFound"):
            return NotFoundError(f"{head}: no such object", "run 'etcdops snapshot list'")
        if code == "NoSuchBucket":
            return StorageError(
                f"{self.name}: bucket {self.bucket} does not exist in {self.region} "
                f"(cannot {action} {where})",
                f"check {self._section}.bucket and {self._section}.region, or create the bucket",
            )
        if code in _DENIED or status == 403:
            return StorageError(
                f"{head}: access denied ({code}: {detail})",
                "check which credentials the AWS credential chain finds, their IAM permissions "
                "and the bucket policy",
            )
        if status >= 500 or code in _TRANSIENT:
            return StorageError(
                f"{head}: {code} from {self.endpoint} ({self.region}) after retries: {detail}",
                "S3 is failing or throttling; retry later",
                retryable=True,
            )
        return StorageError(f"{head}: {code}: {detail}")

    @contextlib.contextmanager
    def _calling(self, action: str, target: str | None = None) -> Iterator[None]:
        """Turn the botocore failures of the block into etcdops errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self.error(exc, action, target) from exc

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

    def open_writer(self, key: str, expected_size: int | None = None) -> S3Writer:
        """Start writing an object; it exists only after commit()."""
        part_size = choose_part_size(expected_size, self.part_size)
        return S3Writer(self, key, part_size, self.max_concurrency)

    def open_reader(self, key: str) -> S3Reader:
        """Read an object as a stream."""
        with self._calling("read", self.describe(key)):
            response = self._client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        return S3Reader(response["Body"], lambda exc: self.error(exc, "read", self.describe(key)))

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object (a manifest) in one request that S3 checks against its SHA-256."""
        with self._calling("write", self.describe(key)):
            self._put(key, data)

    def _put(self, key: str, data: bytes | bytearray) -> Checksum:
        checksum = Checksum("SHA256", sha256_checksum(data))
        self._client.put_object(
            Bucket=self.bucket,
            Key=self.full_key(key),
            Body=data,
            ChecksumAlgorithm=checksum.algorithm,
            ChecksumSHA256=checksum.value,
            **self._write_args,
        )
        return checksum

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

    def unfinished(self, prefix: str = "") -> list[ObjectInfo]:
        """Multipart uploads in progress: their parts cost money and no listing shows them. The
        size is 0: S3 says what an upload holds only part by part."""
        paginator = self._client.get_paginator("list_multipart_uploads")
        found = []
        with self._calling("list uploads in", f"s3://{self.bucket}/{self.prefix}{prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                found += [
                    ObjectInfo(upload["Key"][len(self.prefix):], 0, upload["Initiated"])
                    for upload in page.get("Uploads", [])
                ]
        return sorted(found, key=lambda info: (info.key, info.modified))

    def abort_unfinished(self, key: str) -> None:
        """Abort every multipart upload in progress to key, and with it the parts it holds."""
        full_key = self.full_key(key)
        paginator = self._client.get_paginator("list_multipart_uploads")
        with self._calling("abort uploads of", self.describe(key)):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_key):
                for upload in page.get("Uploads", []):
                    if upload["Key"] == full_key:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=full_key, UploadId=upload["UploadId"]
                        )

    def verify(
        self, key: str, size: int, checksum: Checksum | None = None, *, ours: bool = True
    ) -> None:
        """Check that what S3 holds under key is what was sent; delete it when it is not.

        ours=False when S3 never confirmed the write: then a mismatch may be an older object
        under the same key, which is not ours to delete.
        """
        try:
            with self._calling("check", self.describe(key)):
                response = self._client.head_object(
                    Bucket=self.bucket, Key=self.full_key(key), ChecksumMode="ENABLED"
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
                self._client.copy_object(
                    Bucket=self.bucket, Key=self.full_key(key), CopySource=copy_source,
                    ChecksumAlgorithm="CRC32", **self._write_args,
                )
            else:
                self._copy_multipart(copy_source, key, size)
        self.verify(key, size)

    def _copy_multipart(self, copy_source: dict[str, str], key: str, size: int) -> None:
        """UploadPartCopy by byte ranges, for objects beyond CopyObject's 5 GB limit."""
        part_size = choose_part_size(size, self.copy_part_size)
        full_key = self.full_key(key)
        upload_id = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=full_key, **self._write_args
        )["UploadId"]

        def copy_part(number: int) -> dict[str, Any]:
            start = (number - 1) * part_size
            response = self._client.upload_part_copy(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id, PartNumber=number,
                CopySource=copy_source,
                CopySourceRange=f"bytes={start}-{min(start + part_size, size) - 1}",
            )
            return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}

        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="s3-copy")
        try:
            parts = list(pool.map(copy_part, range(1, math.ceil(size / part_size) + 1)))
            pool.shutdown()
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # parts still in flight would land after the abort and be orphaned: wait for them
            pool.shutdown(wait=True, cancel_futures=True)
            self.abort_upload(key, upload_id)
            raise

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts; best effort, as it runs after a failure.

        What it cannot drop, unfinished() finds, and a lifecycle rule with
        AbortIncompleteMultipartUpload removes.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        with contextlib.suppress(BotoCoreError, ClientError):
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.full_key(key), UploadId=upload_id
            )


class S3Writer:
    """A streamed multipart upload with flat memory; the object appears only on commit().

    Data is copied into part buffers of part_size, of which there are max_concurrency + 1: up to
    max_concurrency parts upload while the next one fills, and write() waits for a buffer that a
    finished part gives back. The same few buffers serve the whole upload, so memory is fixed
    whatever the object's size and nothing is allocated per part. An object that fits in one
    part is sent with a single PUT at commit().
    """

    def __init__(self, store: S3Store, key: str, part_size: int, max_concurrency: int) -> None:
        self._store = store
        self._key = key
        self._where = store.describe(key)  # checks the key before anything is sent
        self._part_size = part_size
        self._max_concurrency = max_concurrency
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._buffers = 0
        self._part: bytearray | None = None
        self._filled = 0
        self._size = 0
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._parts: list[Future[tuple[dict[str, Any], bytes]]] = []
        self._failure: BaseException | None = None
        self._state = "open"  # open, committed or aborted

    def write(self, data: bytes, /) -> int:
        """Buffer data and send every full part; raises StorageError once any part failed."""
        self._check_open()
        view = memoryview(data)
        try:
            while view:
                if self._part is None:
                    self._part, self._filled = self._take_buffer(), 0
                elif self._filled == self._part_size:
                    # a part goes out only when more data follows it, so that the last part is
                    # never empty and an object of exactly one part is a single PUT
                    self._send_part(self._part, self._part_size)
                    self._part, self._filled = self._take_buffer(), 0
                count = min(len(view), self._part_size - self._filled)
                self._part[self._filled : self._filled + count] = view[:count]
                self._filled += count
                view = view[count:]
        except BaseException as exc:
            self._fail(exc)
        self._size += len(data)
        return len(data)

    def commit(self) -> None:
        """Send the rest, complete the upload and check what S3 holds; abort on any failure."""
        self._check_open()
        try:
            confirmed = True
            if self._upload_id is None:
                rest = self._part[: self._filled] if self._part is not None else b""
                checksum = self._store._put(self._key, rest)
            else:
                assert self._part is not None
                self._send_part(self._part, self._filled)
                checksum, confirmed = self._complete()
        except BaseException as exc:
            self._fail(exc)
        self._state = "committed"
        self._drop_buffers()
        if self._pool is not None:
            self._pool.shutdown()
        self._store.verify(self._key, self._size, checksum, ours=confirmed)

    def abort(self) -> None:
        """Drop the upload and every part sent; safe to call more than once, and after commit."""
        if self._state != "open":
            return
        self._state = "aborted"
        if self._pool is not None:
            # wait for parts in flight: one landing after the abort would be an orphan
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._drop_buffers()
        if self._upload_id is not None:
            self._store.abort_upload(self._key, self._upload_id)

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageError(
                f"{self._store.name}: cannot write {self._where}: the upload was {self._state}",
                "start a new upload",
            )

    def _fail(self, exc: BaseException) -> NoReturn:
        """Abort, and say why in etcdops terms (the first part that failed is the cause)."""
        from botocore.exceptions import BotoCoreError, ClientError

        cause = self._failure or exc
        self.abort()
        if isinstance(cause, BotoCoreError | ClientError):
            raise self._store.error(cause, "write", self._where) from cause
        raise cause

    def _take_buffer(self) -> bytearray:
        """A part buffer to fill: a free one, a new one while there are fewer than
        max_concurrency + 1, or else the next one that a finished part gives back."""
        try:
            buffer = self._free.get_nowait()
        except queue.Empty:
            if self._buffers <= self._max_concurrency:
                self._buffers += 1
                return bytearray(self._part_size)
            buffer = self._free.get()
        if self._failure is not None:
            raise self._failure
        return buffer

    def _drop_buffers(self) -> None:
        # the parts' futures hold their buffers too, through the callbacks that give them back
        self._part, self._filled, self._parts = None, 0, []
        while not self._free.empty():
            self._free.get_nowait()

    def _send_part(self, buffer: bytearray, length: int) -> None:
        """Queue one part; its buffer comes back to the free ones when its upload has ended."""
        if self._failure is not None:
            raise self._failure
        if self._upload_id is None:
            self._upload_id = self._store._client.create_multipart_upload(
                Bucket=self._store.bucket,
                Key=self._store.full_key(self._key),
                ChecksumAlgorithm="CRC32",
                **self._store._write_args,
            )["UploadId"]
            self._pool = ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="s3-part")
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(
                f"{self._store.name}: cannot write {self._where}: more than {MAX_PARTS} parts "
                f"of {self._part_size} bytes",
                "pass the expected size when opening the writer, so that parts are big enough",
            )
        body = buffer if length == len(buffer) else buffer[:length]  # only the last is short
        assert self._pool is not None
        future = self._pool.submit(self._upload_part, number, body)
        future.add_done_callback(lambda done: self._part_done(done, buffer))
        self._parts.append(future)

    def _part_done(self, future: Future[tuple[dict[str, Any], bytes]], buffer: bytearray) -> None:
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()
        self._free.put(buffer)  # after the failure is set, so that the writer waking sees it

    def _upload_part(self, number: int, body: bytearray) -> tuple[dict[str, Any], bytes]:
        """Send one part with its CRC32, which S3 checks before accepting it."""
        digest = crc32_digest(body)
        checksum = _b64(digest)
        response = self._store._client.upload_part(
            Bucket=self._store.bucket,
            Key=self._store.full_key(self._key),
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="CRC32",
            ChecksumCRC32=checksum,
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumCRC32": checksum}, digest

    def _complete(self) -> tuple[Checksum, bool]:
        """Complete the upload once every part is in: the composite checksum, and whether S3
        confirmed the completion."""
        from botocore.exceptions import ClientError

        results = [future.result() for future in self._parts]
        checksum = Checksum("CRC32", composite_crc32([digest for _, digest in results]))
        try:
            self._store._client.complete_multipart_upload(
                Bucket=self._store.bucket,
                Key=self._store.full_key(self._key),
                UploadId=self._upload_id,
                MultipartUpload={"Parts": [part for part, _ in results]},
            )
        except ClientError as exc:
            # a retried Complete whose first attempt succeeded (its reply was lost) may find the
            # upload gone; then the HEAD check in commit() decides whether the object is ours
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
            return checksum, False
        return checksum, True


class S3Reader(io.IOBase):
    """An object's body as a stream; network failures while reading become StorageErrors."""

    def __init__(self, body: Any, error: Callable[[Exception], EtcdopsError]) -> None:
        self._body = body
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to size bytes (all the rest when size is negative); b"" at the end."""
        from botocore.exceptions import BotoCoreError

        try:
            return self._body.read(None if size is None or size < 0 else size)
        except BotoCoreError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._body.close()
        super().close()


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
