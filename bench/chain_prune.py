"""Deleting one hour's journal chain, as prune does once its base backup goes: the local store,
and S3 (moto in a process of its own) with DeleteObjects batches against one DELETE per file.

    python bench/chain_prune.py                   # 720 segments (an hour at 5 s), 3 rounds
    python bench/chain_prune.py --segments 17280  # a day's segments in one go

There is no target: the figures say what a prune of an hour's chain costs per store.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from common import run_arguments
from moto_s3 import PRIMARY_BUCKET, PRIMARY_REGION, Buckets, MotoServer, fake_aws_variables

from etcdops.config import S3Location
from etcdops.journal.manifest import MANIFEST_SUFFIX, OBJECT_SUFFIX, journal_prefix
from etcdops.journal.store import delete_chain
from etcdops.stores.base import Store
from etcdops.stores.local import LocalStore
from etcdops.stores.s3 import S3Store

SEGMENT_BYTES = 512  # a quiet cluster's 5 s segment; the size does not change a delete's cost


def chain_keys(segments: int) -> tuple[list[str], list[str]]:
    """The manifests and objects of one chain's segments, named as the journal names them."""
    folder = journal_prefix("", "bench") + "20261201T000000Z-000000"
    stems = [f"{folder}/{first:020d}-{first:020d}" for first in range(1, segments + 1)]
    return [s + MANIFEST_SUFFIX for s in stems], [s + OBJECT_SUFFIX for s in stems]


def timed(store: Store, keys: tuple[list[str], list[str]],
          delete: Callable[[Store, list[str], list[str]], None]) -> float:
    """Write the chain's files, then time deleting them; every file must be gone."""
    manifests, objects = keys
    for key in manifests + objects:
        store.put_bytes(key, b"x" * SEGMENT_BYTES)
    started = time.perf_counter()
    delete(store, manifests, objects)
    seconds = time.perf_counter() - started
    left = sum(1 for _ in store.list("bench/"))
    if left:
        raise SystemExit(f"{store.name}: {left} files left after the delete")
    return seconds


def one_request_each(store: Store, manifests: list[str], objects: list[str]) -> None:
    """What prune did before DeleteObjects: one DELETE per file, manifests newest first."""
    for key in sorted(manifests, reverse=True) + objects:
        store.delete(key)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=720, help="segments in the chain")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs of each way")
    args = run_arguments(parser, wait_quiet=None).parse_args(argv)
    keys = chain_keys(args.segments)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="etcdops-chain-prune-") as work:
        root = Path(work)
        os.environ.update(fake_aws_variables(root / "no-aws"))
        moto = MotoServer(root / "moto.log")
        try:
            Buckets(moto.url, root / "no-aws").create()
            s3 = S3Store(S3Location(bucket=PRIMARY_BUCKET, region=PRIMARY_REGION,
                                    endpoint_url=moto.url), "primary")
            local = LocalStore(root / "local", "local")
            ways = {
                "local store": (local, delete_chain),
                "S3, DeleteObjects": (s3, delete_chain),
                "S3, one DELETE per file": (s3, one_request_each),
            }
            results = {name: [timed(store, keys, delete) for _ in range(args.rounds)]
                       for name, (store, delete) in ways.items()}
        finally:
            moto.stop()
    files = 2 * args.segments
    print(f"deleting a chain of {args.segments:,} segments ({files:,} files), "
          f"median of {args.rounds}:")
    for name, seconds in results.items():
        print(f"  {name:<26} {statistics.median(seconds):7.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"segments": args.segments, "seconds": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
