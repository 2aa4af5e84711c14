"""botocore's failures in etcdops terms: one line naming the store, the bucket and what was
being done, and a hint that says what to check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etcdops.errors import ConfigError, EtcdopsError, NotFoundError, StorageError

if TYPE_CHECKING:
    from etcdops.stores.s3 import S3Store

_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "AllAccessDisabled"}
_TRANSIENT = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
              "ThrottlingException", "NoSuchUpload"}


def s3_error(
    store: S3Store, exc: Exception, action: str, target: str | None = None
) -> EtcdopsError:
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
    where = target or f"s3://{store.bucket}/{store.prefix} ({store.region})"
    head = f"{store.name}: cannot {action} {where}"
    if isinstance(exc, NoCredentialsError):
        return ConfigError(
            f"{store.name}: no AWS credentials found to {action} {where}",
            "configure the standard AWS credential chain: AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/credentials, or an instance "
            "profile / IAM role",
        )
    transient = (ConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError)
    if isinstance(exc, transient):
        return StorageError(
            f"{head}: connection to S3 endpoint {store.endpoint} failed: {_one_line(exc)}",
            f"check the network path to {store.endpoint} and {store.section}.region / "
            f"{store.section}.endpoint_url; retrying may succeed",
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
            f"{store.name}: bucket {store.bucket} does not exist in {store.region} "
            f"(cannot {action} {where})",
            f"check {store.section}.bucket and {store.section}.region, or create the bucket",
        )
    if code in _DENIED or status == 403:
        return StorageError(
            f"{head}: access denied ({code}: {detail})",
            "check which credentials the AWS credential chain finds, their IAM permissions "
            "and the bucket policy",
        )
    if status >= 500 or code in _TRANSIENT:
        return StorageError(
            f"{head}: {code} from {store.endpoint} ({store.region}) after retries: {detail}",
            "S3 is failing or throttling; retry later",
            retryable=True,
        )
    return StorageError(f"{head}: {code}: {detail}")


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
