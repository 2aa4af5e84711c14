"""The S3 store against a real moto server over HTTP, with faults injected by an HTTP proxy."""

import base64
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from etcdops.errors import ConfigError, FeatureUnavailable, NotFoundError, StorageError
from etcdops.stores import s3_writer
from etcdops.stores.s3 import S3Store
from etcdops.stores.s3_parts import (
    MAX_PARTS,
    MIN_PART_SIZE,
    MiB,
    choose_part_size,
    composite_crc32,
    crc32_digest,
)
from tests.faultproxy import FaultProxy, Faults
from tests.s3proxy import (
    ACCESS_DENIED,
    NOT_IMPLEMENTED,
    carries_checksum,
    complete_upload,
    delete_object,
    delete_objects,
    list_uploads,
    put_object,
    upload_part,
)

PART = MIN_PART_SIZE
KEY = "c/snapshots/2026/11/25/ID.db.zst.age"


def primary(location, **options):
    return S3Store(location, "primary", part_size=PART, **options)


def write(store, key, data, chunk=1 << 20):
    writer = store.open_writer(key)
    for start in range(0, len(data), chunk):
        writer.write(data[start:start + chunk])
    writer.commit()


def raw_head(s3, location, key):
    client = s3.client(location.region)
    key = location.prefix + key
    return client.head_object(Bucket=location.bucket, Key=key, ChecksumMode="ENABLED")


def through(proxy, location):
    return dataclasses.replace(location, endpoint_url=proxy.url)


def unfinished_keys(store):
    return [info.key for info in store.unfinished("")]


def assert_nothing_left(store, key=KEY):
    assert store.head(key) is None
    assert unfinished_keys(store) == []


def test_import_does_not_load_botocore():
    code = "import sys, etcdops.stores.s3; assert not {'boto3', 'botocore'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_writer_uses_only_the_stores_public_surface():
    # the store's client and write settings are its own: the writer goes through its methods
    source = Path(s3_writer.__file__).read_text()
    assert re.findall(r"_store\._\w+", source) == []


@pytest.mark.parametrize("size", [1, 200 * MiB, 8 * 1024 * MiB, 500 * 1024 * MiB])
def test_part_size_keeps_objects_under_10000_parts(size):
    part_size = choose_part_size(size)
    assert part_size >= 5 * MiB and part_size % MiB == 0
    # room for a stream 5% bigger than announced
    assert size * 1.05 / part_size < MAX_PARTS


def test_part_size_without_expected_size_is_s3s_minimum():
    assert choose_part_size(None) == 5 * MiB


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART])
def test_round_trip(s3, size):
    store = primary(s3.primary)
    data = os.urandom(size)
    write(store, KEY, data)
    assert hashlib.sha256(store.get_bytes(KEY)).digest() == hashlib.sha256(data).digest()
    parts = -(-size // PART)
    etag = raw_head(s3, s3.primary, KEY)["ETag"]
    assert etag.endswith(f'-{parts}"') if parts > 1 else "-" not in etag
    assert unfinished_keys(store) == []


def test_composite_checksum_is_what_s3_computes(s3):
    store = primary(s3.primary)
    data = os.urandom(2 * PART + 10)
    write(store, KEY, data)
    digests = [crc32_digest(data[i:i + PART]) for i in range(0, len(data), PART)]
    stored = raw_head(s3, s3.primary, KEY)["ChecksumCRC32"]
    # moto omits the "-3" that real S3 appends
    assert stored.partition("-")[0] == composite_crc32(digests).partition("-")[0]


def test_every_part_carries_its_checksum_and_no_body_hash(s3, s3_proxy):
    proxy = s3_proxy()
    data = os.urandom(2 * PART + 1)
    write(primary(through(proxy, s3.primary)), KEY, data)
    parts = sorted(
        (r for r in proxy.requests if r.param("partNumber")),
        key=lambda r: int(r.param("partNumber")),
    )
    assert len(parts) == 3
    for request, start in zip(parts, range(0, len(data), PART), strict=True):
        sent = request.headers["x-amz-checksum-crc32"]
        assert base64.b64decode(sent) == crc32_digest(data[start:start + PART])
        # the signed checksum header covers the body: no SigV4 hash of it on top
        assert request.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"


def test_part_size_and_concurrency_come_from_the_config(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.delay(lambda r: r.param("partNumber") is not None, 0.1)
    location = dataclasses.replace(
        through(proxy, s3.primary), part_size=6 * MiB, upload_concurrency=1
    )
    data = os.urandom(3 * 6 * MiB + 1)
    write(S3Store(location, "primary"), KEY, data)
    parts = [r for r in proxy.requests if r.param("partNumber")]
    sizes = sorted(int(r.headers["content-length"]) for r in parts)
    assert sizes == [1, 6 * MiB, 6 * MiB, 6 * MiB]
    assert proxy.peak_in_flight == 1


def test_parts_in_flight_are_bounded(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.delay(lambda r: r.param("partNumber") is not None, 0.2)
    store = primary(through(proxy, s3.primary), max_concurrency=2)
    data = os.urandom(6 * PART + 1)
    write(store, KEY, data)
    assert proxy.peak_in_flight == 2
    assert store.get_bytes(KEY) == data


_UPLOAD_12_PARTS = """
import dataclasses, hashlib, json, sys, tracemalloc
from etcdops.config import S3Location
from etcdops.stores.s3 import S3Store
from etcdops.stores.s3_parts import MiB
location, key, part = S3Location(**json.loads(sys.argv[1])), sys.argv[2], int(sys.argv[3])
store = S3Store(location, "primary", part_size=part, max_concurrency=2)
digest = hashlib.sha256()
writer = store.open_writer(key)
tracemalloc.start()
for index in range(12 * part // MiB):
    block = index.to_bytes(4, "big") * (MiB // 4)
    digest.update(block)
    writer.write(block)
writer.commit()
print(json.dumps([tracemalloc.get_traced_memory()[1], digest.hexdigest()]))
"""


def test_upload_memory_is_a_few_part_buffers_whatever_the_size(s3):
    # 12 parts through 2 in flight: the writer's peak is its 3 part buffers (2 uploading, 1
    # filling) and a block of input, not the parts it has sent, nor copies of them in botocore.
    # In a process of its own, as moto runs in this one and keeps the object.
    location = json.dumps(dataclasses.asdict(s3.primary))
    done = subprocess.run(
        [sys.executable, "-c", _UPLOAD_12_PARTS, location, KEY, str(PART)],
        capture_output=True, text=True, check=True,
    )
    peak, sha256 = json.loads(done.stdout)
    assert 3 * PART < peak < 3 * PART + 5 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert hashlib.sha256(primary(s3.primary).get_bytes(KEY)).hexdigest() == sha256


_TINY_OBJECT_HUGE_PARTS = """
import json, resource, sys, tracemalloc
from etcdops.config import S3Location
from etcdops.stores.s3 import S3Store
location, key = S3Location(**json.loads(sys.argv[1])), sys.argv[2]
# a 4 GiB part buffer cannot even be reserved: only what the object needs may be allocated
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
store = S3Store(location, "primary", part_size=4 << 30)
tracemalloc.start()
writer = store.open_writer(key, expected_size=1 << 20)
for _ in range(10):
    writer.write(bytes(10 << 10))
writer.commit()
print(tracemalloc.get_traced_memory()[1])
"""


def test_a_tiny_object_allocates_what_it_needs_not_part_size(s3):
    location = json.dumps(dataclasses.asdict(s3.primary))
    done = subprocess.run(
        [sys.executable, "-c", _TINY_OBJECT_HUGE_PARTS, location, KEY],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 4 * MiB
    assert primary(s3.primary).get_bytes(KEY) == bytes(100 << 10)


def test_abort_leaves_no_parts_and_no_object(s3):
    store = primary(s3.primary)
    writer = store.open_writer(KEY)
    writer.write(os.urandom(2 * PART + PART // 2))
    assert unfinished_keys(store) == [KEY]  # the upload really was in progress
    writer.abort()
    assert_nothing_left(store)
    writer.abort()
    with pytest.raises(StorageError, match="aborted"):
        writer.write(b"more")
    with pytest.raises(StorageError, match="aborted"):
        writer.commit()


def test_a_hung_endpoint_ends_a_write_at_the_deadline_and_says_what_it_waited_for(
    s3, s3_proxy
):
    proxy = s3_proxy()
    proxy.hang(nth=2)  # the upload starts; no part is ever answered
    location = dataclasses.replace(through(proxy, s3.primary), read_timeout=5.0, deadline=2.0)
    said = []
    writer = primary(location).open_writer(KEY, waiting=said.append)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"did not finish within s3\.deadline \(2\.0s\)"):
        for _ in range(6):
            writer.write(os.urandom(PART))
    # the deadline, then the abort's wait of read_timeout at most (less than a retried abort's
    # two), with a loaded machine's margin
    assert time.monotonic() - started < 2.0 + 5.0 + 3.0
    assert any(line.startswith("waiting for the primary upload (s3://etcdops-primary/")
               and "2 parts in flight" in line for line in said), said
    assert writer.abort() is False  # S3 never answered the abort either


def test_a_transient_500_on_a_part_is_retried(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.fail(upload_part(2))
    data = os.urandom(3 * PART)
    write(primary(through(proxy, s3.primary)), KEY, data)
    assert proxy.count(upload_part(2)) == 2
    assert primary(s3.primary).get_bytes(KEY) == data


def test_repeated_500s_abort_the_upload(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.fail(upload_part(2), times=4)
    # [s3] max_attempts counts every attempt, the first one included
    location = dataclasses.replace(through(proxy, s3.primary), max_attempts=4)
    with pytest.raises(StorageError) as caught:
        write(primary(location), KEY, os.urandom(3 * PART))
    assert caught.value.retryable
    assert "primary" in caught.value.message and "etcdops-primary" in caught.value.message
    assert "InternalError" in caught.value.message
    assert proxy.count(upload_part(2)) == 4
    assert_nothing_left(primary(s3.primary))


def test_a_connection_reset_mid_part_is_retried(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.reset(upload_part(2))
    data = os.urandom(2 * PART + 1)
    write(primary(through(proxy, s3.primary)), KEY, data)
    assert proxy.count(upload_part(2)) == 2
    assert primary(s3.primary).get_bytes(KEY) == data


def test_a_lost_reply_to_complete_is_retried_and_checked(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.reset(complete_upload, after_forward=True)
    data = os.urandom(PART + 1)
    write(primary(through(proxy, s3.primary)), KEY, data)
    assert proxy.count(complete_upload) == 2
    assert primary(s3.primary).get_bytes(KEY) == data


def test_access_denied_is_not_retried(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.fail(lambda r: r.method == "PUT", status=403, code="AccessDenied")
    with pytest.raises(StorageError) as caught:
        primary(through(proxy, s3.primary)).put_bytes(KEY, b"manifest")
    assert not caught.value.retryable
    assert "access denied" in caught.value.message and "credential" in caught.value.hint
    assert proxy.count(lambda r: r.method == "PUT") == 1


@pytest.mark.parametrize("status, code, message, words", [
    (501, "NotImplemented", NOT_IMPLEMENTED, "the server does not implement ListMultipartUploads"),
    (403, "AccessDenied", ACCESS_DENIED, "allow s3:ListBucketMultipartUploads on "
                                         "arn:aws:s3:::etcdops-primary"),
])
def test_a_server_that_refuses_to_list_uploads_makes_that_feature_unavailable(
    s3, s3_proxy, status, code, message, words
):
    proxy = s3_proxy()
    proxy.refuse(list_uploads, status, code, message)
    store = primary(through(proxy, s3.primary))
    with pytest.raises(FeatureUnavailable) as caught:
        store.unfinished("c/")
    error = caught.value
    assert not error.retryable and f"({code}: {message})" in error.message
    assert words in str(error) and "AbortIncompleteMultipartUpload" in error.hint
    assert "retry later" not in str(error)
    assert proxy.count(list_uploads) == 1  # the same answer on every retry: none is made


def test_a_failing_list_of_uploads_is_still_retried_and_retryable(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.fail(list_uploads, times=1 << 30)
    location = dataclasses.replace(through(proxy, s3.primary), max_attempts=2)
    with pytest.raises(StorageError) as caught:
        primary(location).unfinished("c/")
    assert not isinstance(caught.value, FeatureUnavailable)
    assert caught.value.retryable and "retry later" in caught.value.hint
    assert proxy.count(list_uploads) == 2


@pytest.mark.parametrize("size", [10, 2 * PART + 1])  # a single PUT, a multipart upload
def test_a_required_call_not_implemented_is_a_clear_error_not_retried(s3, s3_proxy, size):
    proxy = s3_proxy()
    proxy.refuse(lambda r: r.method in ("PUT", "POST"), 501, "NotImplemented", NOT_IMPLEMENTED)
    store = primary(through(proxy, s3.primary))
    with pytest.raises(StorageError) as caught:
        write(store, KEY, os.urandom(size))
    error = caught.value
    assert not isinstance(error, FeatureUnavailable) and not error.retryable
    operation = "PutObject" if size < PART else "CreateMultipartUpload"
    assert f"refuses {operation} as not implemented (NotImplemented: {NOT_IMPLEMENTED})" in (
        error.message)
    assert "retrying will not help" in error.hint and "retry later" not in str(error)
    # the one refused request, never retried: a PUT, or the POST that starts the upload
    assert len(proxy.requests) == 1
    assert proxy.count(put_object) == (1 if size < PART else 0)
    assert_nothing_left(primary(s3.primary))


# Backblaze B2's answer to a request with a checksum header
B2_REFUSAL = "Unsupported header 'x-amz-checksum-crc32' received for this API call."


@pytest.mark.parametrize("first", ["one PUT", "multipart upload", "read"])
def test_a_server_that_refuses_checksum_headers_gets_signed_bodies_instead(
    s3, s3_proxy, caplog, first
):
    small, big = os.urandom(1000), os.urandom(2 * PART + 1)
    if first == "read":  # a restore host: its first request is a GET with x-amz-checksum-mode
        primary(s3.primary).put_bytes("c/small", small)
    proxy = s3_proxy()
    proxy.refuse(carries_checksum, 400, "InvalidArgument", B2_REFUSAL)
    store = primary(through(proxy, s3.primary))
    with caplog.at_level("WARNING", logger="etcdops"):
        if first == "read":
            assert store.get_bytes("c/small") == small
        if first == "multipart upload":
            write(store, KEY, big)
        store.put_bytes("c/small", small)
        write(store, KEY, big)
        assert store.get_bytes("c/small") == small and store.get_bytes(KEY) == big
    # one warning for the store, however many requests were refused
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"refuses S3 checksum headers (InvalidArgument: {B2_REFUSAL})" in warning
    assert "signed payload" in warning and "sha256" in warning
    assert proxy.count(carries_checksum) == 1  # the first one only: none after it
    # every body that went up carries the SHA-256 its signature covers, which S3 checks
    parts = sorted((r for r in proxy.requests if r.param("partNumber")),
                   key=lambda r: (int(r.param("partNumber")), r.query))
    for request in parts:
        number = int(request.param("partNumber"))
        body = big[(number - 1) * PART:number * PART]
        assert request.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    assert len(parts) == (6 if first == "multipart upload" else 3)
    assert not store.checksums and unfinished_keys(store) == []


def test_a_checksum_that_does_not_match_fails_and_keeps_checksums_on(s3, s3_proxy, caplog):
    proxy = s3_proxy()
    proxy.fail(put_object, status=400, code="BadDigest",
               message="The SHA256 you specified did not match the calculated checksum.")
    store = primary(through(proxy, s3.primary))
    with caplog.at_level("WARNING", logger="etcdops"), pytest.raises(StorageError) as caught:
        store.put_bytes("c/small", b"manifest")
    assert "BadDigest" in caught.value.message
    assert store.checksums and not [r for r in caplog.records if r.levelname == "WARNING"]
    store.put_bytes("c/small", b"manifest")
    assert proxy.requests[-1].headers["x-amz-checksum-sha256"]


@pytest.mark.parametrize(
    "faults, words",
    [(Faults(cut_after=1 << 20), "connection"), (Faults(flip_at=100_000), "checksum")],
)
def test_a_damaged_download_is_a_retryable_error(s3, faults, words):
    primary(s3.primary).put_bytes(KEY, os.urandom(2 * PART))
    target = urlsplit(s3.endpoint_url)
    proxy = FaultProxy(target.hostname, target.port, faults)
    try:
        store = primary(dataclasses.replace(s3.primary, endpoint_url=proxy.url))
        with pytest.raises(StorageError, match=words) as caught, store.open_reader(KEY) as reader:
            while reader.read(1 << 16):
                pass
    finally:
        proxy.close()
    assert caught.value.retryable and KEY in caught.value.message


def test_endpoint_down(s3, s3_proxy):
    proxy = s3_proxy()
    store = primary(through(proxy, s3.primary))
    store.put_bytes(KEY, b"x")  # leaves a pooled connection open, which must fail too
    proxy.down()
    for action in (lambda: store.put_bytes(KEY, b"y"), lambda: list(store.list("c/"))):
        with pytest.raises(StorageError) as caught:
            action()
        assert caught.value.retryable
        assert proxy.url in caught.value.message and "primary" in caught.value.message


def test_missing_bucket_is_named(s3):
    store = primary(dataclasses.replace(s3.primary, bucket="etcdops-missing"))
    actions = [
        lambda: store.put_bytes(KEY, b"x"),
        lambda: list(store.list("")),
        lambda: write(store, KEY, os.urandom(PART + 1)),
        lambda: store.open_reader(KEY),
    ]
    for action in actions:
        with pytest.raises(StorageError) as caught:
            action()
        assert not isinstance(caught.value, NotFoundError)
        assert "etcdops-missing" in caught.value.message and "us-east-1" in caught.value.message
        assert "s3.bucket" in caught.value.hint


def test_no_credentials_is_a_configuration_error(s3, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="no AWS credentials") as caught:
        primary(s3.primary).put_bytes(KEY, b"x")
    assert "AWS_ACCESS_KEY_ID" in caught.value.hint


def test_kms_key_without_kms_encryption_is_a_configuration_error(s3):
    location = dataclasses.replace(s3.primary, sse="AES256", kms_key_id="alias/etcdops")
    with pytest.raises(ConfigError, match=r"s3\.kms_key_id"):
        S3Store(location, "primary")


def test_encryption_and_storage_class_on_every_object(s3):
    location = dataclasses.replace(s3.primary, sse="AES256", storage_class="STANDARD_IA")
    store = primary(location)
    store.put_bytes("c/m.json", b"{}")
    write(store, "c/small", os.urandom(10))
    write(store, "c/big", os.urandom(PART + 1))
    for key in ("c/m.json", "c/small", "c/big"):
        head = raw_head(s3, location, key)
        assert (head["ServerSideEncryption"], head["StorageClass"]) == ("AES256", "STANDARD_IA")


def test_kms_key_is_recorded(s3):
    key_id = "arn:aws:kms:us-west-2:123456789012:key/etcdops"
    location = dataclasses.replace(s3.replica, sse="aws:kms", kms_key_id=key_id)
    S3Store(location, "replica").put_bytes(KEY, b"x")
    head = raw_head(s3, location, KEY)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_id)


@pytest.mark.parametrize("threshold, etag_suffix", [(5 * 1024**3, '"'), (PART, '-3"')])
def test_copy_to_the_replica(s3, threshold, etag_suffix):
    source = primary(s3.primary)
    data = os.urandom(2 * PART + 7)
    write(source, KEY, data)
    location = dataclasses.replace(s3.replica, storage_class="ONEZONE_IA")
    replica = S3Store(location, "replica", copy_part_threshold=threshold, copy_part_size=PART)
    replica.copy_from(source, KEY, len(data))
    assert replica.get_bytes(KEY) == data
    head = raw_head(s3, location, KEY)
    # CopyObject gives a plain ETag, UploadPartCopy a multipart one ending in the part count
    assert head["ETag"].endswith(etag_suffix) and ("-" in head["ETag"]) == (etag_suffix != '"')
    assert head["StorageClass"] == "ONEZONE_IA"
    assert unfinished_keys(replica) == []


@pytest.mark.parametrize("threshold", [5 * 1024**3, PART])
def test_copy_of_a_missing_source(s3, threshold):
    replica = S3Store(s3.replica, "replica", copy_part_threshold=threshold, copy_part_size=PART)
    with pytest.raises(NotFoundError, match="etcdops-primary"):
        replica.copy_from(primary(s3.primary), KEY, 3 * PART)
    assert_nothing_left(replica)


def test_copy_checks_the_source_size(s3):
    source = primary(s3.primary)
    source.put_bytes(KEY, b"12345")
    replica = S3Store(s3.replica, "replica")
    with pytest.raises(StorageError, match="5 bytes"):
        replica.copy_from(source, KEY, 4)
    assert_nothing_left(replica)


def test_prefix_is_the_stores_own(s3):
    store = primary(s3.primary)
    store.put_bytes("c/a", b"x")
    listed = s3.client().list_objects_v2(Bucket="etcdops-primary")["Contents"]
    assert [o["Key"] for o in listed] == ["backups/c/a"]
    assert [i.key for i in store.list("c/")] == ["c/a"]
    assert store.describe("c/a") == "s3://etcdops-primary/backups/c/a (us-east-1)"


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_create_bucket_in_the_stores_region(s3, region):
    location = dataclasses.replace(s3.primary, bucket="etcdops-new", region=region)
    store = primary(location)
    store.create_bucket()
    store.create_bucket()  # again: the bucket is ours already
    store.put_bytes(KEY, b"x")
    answer = s3.client(region).get_bucket_location(Bucket="etcdops-new")["LocationConstraint"]
    assert (answer or "us-east-1") == region


# --- deleting many objects ---------------------------------------------------------------------


def keys_put(store, count):
    keys = [f"c/journal/{number:04d}" for number in range(count)]
    for key in keys:
        store.put_bytes(key, b"segment")
    return keys


def delete_result_keeping(key):
    """A DeleteObjects answer (200) that names key as not deleted, as S3 names each it kept."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult><Error>'
            f"<Key>{key}</Key><Code>InternalError</Code>"
            "<Message>We encountered an internal error. Please try again.</Message>"
            "</Error></DeleteResult>")


def test_delete_many_sends_one_request_per_batch(s3, s3_proxy, monkeypatch):
    monkeypatch.setattr("etcdops.stores.s3_delete.DELETE_BATCH", 2)
    proxy = s3_proxy()
    store = primary(through(proxy, s3.primary))
    keys = keys_put(store, 5)
    store.delete_many(keys)
    assert list(store.list("c/")) == []
    assert proxy.count(delete_objects) == 3 and proxy.count(delete_object) == 0


@pytest.mark.parametrize("status, code, message", [
    (501, "NotImplemented", NOT_IMPLEMENTED),
    (400, "InvalidArgument", B2_REFUSAL),  # the checksum header S3 requires on DeleteObjects
    (400, "MissingContentMD5", "Missing required header for this request: Content-MD5"),
])
def test_a_server_without_delete_objects_gets_one_delete_per_key(
    s3, s3_proxy, caplog, status, code, message
):
    proxy = s3_proxy()
    proxy.refuse(delete_objects, status, code, message)
    store = primary(through(proxy, s3.primary))
    keys = keys_put(store, 4)
    with caplog.at_level("WARNING", logger="etcdops"):
        store.delete_many(keys[:2])
        store.delete_many(keys[2:])
    assert list(store.list("c/")) == []
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"refuses DeleteObjects ({code}: {message})" in warning
    assert proxy.count(delete_objects) == 1 and proxy.count(delete_object) == 4


def test_a_denied_delete_objects_is_an_error_naming_the_permission(s3, s3_proxy):
    proxy = s3_proxy()
    proxy.refuse(delete_objects, 403, "AccessDenied", ACCESS_DENIED)
    store = primary(through(proxy, s3.primary))
    keys = keys_put(store, 2)
    with pytest.raises(StorageError) as caught:
        store.delete_many(keys)
    assert "cannot delete 2 objects in s3://etcdops-primary/" in caught.value.message
    assert "s3:DeleteObject" in caught.value.hint and not caught.value.retryable
    assert len(list(store.list("c/"))) == 2 and proxy.count(delete_object) == 0


def test_keys_delete_objects_kept_are_deleted_again_one_by_one(s3, s3_proxy):
    # S3 answers 200 and names each key it could not delete (a SlowDown, an InternalError)
    proxy = s3_proxy()
    store = primary(through(proxy, s3.primary))
    keys = keys_put(store, 3)
    proxy.answer(delete_objects, delete_result_keeping(store.full_key(keys[1])))
    store.delete_many(keys)
    # the key named went in a DELETE of its own; the others S3 said it deleted (this answer
    # was the proxy's, so moto still holds them)
    assert [r.path for r in proxy.requests if delete_object(r)] == [
        f"/etcdops-primary/{store.full_key(keys[1])}"]
    assert [info.key for info in store.list("c/")] == [keys[0], keys[2]]


@pytest.mark.parametrize("status, code", [(400, "RequestTimeout"), (409, "OperationAborted"),
                                          (429, "SlowDown")])
def test_a_delete_objects_that_says_later_fails_and_batches_again(s3, s3_proxy, status, code):
    proxy = s3_proxy()
    location = dataclasses.replace(through(proxy, s3.primary), max_attempts=1)
    store = primary(location)
    keys = keys_put(store, 2)
    proxy.fail(delete_objects, status=status, code=code)
    with pytest.raises(StorageError, match="cannot delete 2 objects in"):
        store.delete_many(keys)
    assert store.batch_deletes and proxy.count(delete_object) == 0
    store.delete_many(keys)  # the next prune: one DeleteObjects again
    assert list(store.list("c/")) == [] and proxy.count(delete_objects) == 2


def test_an_answer_naming_a_key_never_asked_for_deletes_nothing_more(s3, s3_proxy):
    proxy = s3_proxy()
    store = primary(through(proxy, s3.primary))
    keys = keys_put(store, 2)
    proxy.answer(delete_objects, delete_result_keeping("elsewhere/c/journal/0000"))
    with pytest.raises(StorageError, match="which was not asked for"):
        store.delete_many(keys)
    assert proxy.count(delete_object) == 0
