"""age's X25519 recipient type: keys as age-keygen writes them, key files and recipient lists,
and the stanza that wraps a file's key for one recipient."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from etcdops.crypto import bech32
from etcdops.crypto.age_header import (
    DAMAGED_HINT,
    FILE_KEY_LEN,
    TAG_LEN,
    Stanza,
    b64decode,
    b64encode,
    header_error,
    hkdf,
)
from etcdops.errors import CryptoError, IntegrityError

T = TypeVar("T")
_RECIPIENT_HRP = "age"
_IDENTITY_HRP = "AGE-SECRET-KEY-"
_X25519_INFO = b"age-encryption.org/v1/X25519"

_RECIPIENT_HINT = "a recipient looks like age1... (62 characters), as printed by age-keygen -y"
# OpenSSH public key types: the age tool accepts them as recipients, etcdops writes X25519 only
_SSH_KEY_TYPES = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-")
IDENTITY_HINT = "an identity is an AGE-SECRET-KEY-1... line (74 characters), as age-keygen writes"


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

    def wrap(self, file_key: bytes) -> bytes:
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
        wrap_key = hkdf(shared, share + self._raw, _X25519_INFO)
        body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
        # A 32-byte body is 43 base64 columns: always a single, short, final line.
        return b"-> X25519 " + b64encode(share) + b"\n" + b64encode(body) + b"\n"


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
            raise CryptoError(f"invalid age identity: {e}", IDENTITY_HINT) from None
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
                "age header is invalid: an X25519 share is a low-order point", DAMAGED_HINT
            )
        wrap_key = hkdf(shared, share + self._key.public_key().public_bytes_raw(), _X25519_INFO)
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
        raise CryptoError(f"identity file {path} is not text", IDENTITY_HINT) from None
    identities = _parse_lines(text.splitlines(), Identity.parse, str(path), "line")
    if not identities:
        raise CryptoError(f"identity file {path} holds no identity", IDENTITY_HINT)
    return identities


def parse_recipients(lines: Iterable[str], source: str, *, item: str = "line") -> list[Recipient]:
    """Read recipients from a file or config list, naming `source` and the `item` (a file's
    line, a list's entry) in errors; may return []."""
    return _parse_lines(lines, Recipient.parse, source, item)


def _parse_lines(
    lines: Iterable[str], parse: Callable[[str], T], source: str, item: str
) -> list[T]:
    """Parse every line that is not blank or a # comment, naming the line in errors."""
    parsed = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parsed.append(parse(line))
        except CryptoError as e:
            raise CryptoError(f"{source} {item} {number}: {e.message}", e.hint) from None
    return parsed


def identity_file_text(identity: Identity, created: datetime) -> str:
    """Render a key file exactly as age-keygen writes it, so age and etcdops share key files."""
    if created.tzinfo is None:
        created = created.astimezone()  # naive means local time, as age-keygen would print it
    stamp = created.isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"# created: {stamp}\n# public key: {identity.recipient()}\n{identity}\n"


def _x25519_parts(stanza: Stanza) -> tuple[bytes, bytes]:
    """Validate an X25519 stanza (before any decryption, as the spec requires)."""
    if len(stanza.args) != 2:
        raise header_error("an X25519 stanza does not have exactly one argument")
    share = b64decode(stanza.args[1], "an X25519 share")
    if len(share) != 32:
        raise header_error("an X25519 share is not 32 bytes")
    if len(stanza.body) != FILE_KEY_LEN + TAG_LEN:
        raise header_error("an X25519 stanza body is not a wrapped 16-byte file key")
    return share, stanza.body


def unwrap_file_key(stanzas: Sequence[Stanza], identities: Sequence[Identity]) -> bytes:
    """The file key, from the first X25519 stanza that one of identities opens; every X25519
    stanza is checked before any is opened, as the spec requires."""
    wrapped = [_x25519_parts(s) for s in stanzas if s.args[0] == b"X25519"]
    if not wrapped:
        kinds = ", ".join(sorted({s.args[0].decode("ascii") for s in stanzas}))
        raise CryptoError(
            f"this file is encrypted to no X25519 recipient (only to: {kinds})",
            "etcdops writes only X25519 stanzas, so an etcdops backup like this has a damaged "
            "header (use another copy); other age files need the age tool",
        )
    for share, body in wrapped:
        for identity in identities:
            file_key = identity._unwrap(share, body)
            if file_key is not None:
                return file_key
    tried = ", ".join(_clip(str(i.recipient()), 20) for i in identities)
    raise CryptoError(
        f"no identity given matches the recipients of this file (tried {tried})",
        "use the identity whose recipient (age1...) the backup was encrypted to",
    )
