"""The age v1 file format (https://age-encryption.org/v1) with X25519 keys, streaming.

Backups are age files so that an operator can always fall back to the stock `age` tool. Only
X25519 recipients are written or read; other stanza types are skipped, as the spec requires.
Errors follow the project's split: CryptoError means "wrong or bad key" (the operator can fix it
by choosing another key), IntegrityError means "this file is damaged or not authentic".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from etcdops.crypto import bech32
from etcdops.errors import CryptoError, IntegrityError

AGE_MAGIC = b"age-encryption.org/v1\n"

_VERSION_PREFIX = b"age-encryption.org/"
_RECIPIENT_HRP = "age"
_IDENTITY_HRP = "AGE-SECRET-KEY-"
_X25519_INFO = b"age-encryption.org/v1/X25519"
_FILE_KEY_LEN = 16
_NONCE_LEN = 16
_TAG_LEN = 16
_CHUNK = 64 * 1024
_ENC_CHUNK = _CHUNK + _TAG_LEN
_BODY_COLUMNS = 64
_IO_BLOCK = 1024 * 1024
# Real headers are a few hundred bytes; the cap only stops a stream with no header end from
# growing the buffer without bound.
_MAX_HEADER = 1024 * 1024

_BASE64 = re.compile(rb"[A-Za-z0-9+/]*")
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")

_RECIPIENT_HINT = "a recipient looks like age1... (62 characters), as printed by age-keygen -y"
# OpenSSH public key types: the age tool accepts them as recipients, etcdops writes X25519 only
_SSH_KEY_TYPES = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-")
_IDENTITY_HINT = "an identity is an AGE-SECRET-KEY-1... line (74 characters), as age-keygen writes"
_DAMAGED_HINT = "the file is damaged or is not an age file; use another copy of the backup"
_TRUNCATED_HINT = "the copy is incomplete (interrupted transfer?); fetch it again or use a replica"


# ---- keys ---------------------------------------------------------------------------------


class Recipient:
    """An X25519 public key that files are encrypted to."""

    __slots__ = ("_key", "_raw")

    def __init__(self, public_key: X25519PublicKey) -> None:
        self._key = public_key
        self._raw = public_key.public_bytes_raw()

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """Read an age1... recipient as written in configs and recipient files."""
        text = text.strip()
        if text.upper().startswith(_IDENTITY_HRP):
            # Never echo this one: it is a secret key pasted where a public one belongs.
            raise CryptoError(
                "expected an age recipient (age1...) but got a secret key (AGE-SECRET-KEY-1...)",
                "give the public key printed by age-keygen -y and keep the secret key private",
            )
        if text.startswith(_SSH_KEY_TYPES):
            raise CryptoError(
                f"SSH recipients are not supported ({_clip(text)!r}): etcdops encrypts to age "
                "X25519 recipients only",
                "use an age1... recipient: 'etcdops keys generate --out FILE' prints one, "
                "as does age-keygen -y",
            )
        try:
            raw = _decode_key(text, _RECIPIENT_HRP)
        except ValueError as e:
            message = f"invalid age recipient {_clip(text)!r}: {e}"
            raise CryptoError(message, _RECIPIENT_HINT) from None
        return cls(X25519PublicKey.from_public_bytes(raw))

    def __str__(self) -> str:
        return bech32.encode(_RECIPIENT_HRP, self._raw)

    def __repr__(self) -> str:
        return f"Recipient({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipient) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def fingerprint(self) -> str:
        """A short stable id for manifests, so they can say which key a backup needs."""
        return hashlib.sha256(self._raw).hexdigest()[:16]

    def _wrap(self, file_key: bytes) -> bytes:
        """Return the X25519 stanza that wraps file_key for this recipient."""
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        try:
            shared = ephemeral.exchange(self._key)
        except ValueError:  # a low-order point: every file "encrypted" to it would be readable
            raise CryptoError(
                f"age recipient {self} is not a usable X25519 public key",
                "generate a key pair with age-keygen and use its public key",
            ) from None
        wrap_key = _hkdf(shared, share + self._raw, _X25519_INFO)
        body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
        # A 32-byte body is 43 base64 columns: always a single, short, final line.
        return b"-> X25519 " + _b64encode(share) + b"\n" + _b64encode(body) + b"\n"


class Identity:
    """An X25519 secret key that decrypts files sent to its recipient."""

    __slots__ = ("_key",)

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> Identity:
        """Make a new key pair, for `etcdops keygen` and tests."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Read an AGE-SECRET-KEY-1... identity; errors never contain the text."""
        text = text.strip()
        if text.lower().startswith(_RECIPIENT_HRP + "1"):
            raise CryptoError(
                "expected an age identity (AGE-SECRET-KEY-1...) but got a recipient (age1...)",
                "decrypting needs the secret key file written by age-keygen, not its public key",
            )
        try:
            raw = _decode_key(text, _IDENTITY_HRP)
        except ValueError as e:
            raise CryptoError(f"invalid age identity: {e}", _IDENTITY_HINT) from None
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def recipient(self) -> Recipient:
        """The public key to encrypt to so that this identity can decrypt."""
        return Recipient(self._key.public_key())

    def __str__(self) -> str:
        return bech32.encode(_IDENTITY_HRP, self._key.private_bytes_raw()).upper()

    def __repr__(self) -> str:
        return f"Identity(recipient={str(self.recipient())!r})"

    def _unwrap(self, share: bytes, body: bytes) -> bytes | None:
        """Return the file key if this X25519 stanza was made for us, None if it was not."""
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # OpenSSL refuses low-order shares, whose shared secret is all zeros
            shared = bytes(32)
        if not any(shared):
            raise IntegrityError(
                "age header is invalid: an X25519 share is a low-order point", _DAMAGED_HINT
            )
        wrap_key = _hkdf(shared, share + self._key.public_key().public_bytes_raw(), _X25519_INFO)
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(bytes(12), body, None)
        except InvalidTag:
            return None


def _decode_key(text: str, hrp: str) -> bytes:
    """Return the 32 key bytes of a Bech32 string with exactly this prefix; ValueError says why."""
    prefix, data = bech32.decode(text)
    if prefix != hrp:
        # The "prefix" of a garbled secret may hold most of the secret: don't show it.
        raise ValueError(f"has the wrong type prefix (expected {hrp}1...)")
    if len(data) != 32:
        raise ValueError(f"holds {len(data)} bytes, not a 32-byte key")
    return data


def _clip(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def load_identities(path: Path) -> list[Identity]:
    """Read an age-keygen identity file, so decryption can use the operator's key file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CryptoError(
            f"cannot read identity file {path}: {e.strerror or e}",
            "check the path and that this user may read it",
        ) from None
    except UnicodeDecodeError:
        raise CryptoError(f"identity file {path} is not text", _IDENTITY_HINT) from None
    identities = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(Identity.parse(line))
        except CryptoError as e:
            raise CryptoError(f"{path} line {number}: {e.message}", e.hint) from None
    if not identities:
        raise CryptoError(f"identity file {path} holds no identity", _IDENTITY_HINT)
    return identities


def parse_recipients(lines: Iterable[str], source: str, *, item: str = "line") -> list[Recipient]:
    """Read recipients from a file or config list, naming `source` and the `item` (a file's
    line, a list's entry) in errors; may return []."""
    recipients = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            recipients.append(Recipient.parse(line))
        except CryptoError as e:
            raise CryptoError(f"{source} {item} {number}: {e.message}", e.hint) from None
    return recipients


def identity_file_text(identity: Identity, created: datetime) -> str:
    """Render a key file exactly as age-keygen writes it, so age and etcdops share key files."""
    if created.tzinfo is None:
        created = created.astimezone()  # naive means local time, as age-keygen would print it
    stamp = created.isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"# created: {stamp}\n# public key: {identity.recipient()}\n{identity}\n"


# ---- header -------------------------------------------------------------------------------


class _Stanza(NamedTuple):
    args: list[bytes]
    body: bytes


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _header_mac(file_key: bytes, header_to_dashes: bytes) -> bytes:
    key = _hkdf(file_key, b"", b"header")
    return hmac.new(key, header_to_dashes, hashlib.sha256).digest()


def _b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode(text: bytes, what: str) -> bytes:
    """Decode unpadded, canonical base64: the spec makes every other spelling an error."""
    if not _BASE64.fullmatch(text) or len(text) % 4 == 1:
        raise _header_error(f"{what} is not valid unpadded base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise _header_error(f"{what} is not canonical base64")
    return data


def _header_error(what: str) -> IntegrityError:
    return IntegrityError(f"age header is invalid: {what}", _DAMAGED_HINT)


def _write_header(file_key: bytes, recipients: Sequence[Recipient]) -> bytes:
    head = AGE_MAGIC + b"".join(r._wrap(file_key) for r in recipients) + b"---"
    return head + b" " + _b64encode(_header_mac(file_key, head)) + b"\n"


def _parse_header(header: bytes) -> tuple[list[_Stanza], bytes, bytes]:
    """Split a complete header (magic checked, ending at the '---' line) into its stanzas,
    the bytes its MAC covers, and the MAC."""
    lines = header.split(b"\n")
    mac_at = len(lines) - 2  # header ends with "\n", so the last element is empty
    stanzas = []
    i = 1
    while lines[i].startswith(b"-> "):
        args = lines[i][3:].split(b" ")
        if not all(_ARGUMENT.fullmatch(arg) for arg in args):
            raise _header_error("a stanza has an empty or non-printable argument")
        i += 1
        body_lines = []
        while True:  # a body is full 64-column lines closed by one shorter, maybe empty, line
            if i >= mac_at:
                raise _header_error("a stanza body is not closed by a short line")
            line = lines[i]
            i += 1
            if len(line) > _BODY_COLUMNS:
                raise _header_error("a stanza body line is longer than 64 columns")
            body_lines.append(line)
            if len(line) < _BODY_COLUMNS:
                break
        stanzas.append(_Stanza(args, _b64decode(b"".join(body_lines), "a stanza body")))
    if i != mac_at:
        raise _header_error(f"unexpected line {i + 1}")
    if not stanzas:
        raise _header_error("no recipient stanzas")
    if not lines[mac_at].startswith(b"--- "):
        raise _header_error("the MAC line is not '--- <MAC>'")
    mac = _b64decode(lines[mac_at][4:], "the header MAC")
    if len(mac) != 32:
        raise _header_error("the header MAC is not 32 bytes")
    # The MAC covers everything up to and including "---", not the space after it.
    mac_input = header[: len(header) - len(lines[mac_at]) - 1 + 3]
    return stanzas, mac_input, mac


def _x25519_parts(stanza: _Stanza) -> tuple[bytes, bytes]:
    """Validate an X25519 stanza (before any decryption, as the spec requires)."""
    if len(stanza.args) != 2:
        raise _header_error("an X25519 stanza does not have exactly one argument")
    share = _b64decode(stanza.args[1], "an X25519 share")
    if len(share) != 32:
        raise _header_error("an X25519 share is not 32 bytes")
    if len(stanza.body) != _FILE_KEY_LEN + _TAG_LEN:
        raise _header_error("an X25519 stanza body is not a wrapped 16-byte file key")
    return share, stanza.body


def _unwrap_file_key(
    wrapped: list[tuple[bytes, bytes]], identities: Sequence[Identity]
) -> bytes | None:
    for share, body in wrapped:
        for identity in identities:
            file_key = identity._unwrap(share, body)
            if file_key is not None:
                return file_key
    return None


def _open_header(header: bytes, identities: Sequence[Identity]) -> bytes:
    """Return the file key from a complete header, checking the header MAC with it."""
    stanzas, mac_input, mac = _parse_header(header)
    wrapped = [_x25519_parts(s) for s in stanzas if s.args[0] == b"X25519"]
    if not wrapped:
        kinds = ", ".join(sorted({s.args[0].decode("ascii") for s in stanzas}))
        raise CryptoError(
            f"this file is encrypted to no X25519 recipient (only to: {kinds})",
            "etcdops writes only X25519 stanzas, so an etcdops backup like this has a damaged "
            "header (use another copy); other age files need the age tool",
        )
    file_key = _unwrap_file_key(wrapped, identities)
    if file_key is None:
        tried = ", ".join(_clip(str(i.recipient()), 20) for i in identities)
        raise CryptoError(
            f"no identity given matches the recipients of this file (tried {tried})",
            "use the identity whose recipient (age1...) the backup was encrypted to",
        )
    if not hmac.compare_digest(_header_mac(file_key, mac_input), mac):
        raise IntegrityError(
            "age header MAC does not match: the header was modified", _DAMAGED_HINT
        )
    return file_key


# ---- payload ------------------------------------------------------------------------------


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class _HoldBack:
    """Cuts a stream into fixed-size chunks, keeping the newest one until more data shows it
    is not the final chunk (STREAM marks the final chunk, so that cannot be decided early)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pending = bytearray()

    def feed(
        self, data: bytes | bytearray | memoryview
    ) -> Iterator[bytes | bytearray | memoryview]:
        """Yield every chunk that more data is now known to follow."""
        view = memoryview(data)
        pos = 0
        pending = self._pending
        if pending:
            pos = min(self._size - len(pending), len(view))
            pending += view[:pos]
            if pos == len(view):
                return
            # A new buffer rather than clear(): the caller may still hold the yielded one.
            self._pending = bytearray()
            yield pending
        while len(view) - pos > self._size:
            yield view[pos : pos + self._size]
            pos += self._size
        self._pending += view[pos:]

    def tail(self) -> bytearray:
        """The last chunk (at most `size` bytes, possibly empty), once the stream has ended."""
        return self._pending


class Encryptor:
    """Encrypts a stream pushed in slices of any size, in flat memory."""

    def __init__(self, recipients: Sequence[Recipient]) -> None:
        if not recipients:
            raise CryptoError(
                "no recipients to encrypt to", "configure at least one age1... recipient"
            )
        file_key = os.urandom(_FILE_KEY_LEN)
        nonce = os.urandom(_NONCE_LEN)
        self._prefix = _write_header(file_key, recipients) + nonce
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._chunks = _HoldBack(_CHUNK)
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
        sealed = self._aead.encrypt(_chunk_nonce(self._counter, last), chunk, None)
        self._counter += 1
        return sealed


class _PayloadOpener:
    """Decrypts and authenticates the STREAM payload that follows the header and nonce."""

    def __init__(self, payload_key: bytes) -> None:
        self._aead = ChaCha20Poly1305(payload_key)
        self._chunks = _HoldBack(_ENC_CHUNK)
        self._counter = 0

    def update(self, *parts: bytes | bytearray | memoryview) -> bytes:
        chunks = (chunk for part in parts for chunk in self._chunks.feed(part))
        return b"".join([self._open_middle(chunk) for chunk in chunks])

    def finish(self) -> bytes:
        chunk = self._chunks.tail()
        if len(chunk) < _TAG_LEN:
            raise IntegrityError(
                f"age file is truncated: chunk {self._counter} is cut short", _TRUNCATED_HINT
            )
        plaintext = self._open(chunk, last=True)
        if plaintext is None:
            if len(chunk) == _ENC_CHUNK and self._open(chunk, last=False) is not None:
                raise IntegrityError(
                    f"age file is truncated: it ends after chunk {self._counter} "
                    "without a final chunk",
                    _TRUNCATED_HINT,
                )
            raise self._tampered()
        if not plaintext and self._counter:
            raise IntegrityError("age file is invalid: its final chunk is empty", _DAMAGED_HINT)
        return plaintext

    def _open_middle(self, chunk: bytes | bytearray | memoryview) -> bytes:
        plaintext = self._open(chunk, last=False)
        if plaintext is None:
            if self._open(chunk, last=True) is not None:
                raise IntegrityError(
                    "age file has data after its final chunk (appended or spliced)",
                    _DAMAGED_HINT,
                )
            raise self._tampered()
        self._counter += 1
        return plaintext

    def _open(self, chunk: bytes | bytearray | memoryview, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(_chunk_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            return None

    def _tampered(self) -> IntegrityError:
        return IntegrityError(
            f"age payload chunk {self._counter} failed authentication: the data was modified",
            _DAMAGED_HINT,
        )


class Decryptor:
    """Decrypts a stream pushed in slices of any size, releasing only authenticated plaintext."""

    def __init__(self, identities: Sequence[Identity]) -> None:
        if not identities:
            raise CryptoError("no identities to decrypt with", _IDENTITY_HINT)
        self._identities = tuple(identities)
        self._head = bytearray()  # header and nonce, until both have arrived
        self._scanned = 0  # where to resume looking for the end of the header
        self._header_len = 0  # set once the header is read and authenticated
        self._file_key = b""
        self._payload: _PayloadOpener | None = None

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
            raise IntegrityError(f"age file is truncated: it {where}", _TRUNCATED_HINT)
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
        self._payload = _PayloadOpener(_hkdf(self._file_key, nonce, b"payload"))
        return True

    def _header_end(self) -> int | None:
        """Offset just past the '---' line, or None while it has not all arrived."""
        head = self._head
        start = bytes(head[: len(AGE_MAGIC)])
        if not AGE_MAGIC.startswith(start):
            if start.startswith(_VERSION_PREFIX):
                version = start.split(b"\n")[0].decode("ascii", "replace")
                raise _header_error(f"unsupported version line {version!r}")
            raise IntegrityError(
                "not an age file (it does not start with the age header)", _DAMAGED_HINT
            )
        # The first line starting with "---" ends the header: no stanza line can start so.
        dashes = head.find(b"\n---", max(self._scanned, len(AGE_MAGIC) - 1))
        end = -1 if dashes < 0 else head.find(b"\n", dashes + 1)
        if end < 0 and len(head) <= _MAX_HEADER:
            self._scanned = dashes if dashes >= 0 else max(len(head) - 3, 0)
            return None
        if end < 0 or end >= _MAX_HEADER:
            raise _header_error("it is longer than 1 MiB")
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
