"""etcdops.crypto.age: interop with rage (pyrage), damage detection, streaming."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import re
import tracemalloc
from collections.abc import Iterable, Iterator

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrage import x25519

from etcdops.crypto.age import (
    AGE_MAGIC,
    Decryptor,
    Encryptor,
    Identity,
    decrypt_file,
    encrypt_file,
)
from etcdops.errors import CryptoError, IntegrityError

CHUNK = 64 * 1024
ENC_CHUNK = CHUNK + 16
SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536, 1_000_003]


# ---- helpers ------------------------------------------------------------------------------


def encrypt(data: bytes, *identities: Identity) -> bytes:
    encryptor = Encryptor([i.recipient() for i in identities])
    return encryptor.update(data) + encryptor.finish()


def decrypt(data: bytes, *identities: Identity) -> bytes:
    decryptor = Decryptor(list(identities))
    return decryptor.update(data) + decryptor.finish()


def decrypt_in_slices(data: bytes, sizes: Iterable[int], *identities: Identity) -> bytes:
    decryptor = Decryptor(list(identities))
    out = [decryptor.update(piece) for piece in slices(data, sizes)]
    return b"".join(out) + decryptor.finish()


def slices(data: bytes, sizes: Iterable[int]) -> Iterator[bytes]:
    pos = 0
    for size in sizes:
        if pos >= len(data):
            return
        yield data[pos : pos + size]
        pos += size
    yield data[pos:]


def payload_offset(ciphertext: bytes) -> int:
    """Where the payload (nonce and chunks) starts: just past the '--- <MAC>' line."""
    return ciphertext.index(b"\n", ciphertext.index(b"\n--- ") + 1) + 1


def as_pyrage(identity: Identity) -> x25519.Identity:
    return x25519.Identity.from_str(str(identity))


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def ciphertext(identity: Identity) -> bytes:
    """Three chunks: two full ones and a short final one."""
    return encrypt(random.Random(1).randbytes(2 * CHUNK + 1000), identity)


# ---- interop with rage ----------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_rage_decrypts_what_we_encrypt(identity: Identity, size: int) -> None:
    data = os.urandom(size)
    assert pyrage.decrypt(encrypt(data, identity), [as_pyrage(identity)]) == data


@pytest.mark.parametrize("size", SIZES)
def test_we_decrypt_what_rage_encrypts(identity: Identity, size: int) -> None:
    data = os.urandom(size)
    assert decrypt(pyrage.encrypt(data, [as_pyrage(identity).to_public()]), identity) == data


@pytest.mark.parametrize("size", SIZES)
def test_payload_has_exactly_one_final_chunk(identity: Identity, size: int) -> None:
    ciphertext = encrypt(os.urandom(size), identity)
    chunks = max(1, -(-size // CHUNK))  # ceil, but an empty file still has one (empty) chunk
    assert len(ciphertext) - payload_offset(ciphertext) == 16 + size + 16 * chunks


def test_multi_recipient_files_both_ways() -> None:
    ours = [Identity.generate() for _ in range(3)]
    data = os.urandom(100_000)
    ciphertext = encrypt(data, *ours)
    assert ciphertext.count(b"\n-> X25519 ") == 3
    for identity in ours:
        assert pyrage.decrypt(ciphertext, [as_pyrage(identity)]) == data
        assert decrypt(ciphertext, identity) == data

    from_rage = pyrage.encrypt(data, [as_pyrage(i).to_public() for i in ours])
    for identity in ours:
        assert decrypt(from_rage, identity) == data
    assert decrypt(from_rage, Identity.generate(), ours[2]) == data


def test_file_helpers_round_trip_through_rage(identity: Identity) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB reads
    encrypted = io.BytesIO()
    encrypt_file(io.BytesIO(data), encrypted, [identity.recipient()])
    assert pyrage.decrypt(encrypted.getvalue(), [as_pyrage(identity)]) == data

    decrypted = io.BytesIO()
    from_rage = pyrage.encrypt(data, [as_pyrage(identity).to_public()])
    decrypt_file(io.BytesIO(from_rage), decrypted, [identity])
    assert decrypted.getvalue() == data


def test_header_is_age_v1(identity: Identity) -> None:
    ciphertext = encrypt(b"x", identity)
    header = ciphertext[: payload_offset(ciphertext)]
    assert re.fullmatch(
        rb"age-encryption\.org/v1\n-> X25519 [A-Za-z0-9+/]{43}\n[A-Za-z0-9+/]{43}\n"
        rb"--- [A-Za-z0-9+/]{43}\n",
        header,
    )
    assert ciphertext.startswith(AGE_MAGIC)


# ---- wrong keys and damage ------------------------------------------------------------------


def test_wrong_identity_is_a_crypto_error(identity: Identity, ciphertext: bytes) -> None:
    stranger = Identity.generate()
    with pytest.raises(CryptoError) as caught:
        decrypt(ciphertext, stranger)
    assert not isinstance(caught.value, IntegrityError)
    assert str(stranger.recipient())[:16] in caught.value.message
    assert str(stranger) not in str(caught.value)
    assert caught.value.hint


def test_file_for_other_key_types_says_so(identity: Identity) -> None:
    with pytest.raises(CryptoError, match="no X25519 recipient.*scrypt"):
        decrypt(pyrage.passphrase.encrypt(b"secret", "hunter2"), identity)


def test_header_without_end_is_refused_early(identity: Identity) -> None:
    decryptor = Decryptor([identity])
    decryptor.update(AGE_MAGIC + b"-> X25519 ")
    with pytest.raises(IntegrityError, match="longer than 1 MiB"):
        decryptor.update(b"A" * (2 * 1024 * 1024))


def test_huge_first_slice(identity: Identity) -> None:
    data = os.urandom(5 * 1024 * 1024 + 3)
    decryptor = Decryptor([identity])
    assert decryptor.update(encrypt(data, identity)) + decryptor.finish() == data


def test_no_keys_at_all_are_crypto_errors() -> None:
    with pytest.raises(CryptoError, match="no recipients"):
        Encryptor([])
    with pytest.raises(CryptoError, match="no identities"):
        Decryptor([])


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda ct: 0, id="magic"),
        pytest.param(lambda ct: len(AGE_MAGIC) - 3, id="version"),
        pytest.param(lambda ct: ct.index(b"\n--- ") + 6, id="mac"),
        pytest.param(lambda ct: ct.index(b"\n--- ") + 3, id="mac-dashes"),
        pytest.param(lambda ct: payload_offset(ct) - 1, id="mac-newline"),
    ],
)
def test_flipped_header_byte_is_an_integrity_error(identity: Identity, ciphertext: bytes, where):
    with pytest.raises(IntegrityError):
        decrypt(flip(ciphertext, where(ciphertext)), identity)


def test_flipped_wrapped_key_reads_as_no_match(identity: Identity, ciphertext: bytes) -> None:
    # The spec makes an unwrappable stanza "no match": nothing tells damage from a wrong key.
    body_line = ciphertext.index(b"\n", len(AGE_MAGIC)) + 1
    damaged = bytearray(ciphertext)
    # another valid base64 letter, so that the body still parses and only the unwrap fails
    damaged[body_line + 5] = ord("A") if damaged[body_line + 5] != ord("A") else ord("B")
    with pytest.raises(CryptoError):
        decrypt(bytes(damaged), identity)


@pytest.mark.parametrize("offset", [0, 15, 16, 100, ENC_CHUNK + 16, -17, -1])
def test_flipped_payload_byte_is_an_integrity_error(
    identity: Identity, ciphertext: bytes, offset: int
) -> None:
    start = payload_offset(ciphertext)  # the nonce comes first
    position = start + offset if offset >= 0 else len(ciphertext) + offset
    with pytest.raises(IntegrityError):
        decrypt(flip(ciphertext, position), identity)


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda ct: 0, id="empty"),
        pytest.param(lambda ct: 10, id="in-magic"),
        pytest.param(lambda ct: len(AGE_MAGIC) + 20, id="in-stanza"),
        pytest.param(lambda ct: payload_offset(ct) - 2, id="in-mac"),
        pytest.param(lambda ct: payload_offset(ct), id="no-nonce"),
        pytest.param(lambda ct: payload_offset(ct) + 8, id="in-nonce"),
        pytest.param(lambda ct: payload_offset(ct) + 16, id="no-chunks"),
        pytest.param(lambda ct: payload_offset(ct) + 16 + 15, id="in-first-tag"),
        pytest.param(lambda ct: payload_offset(ct) + 16 + 1000, id="in-first-chunk"),
        pytest.param(lambda ct: payload_offset(ct) + 16 + ENC_CHUNK, id="after-first-chunk"),
        pytest.param(lambda ct: payload_offset(ct) + 16 + 2 * ENC_CHUNK, id="after-second"),
        pytest.param(lambda ct: len(ct) - 1, id="last-byte"),
    ],
)
def test_truncation_is_an_integrity_error(identity: Identity, ciphertext: bytes, end) -> None:
    with pytest.raises(IntegrityError):
        decrypt(ciphertext[: end(ciphertext)], identity)


def test_truncating_a_full_final_chunk_file_is_caught(identity: Identity) -> None:
    # Files of whole chunks end in a full final chunk; cutting it off leaves a valid-looking
    # stream of full chunks, which only the missing final flag betrays.
    ciphertext = encrypt(os.urandom(3 * CHUNK), identity)
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(ciphertext[: len(ciphertext) - ENC_CHUNK], identity)


@pytest.mark.parametrize(
    "garbage", [b"\x00", os.urandom(17), os.urandom(ENC_CHUNK), os.urandom(CHUNK)],
    ids=["one-byte", "17-bytes", "a-chunk-with-tag", "a-chunk"],
)
def test_appended_data_is_an_integrity_error(
    identity: Identity, ciphertext: bytes, garbage: bytes
) -> None:
    with pytest.raises(IntegrityError):
        decrypt(ciphertext + garbage, identity)


def test_appended_data_after_a_full_final_chunk(identity: Identity) -> None:
    ciphertext = encrypt(os.urandom(CHUNK), identity)
    with pytest.raises(IntegrityError, match="after its final chunk"):
        decrypt(ciphertext + b"x", identity)


def test_not_an_age_file(identity: Identity) -> None:
    decryptor = Decryptor([identity])
    with pytest.raises(IntegrityError, match="not an age file"):
        decryptor.update(b"\x28\xb5\x2f\xfd")  # a zstd frame, sniffed at the first bytes


# ---- streaming ------------------------------------------------------------------------------


def test_one_byte_at_a_time(identity: Identity, ciphertext: bytes) -> None:
    expected = decrypt(ciphertext, identity)
    assert decrypt_in_slices(ciphertext, itertools.repeat(1), identity) == expected


@pytest.mark.parametrize("sizes", [[7, 4096, 65551, 65552, 65553, 3], [ENC_CHUNK] * 10, [999_999]])
def test_odd_slices(identity: Identity, ciphertext: bytes, sizes: list[int]) -> None:
    assert decrypt_in_slices(ciphertext, sizes, identity) == decrypt(ciphertext, identity)


def test_decryptor_releases_all_but_the_undecided_last_chunk(identity: Identity) -> None:
    data = os.urandom(3 * CHUNK)
    ciphertext = encrypt(data, identity)
    decryptor = Decryptor([identity])
    first_two = payload_offset(ciphertext) + 16 + 2 * ENC_CHUNK
    # Both full chunks are in, but the second might be the final one: only the first is out.
    assert decryptor.update(ciphertext[:first_two]) == data[:CHUNK]
    assert decryptor.update(ciphertext[first_two : first_two + 1]) == data[CHUNK : 2 * CHUNK]
    assert decryptor.update(ciphertext[first_two + 1 :]) == b""
    assert decryptor.finish() == data[2 * CHUNK :]


def test_encryptor_slicing_does_not_matter(identity: Identity) -> None:
    data = os.urandom(5 * CHUNK + 3)
    encryptor = Encryptor([identity.recipient()])
    pieces = [encryptor.update(p) for p in slices(data, [1, CHUNK - 1, 1, 2 * CHUNK, 5])]
    ciphertext = b"".join(pieces) + encryptor.finish()
    assert pyrage.decrypt(ciphertext, [as_pyrage(identity)]) == data


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(0, 4 * CHUNK + 100) | st.sampled_from([CHUNK - 1, CHUNK, CHUNK + 1]),
    seed=st.integers(0, 2**32),
    plain_slices=st.lists(st.integers(1, 3 * CHUNK), max_size=8),
    cipher_slices=st.lists(st.integers(1, 3 * CHUNK), max_size=8),
)
def test_round_trip_property(
    size: int, seed: int, plain_slices: list[int], cipher_slices: list[int]
) -> None:
    identity = Identity.generate()
    data = random.Random(seed).randbytes(size)
    encryptor = Encryptor([identity.recipient()])
    pieces = [encryptor.update(piece) for piece in slices(data, plain_slices)]
    ciphertext = b"".join(pieces) + encryptor.finish()
    assert decrypt_in_slices(ciphertext, cipher_slices, identity) == data


def test_memory_stays_flat_over_64_mib(identity: Identity) -> None:
    block = os.urandom(1024 * 1024)
    encryptor = Encryptor([identity.recipient()])
    decryptor = Decryptor([identity])
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        for _ in range(64):
            digest.update(decryptor.update(encryptor.update(block)))
        digest.update(decryptor.update(encryptor.finish()))
        digest.update(decryptor.finish())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.digest() == hashlib.sha256(block * 64).digest()
    assert peak < 6 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
