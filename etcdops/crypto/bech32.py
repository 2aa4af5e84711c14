"""Bech32 (BIP-173) as age uses it: no length limit, all-lower or all-upper case.

age encodes keys as Bech32 so that a mistyped or truncated key is caught by its checksum
instead of silently encrypting to the wrong key. Errors are ValueError: callers know what the
string was meant to be and turn them into messages an operator can act on.
"""

from __future__ import annotations

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    mask = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & mask)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & mask)
    # BIP-173 decoding: leftover bits must be fewer than a whole group and all zero, so each
    # byte string has exactly one encoding.
    elif bits >= from_bits or (acc << (to_bits - bits)) & mask:
        raise ValueError("invalid padding in data part")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode data under a human-readable prefix, in lowercase (callers upper-case secrets)."""
    hrp = hrp.lower()
    words = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod(_hrp_expand(hrp) + words + [0] * _CHECKSUM_LEN) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words + checksum)


def decode(text: str) -> tuple[str, bytes]:
    """Split a Bech32 string into its prefix (case as written) and data, verifying the checksum."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed upper and lower case")
    sep = text.rfind("1")
    if sep < 1 or sep + 1 + _CHECKSUM_LEN > len(text):
        raise ValueError("no separator '1' followed by a checksum")
    hrp = text[:sep]
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise ValueError("invalid character in prefix")
    lower = text.lower()
    try:
        words = [_VALUES[c] for c in lower[sep + 1 :]]
    except KeyError as e:
        raise ValueError(f"invalid character {e.args[0]!r} in data part") from None
    if _polymod(_hrp_expand(lower[:sep]) + words) != 1:
        raise ValueError("bad checksum (mistyped or truncated)")
    return hrp, bytes(_convert_bits(words[:-_CHECKSUM_LEN], 5, 8, pad=False))
