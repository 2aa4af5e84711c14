"""How S3's answers become etcdops errors: what is worth retrying, and what each hint names.

The answers are botocore's own ClientErrors as it builds them from S3's error bodies; the
store is a real S3Store (making one sends nothing). tests/stores/test_s3.py sends the same
answers over HTTP through the fault proxy.
"""

import pytest
from botocore.exceptions import ClientError

from etcdops.config import S3Location
from etcdops.errors import NotFoundError, StorageError
from etcdops.stores.s3 import S3Store
from etcdops.stores.s3_errors import PERMISSIONS, checksums_refused, refusal, s3_error


def store(**settings):
    location = S3Location(bucket="backups", region="eu-west-1", prefix="etcd/",
                          endpoint_url="http://127.0.0.1:9", **settings)
    return S3Store(location, "primary")


def answer(operation, status, code, message="x"):
    error = {"Code": code, "Message": message} if code else {}
    return ClientError(
        {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@pytest.mark.parametrize("operation, status, code", [
    ("ListMultipartUploads", 501, "NotImplemented"),  # AWS, MinIO, Ceph RGW, Garage, R2
    ("PutObject", 501, "XNotImplemented"),
    ("UploadPart", 400, "NotSupported"),
    ("HeadObject", 501, "501"),  # a HEAD's answer has no body: botocore knows the status alone
    ("ListMultipartUploads", 405, "MethodNotAllowed"),
])
def test_not_implemented_is_not_retryable_and_names_the_call(operation, status, code):
    error = s3_error(store(), answer(operation, status, code), "write")
    assert isinstance(error, StorageError) and not error.retryable
    assert f"refuses {operation} as not implemented" in error.message
    assert "retry later" not in str(error) and "retrying will not help" in error.hint
    assert refusal(answer(operation, status, code)) == (True, f"{code}: x")


@pytest.mark.parametrize("operation, resource", [
    ("PutObject", "s3:PutObject on arn:aws:s3:::backups/etcd/*"),
    ("UploadPartCopy", "s3:PutObject on arn:aws:s3:::backups/etcd/*"),
    ("GetObject", "s3:GetObject on arn:aws:s3:::backups/etcd/*"),
    ("ListObjectsV2", "s3:ListBucket on arn:aws:s3:::backups,"),
    ("DeleteObject", "s3:DeleteObject on arn:aws:s3:::backups/etcd/*"),
    ("ListMultipartUploads", "s3:ListBucketMultipartUploads on arn:aws:s3:::backups,"),
    ("AbortMultipartUpload", "s3:AbortMultipartUpload on arn:aws:s3:::backups/etcd/*"),
])
def test_access_denied_names_the_permission_the_call_needs(operation, resource):
    error = s3_error(store(), answer(operation, 403, "AccessDenied"), "write")
    assert not error.retryable and "access denied (AccessDenied: x)" in error.message
    assert f"allowed {resource}" in error.hint
    assert "kms:" not in error.hint
    assert refusal(answer(operation, 403, "AccessDenied")) == (False, "AccessDenied: x")


def test_a_denied_head_says_that_a_missing_object_looks_the_same_without_list_bucket():
    error = s3_error(store(), answer("HeadObject", 403, "403"), "stat")
    assert "s3:GetObject" in error.hint and "without s3:ListBucket" in error.hint


@pytest.mark.parametrize("operation, kms", [
    ("PutObject", "kms:GenerateDataKey on"),
    ("CreateMultipartUpload", "kms:GenerateDataKey on"),
    ("GetObject", "kms:Decrypt on"),
    ("CopyObject", "kms:GenerateDataKey and kms:Decrypt on"),
])
def test_with_sse_kms_a_denial_names_the_kms_permission_too(operation, kms):
    error = s3_error(store(sse="aws:kms"), answer(operation, 403, "AccessDenied"), "write")
    assert f"{PERMISSIONS[operation]} on" in error.hint
    assert f"{kms} the KMS key (s3.kms_key_id)" in error.hint


@pytest.mark.parametrize("status, code", [
    (500, "InternalError"), (503, "SlowDown"), (503, "ServiceUnavailable"),
    (400, "RequestTimeout"), (500, "500"),
])
def test_failing_or_throttling_is_retryable(status, code):
    error = s3_error(store(), answer("ListMultipartUploads", status, code), "list uploads in")
    assert error.retryable and "retry later" in error.hint
    assert refusal(answer("ListMultipartUploads", status, code)) is None


def test_other_answers_keep_their_kind():
    assert isinstance(s3_error(store(), answer("GetObject", 404, "NoSuchKey"), "read"),
                      NotFoundError)
    bucket = s3_error(store(), answer("PutObject", 404, "NoSuchBucket"), "write")
    assert "bucket backups does not exist in eu-west-1" in bucket.message
    assert refusal(answer("PutObject", 404, "NoSuchBucket")) is None
    assert refusal(ValueError("not S3's")) is None and refusal(None) is None


def test_every_call_the_store_makes_has_its_permission():
    # a call added without its permission would leave its denial's hint vague
    import re
    from pathlib import Path

    import etcdops.stores.s3 as s3_module

    source = Path(s3_module.__file__).read_text()
    calls = set(re.findall(r"_client\.(\w+)\(", source))
    calls |= set(re.findall(r'_send\(\s*"(\w+)"', source))
    calls |= set(re.findall(r'get_paginator\("(\w+)"\)', source))
    operations = {"".join(w.capitalize() for w in call.split("_")) for call in calls}
    assert operations - {"GetPaginator"} <= set(PERMISSIONS)


@pytest.mark.parametrize("operation, status, code, message, extra, refused", [
    # Backblaze B2 and Cloudflare R2, in their own words
    ("UploadPart", 400, "InvalidArgument",
     "Unsupported header 'x-amz-sdk-checksum-algorithm' received for this API call.", {}, True),
    ("PutObject", 501, "NotImplemented",
     "Header 'x-amz-checksum-crc32' with value '8FJbTw==' not implemented", {}, True),
    # S3's generic words, with the header beside them
    ("PutObject", 501, "NotImplemented",
     "A header you provided implies functionality that is not implemented",
     {"Header": "x-amz-checksum-sha256"}, True),
    ("PutObject", 501, "NotImplemented",
     "A header you provided implies functionality that is not implemented",
     {"Header": "x-amz-server-side-encryption"}, False),
    # damage or a mistake: a checksum that does not match must fail, never turn checks off
    ("UploadPart", 400, "BadDigest",
     "The CRC32 you specified did not match the calculated checksum.", {}, False),
    ("UploadPart", 400, "InvalidRequest",
     "Checksum Type mismatch occurred, expected checksum Type: null, actual checksum Type: "
     "crc32", {}, False),
    ("PutObject", 500, "InternalError", "checksum service failing", {}, False),
])
def test_which_answers_refuse_checksum_headers(operation, status, code, message, extra, refused):
    error = answer(operation, status, code, message)
    error.response["Error"].update(extra)
    assert (checksums_refused(error) == f"{code}: {message}") is refused
    assert refused or checksums_refused(error) is None
