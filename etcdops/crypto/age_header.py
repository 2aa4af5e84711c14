"""The age v1 header (https://age-encryption.org/v1): recipient stanzas in canonical base64,
closed by a MAC under the file key, and the HKDF that age derives every key with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from etcdops.errors import IntegrityError

AGE_MAGIC = b"age-encryption.org/v1\n"
VERSION_PREFIX = b"age-encryption.org/"
FILE_KEY_LEN = 16
TAG_LEN = 16  # ChaCha20-Poly1305's, in a wrapped file key and in every payload chunk
_BODY_COLUMNS = 64

_BASE64 = re.compile(rb"[A-Za-z0-9+/]*")
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")

DAMAGED_HINT = "the file is damaged or is not an age file; use another copy of the backup"


class Stanza(NamedTuple):
    """One recipient stanza: its arguments (the first names its type) and its decoded body."""

    args: list[bytes]
    body: bytes


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def header_mac(file_key: bytes, header_to_dashes: bytes) -> bytes:
    key = hkdf(file_key, b"", b"header")
    return hmac.new(key, header_to_dashes, hashlib.sha256).digest()


def b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def b64decode(text: bytes, what: str) -> bytes:
    """Decode unpadded, canonical base64: the spec makes every other spelling an error."""
    if not _BASE64.fullmatch(text) or len(text) % 4 == 1:
        raise header_error(f"{what} is not valid unpadded base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4))
    if b64encode(data) != text:
        raise header_error(f"{what} is not canonical base64")
    return data


def header_error(what: str) -> IntegrityError:
    return IntegrityError(f"age header is invalid: {what}", DAMAGED_HINT)


def write_header(file_key: bytes, stanzas: Iterable[bytes]) -> bytes:
    """The header that carries these stanzas, closed by its MAC under file_key."""
    head = AGE_MAGIC + b"".join(stanzas) + b"---"
    return head + b" " + b64encode(header_mac(file_key, head)) + b"\n"


def parse_header(header: bytes) -> tuple[list[Stanza], bytes, bytes]:
    """Split a complete header (magic checked, ending at the '---' line) into its stanzas,
    the bytes its MAC covers, and the MAC."""
    lines = header.split(b"\n")
    mac_at = len(lines) - 2  # header ends with "\n", so the last element is empty
    stanzas = []
    i = 1
    while lines[i].startswith(b"-> "):
        args = lines[i][3:].split(b" ")
        if not all(_ARGUMENT.fullmatch(arg) for arg in args):
            raise header_error("a stanza has an empty or non-printable argument")
        i += 1
        body_lines = []
        while True:  # a body is full 64-column lines closed by one shorter, maybe empty, line
            if i >= mac_at:
                raise header_error("a stanza body is not closed by a short line")
            line = lines[i]
            i += 1
            if len(line) > _BODY_COLUMNS:
                raise header_error("a stanza body line is longer than 64 columns")
            body_lines.append(line)
            if len(line) < _BODY_COLUMNS:
                break
        stanzas.append(Stanza(args, b64decode(b"".join(body_lines), "a stanza body")))
    if i != mac_at:
        raise header_error(f"unexpected line {i + 1}")
    if not stanzas:
        raise header_error("no recipient stanzas")
    if not lines[mac_at].startswith(b"--- "):
        raise header_error("the MAC line is not '--- <MAC>'")
    mac = b64decode(lines[mac_at][4:], "the header MAC")
    if len(mac) != 32:
        raise header_error("the header MAC is not 32 bytes")
    # The MAC covers everything up to and including "---", not the space after it.
    mac_input = header[: len(header) - len(lines[mac_at]) - 1 + 3]
    return stanzas, mac_input, mac

