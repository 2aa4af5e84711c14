"""The one exception hierarchy of etcdops.

Every failure an operator can act on is an EtcdopsError carrying a one-line message that names
the problem and a hint that names the fix, and, as a class attribute, its Kind: what sort of
failure it is for the operator. A subclass inherits its parent's kind unless it declares its own
(NotFoundError is a StorageError, but asking for what does not exist is a usage problem). The CLI
maps each Kind to its exit code in one table (etcdops/cli/exitcodes.py); nothing below the CLI
knows about exit codes, and since a class has exactly one kind, no order of lookup matters.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    """What sort of failure an error is for the operator; the CLI gives each its exit code."""

    ERROR = "error"
    USAGE = "usage"
    CONFIG = "config"
    LOCKED = "locked"
    CRYPTO = "crypto"
    ETCD = "etcd"
    STORAGE = "storage"
    INTEGRITY = "integrity"
    TARGET_MISSED = "target missed"


class EtcdopsError(Exception):
    """A failure with a message for the operator and, where there is one, the fix."""

    kind = Kind.ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(EtcdopsError):
    """Arguments that cannot work together or name nothing."""

    kind = Kind.USAGE


class ConfigError(EtcdopsError):
    """The configuration is unreadable, invalid or incomplete."""

    kind = Kind.CONFIG


class LockedError(EtcdopsError):
    """Another run holds the lock for this job."""

    kind = Kind.LOCKED


class CryptoError(EtcdopsError):
    """A key is missing or malformed, or a file cannot be decrypted with the keys given."""

    kind = Kind.CRYPTO


class EtcdUnavailableError(EtcdopsError):
    """etcd cannot be reached or is not healthy enough for the job."""

    kind = Kind.ETCD


class StorageError(EtcdopsError):
    """A store failed to read, write, list or delete."""

    kind = Kind.STORAGE

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = False) -> None:
        super().__init__(message, hint)
        self.retryable = retryable


class FeatureUnavailable(StorageError):
    """A store cannot serve an optional feature: its server does not implement the call, or the
    credentials may not make it. Callers go on without the feature, with this as their one
    warning about it; it is never retryable."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, retryable=False)


class NotFoundError(StorageError):
    """A backup or object that was asked for does not exist."""

    kind = Kind.USAGE


class IntegrityError(EtcdopsError):
    """Data failed a check: a hash, a size, an authentication tag, a truncated stream."""

    kind = Kind.INTEGRITY


class TargetMissedError(EtcdopsError):
    """A recovery step finished, but later than its target."""

    kind = Kind.TARGET_MISSED


class ToolError(EtcdopsError):
    """An external tool (etcdutl) is missing or failed."""

    kind = Kind.ERROR


class HostUnreachableError(ToolError):
    """A member's host did not answer through its command prefix (ssh itself failed)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a job part way; the message says what it had kept.

    Still a KeyboardInterrupt (exit 130, and no handler of EtcdopsError swallows it), with the
    operator's message and hint an EtcdopsError carries.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
