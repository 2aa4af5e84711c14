"""The age v1 file format (https://age-encryption.org/v1) with X25519 keys, streaming.

Backups are age files so that an operator can always fall back to the stock `age` tool. Only
X25519 recipients are written or read; other stanza types are skipped, as the spec requires.
Errors follow the project's split: CryptoError means "wrong or bad key" (the operator can fix it
by choosing another key), IntegrityError means "this file is damaged or not authentic".

This module is the format's face: the header lives in age_header, the payload's chunks in
age_stream, the keys in x25519.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from etcdops.crypto.age_header import (
    AGE_MAGIC,
    DAMAGED_HINT,
    FILE_KEY_LEN,
    VERSION_PREFIX,
    header_error,
    header_mac,
    hkdf,
    parse_header,
    write_header,
)
from etcdops.crypto.age_stream import (
    CHUNK,
    TRUNCATED_HINT,
    HoldBack,
    PayloadOpener,
    chunk_nonce,
)
from etcdops.crypto.x25519 import (
    IDENTITY_HINT,
    Identity,
    Recipient,
    identity_file_text,
    load_identities,
    parse_recipients,
    unwrap_file_key,
)
from etcdops.errors import CryptoError, IntegrityError

__all__ = [
    "AGE_MAGIC",
    "Decryptor",
    "Encryptor",
    "Identity",
    "Recipient",
    "decrypt_file",
    "encrypt_file",
    "identity_file_text",
    "load_identities",
    "parse_recipients",
]

_NONCE_LEN = 16
_IO_BLOCK = 1024 * 1024
# Real headers are a few hundred bytes; the cap only stops a stream with no header end from
# growing the buffer without bound.
_MAX_HEADER = 1024 * 1024


def _open_header(header: bytes, identities: Sequence[Identity]) -> bytes:
    """Return the file key from a complete header, checking the header MAC with it."""
    stanzas, mac_input, mac = parse_header(header)
    file_key = unwrap_file_key(stanzas, identities)
    if not hmac.compare_digest(header_mac(file_key, mac_input), mac):
        raise IntegrityError(
            "age header MAC does not match: the header was modified", DAMAGED_HINT
        )
    return file_key


class Encryptor:
    """Encrypts a stream pushed in slices of any size, in flat memory."""

    def __init__(self, recipients: Sequence[Recipient]) -> None:
        if not recipients:
            raise CryptoError(
                "no recipients to encrypt to", "configure at least one age1... recipient"
            )
        file_key = os.urandom(FILE_KEY_LEN)
        nonce = os.urandom(_NONCE_LEN)
        self._prefix = write_header(file_key, [r.wrap(file_key) for r in recipients]) + nonce
        self._aead = ChaCha20Poly1305(hkdf(file_key, nonce, b"payload"))
        self._chunks = HoldBack(CHUNK)
        self._counter = 0

    def update(self, data: bytes) -> bytes:
        """Encrypt the next slice; returns what can be written now, so memory stays flat."""
        out = [self._take_prefix()]
        out.extend(self._seal(chunk, last=False) for chunk in self._chunks.feed(data))
        return b"".join(out)

    def finish(self) -> bytes:
        """Seal the final chunk (STREAM needs one to detect truncation); call exactly once."""
        return self._take_prefix() + self._seal(self._chunks.tail(), last=True)

    def _take_prefix(self) -> bytes:
        prefix, self._prefix = self._prefix, b""
        return prefix

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> bytes:
        sealed = self._aead.encrypt(chunk_nonce(self._counter, last), chunk, None)
        self._counter += 1
        return sealed


class Decryptor:
    """Decrypts a stream pushed in slices of any size, releasing only authenticated plaintext."""

    def __init__(self, identities: Sequence[Identity]) -> None:
        if not identities:
            raise CryptoError("no identities to decrypt with", IDENTITY_HINT)
        self._identities = tuple(identities)
        self._head = bytearray()  # header and nonce, until both have arrived
        self._scanned = 0  # where to resume looking for the end of the header
        self._header_len = 0  # set once the header is read and authenticated
        self._file_key = b""
        self._payload: PayloadOpener | None = None

    def update(self, data: bytes) -> bytes:
        """Decrypt the next slice; returns only plaintext already authenticated, so callers
        never write unverified bytes (the last full chunk waits until it is known not final)."""
        if self._payload is not None:
            return self._payload.update(data)
        # Buffer only as much as a header and nonce can span, so that a first slice of many
        # MiB reaches the payload without being copied.
        view = memoryview(data)
        room = _MAX_HEADER + _NONCE_LEN - len(self._head)
        self._head += view[:room]
        if not self._read_head():
            return b""
        rest = self._head[self._header_len + _NONCE_LEN :]
        self._head = bytearray()
        return self._payload.update(rest, view[room:])

    def finish(self) -> bytes:
        """Release the final chunk, or fail if the file was truncated: call exactly once."""
        if self._payload is None:
            if not self._head:
                where = "is empty"
            elif not self._header_len:
                where = "ends inside its header"
            else:
                where = "ends before its payload"
            raise IntegrityError(f"age file is truncated: it {where}", TRUNCATED_HINT)
        return self._payload.finish()

    def _read_head(self) -> bool:
        """Consume the header and nonce once they have arrived; True when the payload starts."""
        if not self._header_len:
            end = self._header_end()
            if end is None:
                return False
            self._file_key = _open_header(bytes(self._head[:end]), self._identities)
            self._header_len = end
        if len(self._head) < self._header_len + _NONCE_LEN:
            return False
        nonce = bytes(self._head[self._header_len : self._header_len + _NONCE_LEN])
        self._payload = PayloadOpener(hkdf(self._file_key, nonce, b"payload"))
        return True

    def _header_end(self) -> int | None:
        """Offset just past the '---' line, or None while it has not all arrived."""
        head = self._head
        start = bytes(head[: len(AGE_MAGIC)])
        if not AGE_MAGIC.startswith(start):
            if start.startswith(VERSION_PREFIX):
                version = start.split(b"\n")[0].decode("ascii", "replace")
                raise header_error(f"unsupported version line {version!r}")
            raise IntegrityError(
                "not an age file (it does not start with the age header)", DAMAGED_HINT
            )
        # The first line starting with "---" ends the header: no stanza line can start so.
        dashes = head.find(b"\n---", max(self._scanned, len(AGE_MAGIC) - 1))
        end = -1 if dashes < 0 else head.find(b"\n", dashes + 1)
        if end < 0 and len(head) <= _MAX_HEADER:
            self._scanned = dashes if dashes >= 0 else max(len(head) - 3, 0)
            return None
        if end < 0 or end >= _MAX_HEADER:
            raise header_error("it is longer than 1 MiB")
        return end + 1


def encrypt_file(src: BinaryIO, dst: BinaryIO, recipients: Sequence[Recipient]) -> None:
    """Encrypt one open file into another, for callers that do not stream through a pipeline."""
    encryptor = Encryptor(recipients)
    while block := src.read(_IO_BLOCK):
        dst.write(encryptor.update(block))
    dst.write(encryptor.finish())


def decrypt_file(src: BinaryIO, dst: BinaryIO, identities: Sequence[Identity]) -> None:
    """Decrypt one open file into another; dst may hold a prefix if an error is raised."""
    decryptor = Decryptor(identities)
    while block := src.read(_IO_BLOCK):
        dst.write(decryptor.update(block))
    dst.write(decryptor.finish())
