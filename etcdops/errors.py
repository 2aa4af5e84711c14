"""The one exception hierarchy of etcdops.

Every failure an operator can act on is an EtcdopsError carrying a one-line message that names
the problem and a hint that names the fix. The CLI maps each class to its exit code in one table
(etcdops/cli/exitcodes.py); nothing below the CLI knows about exit codes.
"""

from __future__ import annotations


class EtcdopsError(Exception):
    """A failure with a message for the operator and, where there is one, the fix."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(EtcdopsError):
    """Arguments that cannot work together or name nothing."""


class ConfigError(EtcdopsError):
    """The configuration is unreadable, invalid or incomplete."""


class LockedError(EtcdopsError):
    """Another run holds the lock for this job."""


class CryptoError(EtcdopsError):
    """A key is missing or malformed, or a file cannot be decrypted with the keys given."""


class EtcdUnavailableError(EtcdopsError):
    """etcd cannot be reached or is not healthy enough for the job."""


class StorageError(EtcdopsError):
    """A store failed to read, write, list or delete."""

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = False) -> None:
        super().__init__(message, hint)
        self.retryable = retryable


class NotFoundError(StorageError):
    """A backup or object that was asked for does not exist."""


class IntegrityError(EtcdopsError):
    """Data failed a check: a hash, a size, an authentication tag, a truncated stream."""


class PartialFailure(EtcdopsError):
    """The job succeeded where it counts but one part of it failed (e.g. a replica region)."""


class TargetMissedError(EtcdopsError):
    """A recovery step finished, but later than its target."""


class ToolError(EtcdopsError):
    """An external tool (etcdutl) is missing or failed."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a job part way; the message says what it had kept.

    Still a KeyboardInterrupt (exit 130, and no handler of EtcdopsError swallows it), with the
    operator's message and hint an EtcdopsError carries.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
