"""etcdops.crypto.age: interop with rage (pyrage), damage detection, streaming, keys."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import re
import tracemalloc
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrage import x25519

from etcdops.crypto import bech32
from etcdops.crypto.age import (
    AGE_MAGIC,
    Decryptor,
    Encryptor,
    Identity,
    Recipient,
    decrypt_file,
    encrypt_file,
    identity_file_text,
    load_identities,
    parse_recipients,
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
    "garbage", [b"\x00", os.urandom(17), os.urandom(ENC_CHUNK), os.urandom(CHUNK)]
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


# ---- keys -----------------------------------------------------------------------------------


def test_keys_round_trip_and_agree_with_rage() -> None:
    identity = Identity.generate()
    text = str(identity)
    assert text.startswith("AGE-SECRET-KEY-1") and len(text) == 74
    assert str(Identity.parse(text)) == text
    recipient = identity.recipient()
    assert str(recipient).startswith("age1") and len(str(recipient)) == 62
    assert Recipient.parse(str(recipient)) == recipient
    assert str(recipient) == str(as_pyrage(identity).to_public())
    rage_identity = x25519.Identity.generate()
    assert str(Identity.parse(str(rage_identity)).recipient()) == str(rage_identity.to_public())


def test_fingerprint_is_sha256_of_the_public_key() -> None:
    recipient = Identity.generate().recipient()
    _, raw = bech32.decode(str(recipient))
    assert recipient.fingerprint() == hashlib.sha256(raw).hexdigest()[:16]
    assert Recipient.parse(str(recipient)).fingerprint() == recipient.fingerprint()


def test_identity_repr_hides_the_secret() -> None:
    identity = Identity.generate()
    secret = str(identity)
    shown = repr(identity) + repr([identity]) + f"{identity!r}"
    assert secret not in shown and secret.lower() not in shown
    assert secret[16:40] not in shown.upper()
    assert str(identity.recipient()) in repr(identity)


def other_hrp(hrp: str, size: int = 32) -> str:
    return bech32.encode(hrp, os.urandom(size))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(other_hrp("age1pq"), id="other-type"),
        pytest.param(other_hrp("agf"), id="wrong-hrp"),
        pytest.param(other_hrp("age", 31), id="short-key"),
        pytest.param("age1" + "q" * 58, id="bad-checksum"),
        pytest.param("", id="empty"),
        pytest.param("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM", id="ssh-key"),
    ],
)
def test_recipient_rejects(text: str) -> None:
    with pytest.raises(CryptoError) as caught:
        Recipient.parse(text)
    assert text[:24] in caught.value.message
    assert caught.value.hint


def test_recipient_rejects_bad_checksum_and_mixed_case() -> None:
    good = str(Identity.generate().recipient())
    typo = good[:-1] + ("q" if good[-1] != "q" else "p")
    for bad in [typo, good[:10] + good[10:].upper(), good.upper(), good[:-3]]:
        with pytest.raises(CryptoError):
            Recipient.parse(bad)


def test_recipient_refuses_a_secret_key_without_echoing_it() -> None:
    secret = str(Identity.generate())
    with pytest.raises(CryptoError) as caught:
        Recipient.parse(secret)
    assert secret[15:] not in str(caught.value)
    assert "secret key" in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(other_hrp("AGE-SECRET-KEY-PQ-").upper(), id="other-type"),
        pytest.param(other_hrp("age-secret-key-"), id="lowercase"),
        pytest.param(other_hrp("AGE-SECRET-KEY-", 16).upper(), id="short-key"),
        pytest.param(str(Identity.generate().recipient()), id="a-recipient"),
    ],
)
def test_identity_rejects(text: str) -> None:
    with pytest.raises(CryptoError) as caught:
        Identity.parse(text)
    assert text[16:] not in str(caught.value)


def test_identity_bad_checksum_is_not_echoed() -> None:
    secret = str(Identity.generate())
    typo = secret[:30] + ("Q" if secret[30] != "Q" else "P") + secret[31:]
    with pytest.raises(CryptoError, match="checksum") as caught:
        Identity.parse(typo)
    assert typo[16:] not in str(caught.value) and typo[20:40] not in str(caught.value)


def test_load_identities_reads_age_keygen_files(tmp_path: Path) -> None:
    first, second = Identity.generate(), Identity.generate()
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    text = identity_file_text(first, created)
    assert text == (
        f"# created: 2024-05-06T07:08:09Z\n# public key: {first.recipient()}\n{first}\n"
    )
    local = identity_file_text(first, datetime(2024, 5, 6, 7, 8, 9))
    assert re.match(r"# created: 2024-05-06T07:08:09(Z|[+-]\d\d:\d\d)\n", local)
    path = tmp_path / "identity.txt"
    path.write_text(text + "\n   \n# a second key, indented\n  " + str(second) + "  \n")
    loaded = load_identities(path)
    assert [str(i) for i in loaded] == [str(first), str(second)]


def test_identity_file_is_readable_by_rage() -> None:
    identity = Identity.generate()
    text = identity_file_text(identity, datetime.now(UTC))
    secret_line = [line for line in text.splitlines() if not line.startswith("#")]
    assert [str(x25519.Identity.from_str(line).to_public()) for line in secret_line] == [
        str(identity.recipient())
    ]


def test_load_identities_names_the_bad_line_without_echoing_it(tmp_path: Path) -> None:
    good = str(Identity.generate())
    bad = good[:40] + ("Q" if good[40] != "Q" else "P") + good[41:]
    path = tmp_path / "identity.txt"
    path.write_text(f"# created: today\n# public key: age1...\n{good}\n{bad}\n")
    with pytest.raises(CryptoError) as caught:
        load_identities(path)
    message = str(caught.value)
    assert str(path) in message and "line 4" in message
    assert bad[15:] not in message and bad[20:36] not in message


@pytest.mark.parametrize("content", [None, "", "# public key: age1...\n\n"])
def test_load_identities_needs_a_readable_file_with_a_key(tmp_path: Path, content) -> None:
    path = tmp_path / "identity.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CryptoError, match=re.escape(str(path))):
        load_identities(path)


def test_parse_recipients_skips_comments_and_names_the_source() -> None:
    one, two = Identity.generate().recipient(), Identity.generate().recipient()
    lines = ["# ops team", "", f"  {one}  ", "# dr site", str(two)]
    assert parse_recipients(lines, "recipients.txt") == [one, two]
    assert parse_recipients(["# nothing"], "x") == []
    with pytest.raises(CryptoError, match=r"config recipients line 2: .*age1bogus"):
        parse_recipients([str(one), "age1bogus"], "config recipients")


@pytest.mark.parametrize("key", [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx2bGBnn0sxvj0qB+rI8Ki8a5y0B0q8+W6c7xS3jOq2 ops@host",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 ops@host",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI ops@host",
])
def test_an_ssh_recipient_is_refused_as_ssh_with_the_way_to_an_age_one(key: str) -> None:
    with pytest.raises(CryptoError, match="SSH recipients are not supported") as caught:
        Recipient.parse(key)
    assert key.split()[0] in caught.value.message
    assert "age1" in caught.value.hint and "mixed" not in str(caught.value)


def test_configured_recipients_name_the_files_line_and_the_lists_entry(tmp_path: Path) -> None:
    from etcdops.config import EncryptionConfig
    from etcdops.crypto.keys import configured_recipients

    good = str(Identity.generate().recipient())
    listed = EncryptionConfig(recipients=(good, "age1bogus"))
    with pytest.raises(CryptoError, match=r"^\[encryption\] recipients entry 2: "):
        configured_recipients(listed)
    path = tmp_path / "recipients.txt"
    path.write_text(f"# ops\n\n# dr site\n{good}\n\n# new key\nage1bogus\n")
    with pytest.raises(CryptoError, match=rf"^{re.escape(str(path))} line 7: .*age1bogus"):
        configured_recipients(EncryptionConfig(recipients_file=path))


# BIP-173's own vectors, minus its 90-character limit which age does not have.
BIP173_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
BIP173_INVALID = [
    "\x201nwldj5",
    "\x7f1axkwrx",
    "\x801eym55h",
    "pzry9x0s0muk",
    "1pzry9x0s0muk",
    "x1b4n0q5v",
    "li1dgmt3",
    "de1lg7wt\xff",
    "A1G7SGD8",
    "10a06t8",
    "1qzzfhee",
    "a12UEL5L",
]


@pytest.mark.parametrize("text", BIP173_VALID)
def test_bech32_valid(text: str) -> None:
    hrp, data = bech32.decode(text)
    assert bech32.encode(hrp, data) == text.lower()


@pytest.mark.parametrize("text", BIP173_INVALID)
def test_bech32_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        bech32.decode(text)
