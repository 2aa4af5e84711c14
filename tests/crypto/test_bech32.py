"""etcdops.crypto.bech32 against BIP-173's vectors."""

import pytest

from etcdops.crypto import bech32

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
