"""The one map from failures to exit codes (documented in `etcdops --help`)."""

from collections.abc import Iterable
from typing import TYPE_CHECKING

from etcdops import errors

if TYPE_CHECKING:
    from etcdops.stores.configured import Stores

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

# One code per kind; an error's kind is its class's own (see etcdops.errors), so no order matters.
# A partial success (3) is a result, not an error: see for_stores.
BY_KIND: dict[errors.Kind, int] = {
    errors.Kind.ERROR: ERROR,
    errors.Kind.USAGE: USAGE,
    errors.Kind.CONFIG: CONFIG,
    errors.Kind.LOCKED: LOCKED,
    errors.Kind.CRYPTO: CRYPTO,
    errors.Kind.ETCD: ETCD,
    errors.Kind.STORAGE: STORAGE,
    errors.Kind.INTEGRITY: INTEGRITY,
    errors.Kind.TARGET_MISSED: TARGET_MISSED,
}

HELP_TABLE = (
    "Exit codes: 0 ok · 1 error · 2 usage · 3 partial (e.g. replica region failed) · "
    "10 configuration · 11 locked or busy · 12 key or decryption · "
    "13 etcd unreachable or unhealthy · 14 storage · 15 integrity check failed · "
    "16 a recovery target was missed · 130 interrupted."
)


def for_stores(failures: Iterable[str], stores: "Stores") -> int:
    """A job that failed in some stores: 3 when the topology calls those failures partial (the
    replica), 14 otherwise."""
    failed = set(failures)
    if not failed:
        return OK
    return PARTIAL if stores.partial(failed) else STORAGE


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of a failure."""
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, errors.EtcdopsError):
        return BY_KIND[error.kind]
    return ERROR
