"""Deleting many objects of an S3 store: DeleteObjects, DELETE_BATCH keys to a request, and
one DELETE per key on a server that refuses it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from etcdops.errors import StorageError
from etcdops.stores.s3_errors import batch_delete_refused

if TYPE_CHECKING:
    from etcdops.stores.s3 import S3Store

DELETE_BATCH = 1000  # the most keys S3 takes in one DeleteObjects request
log = logging.getLogger("etcdops.stores.s3")


def delete_in_batches(store: S3Store, client: Any, keys: Sequence[str]) -> None:
    """Remove objects from store (client: its botocore client). The keys S3's answer names as
    not deleted (it answers 200 and names each) get a DELETE of their own, with botocore's
    retries. A server that refuses DeleteObjects itself (not implemented, or the checksum or
    Content-MD5 header it wants) gets one DELETE per key from then on, said once in a
    warning."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"s3://{store.bucket}/{store.prefix} ({store.region})"
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start:start + DELETE_BATCH]
        if not store.batch_deletes:
            for key in batch:
                store.delete(key)
            continue
        objects = [{"Key": store.full_key(key)} for key in batch]
        try:
            answer = client.delete_objects(
                Bucket=store.bucket, Delete={"Objects": objects, "Quiet": True})
        except ClientError as exc:
            why = batch_delete_refused(exc)
            if why is None:
                raise store.error(exc, f"delete {len(batch)} objects in", where) from exc
            store.batch_deletes = False
            log.warning("%s: the server at %s refuses DeleteObjects (%s): objects are deleted "
                        "one request each from now on", store.name, store.endpoint, why)
            for key in batch:
                store.delete(key)
            continue
        except BotoCoreError as exc:
            raise store.error(exc, f"delete {len(batch)} objects in", where) from exc
        asked = dict(zip((o["Key"] for o in objects), batch, strict=True))
        for kept in answer.get("Errors", []):
            key = asked.get(kept.get("Key", ""))
            if key is None:  # never asked for: nothing of ours to delete again
                raise StorageError(
                    f"{store.name}: DeleteObjects in {where} answered for key "
                    f"{kept.get('Key')!r}, which was not asked for ({kept.get('Code')})",
                    "check the S3 endpoint: it does not answer as S3 does")
            store.delete(key)
