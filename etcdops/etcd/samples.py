"""The revision samples etcdops keeps in etcd: the revision etcd was at, at a wall-clock time.

etcd keeps no timestamps. The compaction job (maintenance/compaction.py) writes one sample per
run under `[compaction] prefix` and compacts by them; a restore reads the ones a snapshot holds
to tell how fast the cluster wrote (restore/revision.py). This is the one home of their format:
each sample is its own key (time, then host, in the name, so that samples list oldest first and
nodes never overwrite each other's) holding JSON {"time": seconds since the epoch, "revision"}.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from etcdops.etcd.kv import KeyValue

log = logging.getLogger("etcdops.etcd.samples")


@dataclass(frozen=True)
class Sample:
    """The revision etcd was at, at a wall-clock time (seconds since the epoch)."""

    time: float
    revision: int
    key: bytes | None  # None: taken in memory because etcd refused the write (NOSPACE)


def sample_key(prefix: bytes, now: float, host: str) -> bytes:
    """The key of a sample taken at `now` by `host`."""
    return prefix + f"{int(now * 1000):015d}-{host}".encode()


def sample_value(sample: Sample) -> bytes:
    """What a sample's key holds."""
    return json.dumps({"time": sample.time, "revision": sample.revision}).encode()


def parse_sample(kv: KeyValue) -> Sample | None:
    """A stored sample; None (and a warning) for a key under the prefix that is not one."""
    try:
        doc = json.loads(kv.value)
        return Sample(float(doc["time"]), int(doc["revision"]), kv.key)
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring %r: not an etcdops compaction sample", kv.key)
        return None
