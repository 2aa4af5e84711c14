"""Which keys a job uses: recipients to encrypt on backup hosts, identities to decrypt."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from etcdops.config import EncryptionConfig
from etcdops.crypto.age import (
    Identity,
    Recipient,
    identity_file_text,
    load_identities,
    parse_recipients,
)
from etcdops.errors import ConfigError, CryptoError, UsageError


def configured_recipients(config: EncryptionConfig) -> list[Recipient]:
    """Every recipient a new backup is encrypted to; ConfigError when there is none."""
    where = "[encryption] recipients"
    if config.recipients_origin:
        where = f"{config.recipients_origin}: {where}"
    recipients = parse_recipients(config.recipients, where, item="entry")
    if config.recipients_file is not None:
        lines = config.recipients_file.read_text().splitlines()
        recipients += parse_recipients(lines, str(config.recipients_file))
    if not recipients:
        raise ConfigError(
            "no encryption recipients configured: backups are always encrypted",
            "run 'etcdops keys generate --out FILE' and put the age1... recipient it prints in "
            "[encryption] recipients (or ETCDOPS_ENCRYPTION_RECIPIENTS)",
        )
    return recipients


def configured_identities(config: EncryptionConfig) -> list[Identity]:
    """The identities that decrypt backups; CryptoError when none is configured."""
    if config.identity_file is None:
        raise CryptoError(
            "no identity configured: decrypting a backup needs the age identity",
            "set [encryption] identity_file (or ETCDOPS_ENCRYPTION_IDENTITY_FILE) to the file "
            "'etcdops keys generate' wrote",
        )
    return load_identities(config.identity_file)


def identity_file_warning(config: EncryptionConfig) -> str | None:
    """ssh's rule for private keys, as a warning: an identity file open to others is exposed."""
    path = config.identity_file
    if path is None:
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # load_identities() says why it cannot be read
    if not mode & 0o077:
        return None
    return (
        f"identity file {path} is open to group or others (mode {mode:04o}): whoever can read "
        f"it can decrypt every backup; run 'chmod 600 {path}'"
    )


def generate_identity_file(out: Path, now: datetime | None = None) -> Recipient:
    """Write a new identity to a file only its owner can read; refuse to replace an existing key."""
    identity = Identity.generate()
    text = identity_file_text(identity, now or datetime.now(UTC))
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(
            f"{out} already exists; refusing to overwrite a key",
            "choose another --out path, or move the old key aside first",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}", "check the directory") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return identity.recipient()
