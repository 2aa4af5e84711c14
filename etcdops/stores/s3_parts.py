"""Parts and checksums as S3 defines them: the limits of a multipart upload, and the checksums
that S3 checks as a body arrives and keeps with the object."""

from __future__ import annotations

import base64
import hashlib
import math
import zlib
from typing import NamedTuple

MiB = 1024**2
MIN_PART_SIZE = 5 * MiB  # S3 rejects smaller parts, except the last one
MAX_PARTS = 10_000


def choose_part_size(expected_size: int | None, minimum: int = MIN_PART_SIZE) -> int:
    """A part size that keeps an object of about expected_size well under S3's 10,000 parts."""
    if not expected_size:
        return minimum
    # 5% headroom for a stream that comes out a little bigger than announced, and 9,000 of the
    # 10,000 parts, so that the estimate can be off without the upload running out of parts
    wanted = math.ceil(expected_size * 1.05 / 9000)
    return max(minimum, math.ceil(wanted / MiB) * MiB)


class Checksum(NamedTuple):
    """A checksum as S3 keeps it: the algorithm's name and the base64 value ("-N" when it is a
    multipart object's composite of N parts)."""

    algorithm: str
    value: str

def b64(digest: bytes) -> str:
    """A digest as S3 spells it in checksum headers: base64."""
    return base64.b64encode(digest).decode("ascii")

def sha256_checksum(data: bytes | bytearray | memoryview) -> str:
    """S3's ChecksumSHA256 of data."""
    return b64(hashlib.sha256(data).digest())

def crc32_digest(data: bytes | bytearray | memoryview) -> bytes:
    """The CRC32 S3 computes (zlib's, big-endian), as 4 bytes."""
    return zlib.crc32(data).to_bytes(4, "big")

def composite_crc32(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: the CRC32 of the parts' CRC32s, with the count."""
    return f"{b64(crc32_digest(b''.join(part_digests)))}-{len(part_digests)}"
