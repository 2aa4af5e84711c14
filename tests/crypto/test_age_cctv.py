"""The C2SP CCTV age vectors (https://c2sp.org/CCTV/age) against etcdops.crypto.age.

The vectors etcdops can run (those that need only X25519 identities) are copied into data/age-cctv
beside this file, with their README (file format, licence: 0BSD / CC0 / Unlicense). They are part
of the repository so that a fresh clone runs them all; a missing directory is a failure, not a
skip.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest

from etcdops.crypto.age import Decryptor, Identity
from etcdops.errors import CryptoError, IntegrityError

VECTORS = Path(__file__).resolve().parent / "data" / "age-cctv"

KNOWN_KEYS = {
    "expect",
    "payload",
    "file key",
    "identity",
    "passphrase",
    "armored",
    "compressed",
    "comment",
}
EXPECTED_ERROR = {
    "no match": CryptoError,
    "HMAC failure": IntegrityError,
    "header failure": IntegrityError,
    "payload failure": IntegrityError,
}
# Odd-sized slices, so that what the decryptor released before an error is observable.
SLICE = 8191
CHUNK = 64 * 1024
# For payload failures the vector's payload hash covers what the reference implementation
# released before failing. etcdops releases the same, except in these vectors, where it
# withholds one last authenticated chunk: a full chunk it cannot yet prove final (the reference
# releases it, then finds EOF) or a final chunk followed by more data (the reference releases
# it, then finds the extra data). There, what it released must still be whole chunks.
WITHHELD = {
    "stream_no_final_full",
    "stream_no_final_two_chunks_full",
    "stream_trailing_garbage_long",
    "stream_trailing_garbage_short",
    "stream_two_final_chunks",
    "stream_two_final_chunks_full",
    "stream_two_final_chunks_second",
}
MIN_IN_SCOPE = 60


def read_vector(path: Path) -> tuple[dict[str, list[str]], bytes]:
    """The vector's header keys (each may repeat) and its still-compressed age file."""
    head, _, body = path.read_bytes().partition(b"\n\n")
    meta: dict[str, list[str]] = {}
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        meta.setdefault(key, []).append(value)
    return meta, body


def out_of_scope(meta: dict[str, list[str]]) -> str | None:
    """Why etcdops does not run this vector, or None if it should."""
    if set(meta) - KNOWN_KEYS:
        return "unknown header keys (the README says to ignore such vectors)"
    if meta.get("armored") == ["yes"]:
        return "ASCII armor is not supported"
    if "passphrase" in meta:
        return "passphrase (scrypt) files are not supported"
    if any(not key.startswith("AGE-SECRET-KEY-1") for key in meta.get("identity", [])):
        return "non-X25519 (e.g. post-quantum) identities are not supported"
    return None


ALL_VECTORS = sorted(
    p for p in VECTORS.glob("*") if p.is_file() and p.name != "README.md"
)
IN_SCOPE = [p for p in ALL_VECTORS if out_of_scope(read_vector(p)[0]) is None]


def test_filter_selects_the_x25519_vectors() -> None:
    assert VECTORS.is_dir(), f"the CCTV vectors are missing from {VECTORS}"
    assert len(IN_SCOPE) >= MIN_IN_SCOPE, [p.name for p in IN_SCOPE]
    assert {p.name for p in IN_SCOPE} >= WITHHELD
    # what is left out is left out for a stated reason: armor, passphrases, post-quantum keys
    reasons = {out_of_scope(read_vector(p)[0]) for p in ALL_VECTORS if p not in IN_SCOPE}
    assert None not in reasons
    assert not any(r.startswith("unknown header keys") for r in reasons), reasons


@pytest.mark.parametrize("path", IN_SCOPE, ids=[p.name for p in IN_SCOPE])
def test_vector(path: Path) -> None:
    meta, body = read_vector(path)
    (expect,) = meta["expect"]
    if meta.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    # A vector without identities fails before any key is tried; the decryptor needs one.
    identities = [Identity.parse(key) for key in meta.get("identity", [])] or [Identity.generate()]

    decryptor = Decryptor(identities)
    released = []
    error: Exception | None = None
    try:
        for start in range(0, len(body), SLICE):
            released.append(decryptor.update(body[start : start + SLICE]))
        released.append(decryptor.finish())
    except (CryptoError, IntegrityError) as e:
        error = e
    plaintext = b"".join(released)

    if expect == "success":
        assert error is None
    else:
        assert type(error) is EXPECTED_ERROR[expect], f"expected {expect}, got {error!r}"
    if "payload" in meta:
        matches = hashlib.sha256(plaintext).hexdigest() == meta["payload"][0]
        assert matches != (path.name in WITHHELD)
        assert len(plaintext) % CHUNK == 0 or error is None
