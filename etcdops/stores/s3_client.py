"""The botocore client of an S3 store: timeouts, retries, checksums and signing as [s3] and the
upload path need them."""

from __future__ import annotations

import functools
from typing import Any

from etcdops.config import S3Location


@functools.cache
def _api_models() -> Any:
    """botocore's loader of API models, shared: parsing them again costs ~0.15 s per client."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def make_client(location: S3Location, max_concurrency: int, *, checksums: bool = True) -> Any:
    """An S3 client for location, with connections for max_concurrency parts in flight.

    checksums=False is for servers that refuse S3's checksum headers (x-amz-checksum-*,
    x-amz-sdk-checksum-algorithm, x-amz-checksum-mode): botocore then sends none of its own,
    and signs every body instead (SigV4's SHA-256 of the payload, which the server checks), so
    that what arrives is still what was sent.
    """
    import botocore.session
    from botocore.config import Config

    options: dict[str, Any] = {
        # botocore's own max_attempts counts retries only; the total is what [s3] says
        "retries": {"mode": "standard", "total_max_attempts": location.max_attempts},
        "connect_timeout": location.connect_timeout,
        "read_timeout": location.read_timeout,
        # parts in flight plus the reads and HEADs that may run beside an upload
        "max_pool_connections": max(10, 2 * max_concurrency),
        # GETs check S3's full-object checksum as they end (the SHA-256 of an object sent in
        # one PUT, the CRC32 of a copy); a multipart object has only a composite one, and the
        # manifest's sha256 covers it
        "response_checksum_validation": "when_supported" if checksums else "when_required",
    }
    if not checksums:
        options["request_checksum_calculation"] = "when_required"
    # Every body goes with a checksum header that S3 checks, and the headers are signed: a
    # SigV4 hash of the body as well (botocore's habit over plain http) would be a third pass
    # over every byte uploaded. Without checksum headers, that hash is what protects the body.
    options["s3"] = {"payload_signing_enabled": not checksums}
    if location.endpoint_url:
        # moto and most S3-compatible services have no per-bucket DNS names
        options["s3"]["addressing_style"] = "path"
    # a session per store resolves credentials through the standard AWS chain when the
    # store is made (boto3's default session would keep the first ones it found)
    session = botocore.session.Session()
    session.register_component("data_loader", _api_models())
    return session.create_client(
        "s3",
        region_name=location.region,
        endpoint_url=location.endpoint_url,
        config=Config(**options),
    )
