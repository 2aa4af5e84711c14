"""A server-side copy by byte ranges (UploadPartCopy), for objects beyond CopyObject's 5 GB."""

from __future__ import annotations

import math
from concurrent.futures import wait
from typing import TYPE_CHECKING, Any

from etcdops.stores.s3_parts import choose_part_size
from etcdops.stores.s3_requests import RequestThreads

if TYPE_CHECKING:
    from etcdops.stores.s3 import S3Store


def copy_by_ranges(store: S3Store, client: Any, copy_source: dict[str, str], key: str,
                   size: int) -> None:
    """UploadPartCopy by byte ranges into store (client: its botocore client), for objects
    beyond CopyObject's 5 GB limit; an upload that fails is aborted once its parts landed."""
    part_size = choose_part_size(size, store.copy_part_size)
    full_key = store.full_key(key)
    upload_id = client.create_multipart_upload(
        Bucket=store.bucket, Key=full_key, **store.write_args
    )["UploadId"]

    def copy_part(number: int) -> dict[str, Any]:
        start = (number - 1) * part_size
        response = client.upload_part_copy(
            Bucket=store.bucket, Key=full_key, UploadId=upload_id, PartNumber=number,
            CopySource=copy_source,
            CopySourceRange=f"bytes={start}-{min(start + part_size, size) - 1}",
        )
        return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}

    requests = RequestThreads(store.max_concurrency, "s3-copy")
    parts = [requests.submit(copy_part, n) for n in range(1, math.ceil(size / part_size) + 1)]
    try:
        client.complete_multipart_upload(
            Bucket=store.bucket, Key=full_key, UploadId=upload_id,
            MultipartUpload={"Parts": [part.result() for part in parts]},
        )
    except BaseException:
        # parts still in flight would land after the abort and be orphaned: wait for them
        for part in parts:
            part.cancel()
        wait(parts, timeout=store.abort_wait)
        store.abort_upload(key, upload_id)
        raise
    finally:
        requests.close()
