"""botocore's failures in etcdops terms: one line naming the store, the bucket and what was
being done, and a hint that says what to check.

A refusal is not a fault: a server that does not implement a call (NotImplemented, 501, as
S3-compatible servers answer for what they lack) or credentials that may not make it
(AccessDenied) give the same answer on every retry, so neither is retryable, and the hint
names the S3 call and the IAM permission it needs. Where the call serves an optional feature,
the store raises FeatureUnavailable instead, and its callers go on without that feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etcdops.errors import ConfigError, EtcdopsError, NotFoundError, StorageError

if TYPE_CHECKING:
    from etcdops.stores.s3 import S3Store

_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "AllAccessDisabled"}
# what S3 and S3-compatible servers (MinIO, Ceph RGW, Garage, R2, s3proxy, ...) answer for a
# call or a header they do not implement; HEAD has no body, so only its status says so
_NOT_IMPLEMENTED = {"NotImplemented", "XNotImplemented", "NotSupported", "501",
                    "MethodNotAllowed", "405"}
# how servers refuse a header they do not know: R2 "NotImplemented: Header 'x-amz-checksum-crc32'
# with value ... not implemented", B2 "InvalidArgument: Unsupported header 'x-amz-checksum-sha256'
# received for this API call", s3proxy NotImplemented for an unknown header
_CHECKSUM_REFUSALS = {"NotImplemented", "XNotImplemented", "NotSupported", "InvalidArgument"}
_TRANSIENT = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
              "ThrottlingException", "NoSuchUpload"}

# The IAM permission each S3 call etcdops makes needs (botocore's operation names): a refusal's
# hint names it. HEAD needs s3:GetObject; both copies need s3:GetObject on the source too.
PERMISSIONS = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "CopyObject": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "CreateBucket": "s3:CreateBucket",
}
_KMS = {"PutObject": "kms:GenerateDataKey", "CreateMultipartUpload": "kms:GenerateDataKey",
        "CopyObject": "kms:GenerateDataKey and kms:Decrypt",
        "UploadPartCopy": "kms:GenerateDataKey and kms:Decrypt",
        "UploadPart": "kms:GenerateDataKey", "CompleteMultipartUpload": "kms:GenerateDataKey",
        "GetObject": "kms:Decrypt"}


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
    code, status, detail = _answer(exc)
    operation = exc.operation_name
    if code in ("404", "NoSuchKey", "NotFound"):
        return NotFoundError(f"{head}: no such object", "run 'etcdops snapshot list'")
    if code == "NoSuchBucket":
        return StorageError(
            f"{store.name}: bucket {store.bucket} does not exist in {store.region} "
            f"(cannot {action} {where})",
            f"check {store.section}.bucket and {store.section}.region, or create the bucket",
        )
    if code in _NOT_IMPLEMENTED or status in (405, 501):
        return StorageError(
            f"{head}: the server at {store.endpoint} refuses {operation} as not implemented "
            f"({code}: {detail})",
            f"etcdops needs {operation} for this; use an S3 service that implements it (see "
            "'What etcdops asks of S3' in the README); retrying will not help",
        )
    if code in _DENIED or status == 403:
        return StorageError(
            f"{head}: access denied ({code}: {detail})", denied_hint(store, operation)
        )
    if status >= 500 or code in _TRANSIENT:
        return StorageError(
            f"{head}: {code} from {store.endpoint} ({store.region}) after retries: {detail}",
            "S3 is failing or throttling; retry later",
            retryable=True,
        )
    return StorageError(f"{head}: {code}: {detail}")


def refusal(exc: BaseException | None) -> tuple[bool, str] | None:
    """When S3 refused a call for good (the same answer on every retry): whether as not
    implemented (False: access denied), and S3's answer as "Code: message"; None for any other
    failure."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return None
    code, status, detail = _answer(exc)
    if code in _NOT_IMPLEMENTED or status in (405, 501):
        return True, f"{code}: {detail}"
    if code in _DENIED or status == 403:
        return False, f"{code}: {detail}"
    return None


def checksums_refused(exc: BaseException) -> str | None:
    """S3's answer as "Code: message" when a server refused a request for the checksum headers
    it carried (an S3-compatible server without S3's flexible checksums); None otherwise.

    A checksum that does not match (BadDigest, InvalidDigest, a type mismatch) is damage or a
    mistake, never a refusal: it must fail the request, not turn checksums off.
    """
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return None
    code, _, detail = _answer(exc)
    # the header refused is in the message, or in the Header or ArgumentName S3 sends beside it
    error = exc.response.get("Error", {})
    named = " ".join(str(error.get(name, "")) for name in ("Message", "Header", "ArgumentName"))
    if code not in _CHECKSUM_REFUSALS or "checksum" not in named.lower():
        return None
    return f"{code}: {detail}"


def batch_delete_refused(exc: BaseException) -> str | None:
    """S3's answer as "Code: message" when a server refused a DeleteObjects request as such:
    not implemented, or any other 4xx but a denial or a missing bucket (servers that want
    Content-MD5 answer MissingContentMD5 or InvalidRequest; others refuse the checksum header
    S3 requires on it). None for what one DELETE per key would meet too."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return None
    code, status, detail = _answer(exc)
    if code in _DENIED or code == "NoSuchBucket" or status == 403:
        return None
    # a 4xx that says "later" (RequestTimeout, OperationAborted, too many requests) is no
    # refusal: this prune fails and the next one batches again
    if code in _TRANSIENT or code == "OperationAborted" or status in (408, 409, 429):
        return None
    if code in _NOT_IMPLEMENTED or status in (405, 501) or 400 <= status < 500:
        return f"{code}: {detail}"
    return None


def denied_hint(store: S3Store, operation: str) -> str:
    """What to check when S3 denies a call: the permission it needs, on what."""
    permission = PERMISSIONS.get(operation)
    if permission is None:
        needs = "their IAM permissions"
    else:
        bucket_level = permission in ("s3:ListBucket", "s3:ListBucketMultipartUploads")
        resource = f"arn:aws:s3:::{store.bucket}" + ("" if bucket_level else f"/{store.prefix}*")
        needs = f"that they are allowed {permission} on {resource}"
        if store.sse == "aws:kms" and operation in _KMS:
            needs += f", and {_KMS[operation]} on the KMS key ({store.section}.kms_key_id)"
        if operation == "HeadObject":
            needs += " (without s3:ListBucket, S3 answers 403 for a missing object too)"
    return (f"check which credentials the AWS credential chain finds, {needs}, and the bucket "
            "policy")


def _answer(exc: object) -> tuple[str, int, str]:
    """S3's error code, HTTP status and message of a ClientError."""
    response = getattr(exc, "response", {})
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    detail = _one_line(response.get("Error", {}).get("Message") or code or exc)
    return code, status, detail


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
