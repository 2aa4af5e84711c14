"""The one map from failures to exit codes (documented in `etcdops --help`)."""

from etcdops import errors

OK = 0
ERROR = 1
USAGE = 2
PARTIAL = 3
CONFIG = 10
LOCKED = 11
CRYPTO = 12
ETCD = 13
STORAGE = 14
INTEGRITY = 15
TARGET_MISSED = 16
INTERRUPTED = 130

# Most specific first: NotFoundError is a StorageError but a usage problem for the operator.
_BY_CLASS: tuple[tuple[type[errors.EtcdopsError], int], ...] = (
    (errors.UsageError, USAGE),
    (errors.NotFoundError, USAGE),
    (errors.ConfigError, CONFIG),
    (errors.LockedError, LOCKED),
    (errors.CryptoError, CRYPTO),
    (errors.EtcdUnavailableError, ETCD),
    (errors.StorageError, STORAGE),
    (errors.IntegrityError, INTEGRITY),
    (errors.PartialFailure, PARTIAL),
    (errors.TargetMissedError, TARGET_MISSED),
    (errors.ToolError, ERROR),
)

HELP_TABLE = (
    "Exit codes: 0 ok · 1 error · 2 usage · 3 partial (e.g. replica region failed) · "
    "10 configuration · 11 locked or busy · 12 key or decryption · "
    "13 etcd unreachable or unhealthy · 14 storage · 15 integrity check failed · "
    "16 a recovery target was missed · 130 interrupted."
)


def for_stores(failures: dict[str, str]) -> int:
    """A job that succeeded in some stores: 14 when local or primary failed, 3 for the replica."""
    if not failures:
        return OK
    return PARTIAL if set(failures) == {"replica"} else STORAGE


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of a failure."""
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    for cls, code in _BY_CLASS:
        if isinstance(error, cls):
            return code
    return ERROR
