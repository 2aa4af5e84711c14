"""A store in an S3 bucket (AWS or an S3-compatible service), with the local store's promises.

An object appears under its key complete or not at all: big objects go up as a multipart
upload that only a successful commit completes, and every failure aborts it, so neither a
partial object nor orphan parts are left behind. Every part carries its own CRC32, which S3
checks on arrival; after completing, a HEAD checks the size and S3's composite checksum. Those
checks catch damage in transit; what proves a backup intact is the SHA-256 of the whole object
that the manifest keeps (S3 has no whole-object SHA-256 of a multipart object).

A hung endpoint ends a write in bounded time: each request gives up after the configured
connect and read timeouts and max_attempts tries, every wait of a writer ends at its deadline,
and requests run on daemon threads, so that one stuck in a socket read never holds the process
at exit.

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
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any, NamedTuple, NoReturn, TypeVar

from etcdops.config import S3Location
from etcdops.errors import ConfigError, EtcdopsError, NotFoundError, StorageError
from etcdops.stores.base import ObjectInfo, check_key
from etcdops.units import format_duration

T = TypeVar("T")

MiB = 1024**2
MIN_PART_SIZE = 5 * MiB  # S3 rejects smaller parts, except the last one
MAX_PARTS = 10_000
COPY_PART_SIZE = 256 * MiB  # copies move no bytes through us: big parts mean fewer requests
# An abort (after a failure, or on Ctrl-C) waits for the requests in flight and S3's answer this
# long at most, and never longer than one reply may take (read_timeout): an interrupted save
# must end promptly, and what an unanswered abort leaves, unfinished() finds.
ABORT_WAIT = 10.0
WAIT_SLICE = 0.5  # how often a waiting writer looks at its deadline and at cancel()
FIRST_WAIT_REPORT = 1.0  # a wait is reported after this long, then each time it doubles

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
    ) -> None:
        import botocore.session
        from botocore.config import Config

        self.name = name
        self.fingerprint_is_digest = True
        self._section = "s3.replica" if name == "replica" else "s3"
        # their ranges are checked where the config loads
        self.part_size = part_size or location.part_size
        self.max_concurrency = max_concurrency or location.upload_concurrency
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.copy_part_threshold = copy_part_threshold
        self.copy_part_size = copy_part_size
        self.deadline = location.deadline
        self.abort_wait = min(ABORT_WAIT, location.read_timeout)
        self._write_args = self._object_settings(location)
        options: dict[str, Any] = {
            # botocore's own max_attempts counts retries only; the total is what [s3] says
            "retries": {"mode": "standard", "total_max_attempts": location.max_attempts},
            "connect_timeout": location.connect_timeout,
            "read_timeout": location.read_timeout,
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

        requests = _Requests(self.max_concurrency, "s3-copy")
        parts = [requests.submit(copy_part, n) for n in range(1, math.ceil(size / part_size) + 1)]
        try:
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id,
                MultipartUpload={"Parts": [part.result() for part in parts]},
            )
        except BaseException:
            # parts still in flight would land after the abort and be orphaned: wait for them
            for part in parts:
                part.cancel()
            wait(parts, timeout=self.abort_wait)
            self.abort_upload(key, upload_id)
            raise
        finally:
            requests.close()

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


class _Requests:
    """Daemon threads that send S3 requests and hand back futures.

    A ThreadPoolExecutor's threads are joined at exit, each after its request's last retry: an
    upload abandoned on a hung endpoint would hold the process that long. These end with the
    process; what an abandoned request leaves, the upload's abort or unfinished() deals with.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._workers = workers
        for index in range(workers):
            threading.Thread(target=self._run, name=f"{name}-{index}", daemon=True).start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run fn on the next free thread."""
        future: Future[T] = Future()

        def job() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)

        self._jobs.put(job)
        return future

    def close(self) -> None:
        """Let each thread end once the requests given to it have."""
        for _ in range(self._workers):
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()


class S3Writer:
    """A streamed multipart upload with flat memory; the object appears only on commit().

    Data is copied into part buffers of at most part_size, of which there are max_concurrency +
    1: up to max_concurrency parts upload while the next one fills, and write() waits for a
    buffer that a finished part gives back. The same few buffers serve the whole upload, so
    memory is fixed whatever the object's size, and a buffer grows only as far as the data put
    in it: a small object costs its own size, not a part. An object that fits in one part is
    sent with a single PUT at commit().

    Every wait ends at the store's deadline, counted from when the writer was opened, or at
    cancel(); a request that S3 never answers is abandoned on its daemon thread.
    """

    def __init__(
        self, store: S3Store, key: str, part_size: int, max_concurrency: int, *,
        waiting: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._key = key
        self._where = store.describe(key)  # checks the key before anything is sent
        self._part_size = part_size
        self._max_concurrency = max_concurrency
        self._deadline = time.monotonic() + store.deadline
        self._waiting = waiting
        self._cancelled = threading.Event()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._buffers = 0
        self._part: bytearray | None = None
        self._filled = 0
        self._size = 0
        self._upload_id: str | None = None
        self._requests: _Requests | None = None
        self._parts: list[Future[tuple[dict[str, Any], bytes]]] = []
        self._calls: list[Future[Any]] = []  # the writer's other requests (create, PUT, ...)
        self._doing = ""  # the request the writer waits for, when it is not parts
        self._failure: BaseException | None = None
        self._state = "open"  # open, committed or aborted
        self._abort_confirmed = True

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
                # grows a buffer that is shorter (a new one starts empty), overwrites in place
                # one that a finished part gave back
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
                checksum = self._request("sending the object", self._store._put, self._key, rest)
            else:
                assert self._part is not None
                self._send_part(self._part, self._filled)
                checksum, confirmed = self._complete()
        except BaseException as exc:
            self._fail(exc)
        self._state = "committed"
        self._drop_buffers()
        try:
            self._request(
                "checking what S3 holds", self._store.verify, self._key, self._size, checksum,
                ours=confirmed,
            )
        finally:
            self._close_requests()

    def abort(self) -> bool:
        """Drop the upload and every part sent; safe to call more than once, and after commit.

        Whether nothing can be left: False when a request was still unanswered after the
        store's abort wait (a hung endpoint), so that an upload or object may remain for
        unfinished() and prune to find.
        """
        if self._state != "open":
            return self._abort_confirmed
        self._state = "aborted"
        until = time.monotonic() + self._store.abort_wait
        # parts in flight would land after the abort and be orphaned: wait for them, a while
        requests = [*self._parts, *self._calls]
        for future in requests:
            future.cancel()
        _, unanswered = wait(requests, timeout=self._store.abort_wait)
        self._drop_buffers()
        confirmed = not unanswered
        if self._upload_id is not None:
            # on a thread of its own: the writer's threads may all be stuck in parts
            aborter = _Requests(1, "s3-abort")
            done = aborter.submit(self._store.abort_upload, self._key, self._upload_id)
            aborter.close()
            wait([done], timeout=max(0.0, until - time.monotonic()))
            confirmed = confirmed and done.done() and done.exception() is None and done.result()
        self._close_requests()
        self._abort_confirmed = confirmed
        return confirmed

    def cancel(self) -> None:
        """Make a wait of this writer in another thread end now (an interrupt); thread-safe."""
        self._cancelled.set()

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageError(
                f"{self._store.name}: cannot write {self._where}: the upload was {self._state}",
                "start a new upload",
            )

    def _fail(self, exc: BaseException) -> NoReturn:
        """Abort, and say why in etcdops terms (the first part that failed is the cause)."""
        from botocore.exceptions import BotoCoreError, ClientError

        # an interrupt stays an interrupt, whatever failed before it
        cause = (self._failure or exc) if isinstance(exc, Exception) else exc
        self.abort()
        if isinstance(cause, BotoCoreError | ClientError):
            raise self._store.error(cause, "write", self._where) from cause
        raise cause

    def _wait(self, attempt: Callable[[float], T]) -> T:
        """attempt(timeout) until it stops raising queue.Empty or TimeoutError, within the
        deadline; tells waiting what the upload waits for after a second, then at each
        doubling of the wait."""
        started = time.monotonic()
        report_at = started + FIRST_WAIT_REPORT
        while True:
            now = time.monotonic()
            if self._cancelled.is_set():
                raise StorageError(f"{self._store.name}: the upload to {self._where} was stopped")
            if now >= self._deadline:
                raise self._overdue()
            try:
                return attempt(min(WAIT_SLICE, self._deadline - now))
            except (queue.Empty, TimeoutError):
                pass
            now = time.monotonic()
            if self._waiting is not None and now >= report_at:
                self._waiting(
                    f"waiting for the {self._store.name} upload ({self._where}) — "
                    f"{self._status()}, {format_duration(now - started)} so far"
                )
                report_at = started + 2 * (now - started)

    def _status(self) -> str:
        if self._doing:
            return self._doing
        in_flight = sum(1 for part in self._parts if part.running())
        queued = sum(1 for part in self._parts if not part.done()) - in_flight
        return f"{in_flight} part{'' if in_flight == 1 else 's'} in flight" + (
            f", {queued} queued" if queued else ""
        )

    def _overdue(self) -> StorageError:
        section = self._store._section
        return StorageError(
            f"{self._store.name}: the upload to {self._where} did not finish within "
            f"{section}.deadline ({format_duration(self._store.deadline)}): {self._status()}",
            f"check the S3 endpoint {self._store.endpoint}; for a slow link raise "
            f"{section}.deadline",
            retryable=True,
        )

    def _request(self, doing: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """One request of the writer's own (not a part), waited for within the deadline."""
        call = self._threads().submit(fn, *args, **kwargs)
        self._calls.append(call)
        self._doing = doing
        try:
            return self._wait(call.result)
        finally:
            self._doing = ""

    def _threads(self) -> _Requests:
        if self._requests is None:
            self._requests = _Requests(self._max_concurrency, "s3-part")
        return self._requests

    def _close_requests(self) -> None:
        if self._requests is not None:
            self._requests.close()
            self._requests = None

    def _take_buffer(self) -> bytearray:
        """A part buffer to fill: a free one, a new (empty) one while there are fewer than
        max_concurrency + 1, or else the next one that a finished part gives back."""
        try:
            buffer = self._free.get_nowait()
        except queue.Empty:
            if self._buffers <= self._max_concurrency:
                self._buffers += 1
                return bytearray()
            buffer = self._wait(lambda timeout: self._free.get(timeout=timeout))
        if self._failure is not None:
            raise self._failure
        return buffer

    def _drop_buffers(self) -> None:
        # the parts' futures hold their buffers too, through the callbacks that give them back
        self._part, self._filled, self._parts, self._calls = None, 0, [], []
        while not self._free.empty():
            self._free.get_nowait()

    def _send_part(self, buffer: bytearray, length: int) -> None:
        """Queue one part; its buffer comes back to the free ones when its upload has ended."""
        if self._failure is not None:
            raise self._failure
        if self._upload_id is None:
            self._upload_id = self._request(
                "starting the upload",
                self._store._client.create_multipart_upload,
                Bucket=self._store.bucket,
                Key=self._store.full_key(self._key),
                ChecksumAlgorithm="CRC32",
                **self._store._write_args,
            )["UploadId"]
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(
                f"{self._store.name}: cannot write {self._where}: more than {MAX_PARTS} parts "
                f"of {self._part_size} bytes",
                "pass the expected size when opening the writer, so that parts are big enough",
            )
        body = buffer if length == len(buffer) else buffer[:length]  # only the last is short
        future = self._threads().submit(self._upload_part, number, body)
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

    def _parts_sent(self, timeout: float) -> list[tuple[dict[str, Any], bytes]]:
        """Every part's result once all are in; the first failure as soon as one fails."""
        done, pending = wait(self._parts, timeout, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        if pending:
            raise TimeoutError
        return [future.result() for future in self._parts]

    def _complete(self) -> tuple[Checksum, bool]:
        """Complete the upload once every part is in: the composite checksum, and whether S3
        confirmed the completion."""
        from botocore.exceptions import ClientError

        results = self._wait(self._parts_sent)
        checksum = Checksum("CRC32", composite_crc32([digest for _, digest in results]))
        try:
            self._request(
                "completing the upload",
                self._store._client.complete_multipart_upload,
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
