"""etcdops.crypto.x25519: age keys as text and in key files, agreeing with rage (pyrage)."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyrage import x25519

from etcdops.crypto import bech32
from etcdops.crypto.x25519 import (
    Identity,
    Recipient,
    identity_file_text,
    load_identities,
    parse_recipients,
)
from etcdops.errors import CryptoError


def as_pyrage(identity: Identity) -> x25519.Identity:
    return x25519.Identity.from_str(str(identity))


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
