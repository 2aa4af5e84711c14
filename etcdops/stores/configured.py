"""The store topology a configuration names: local always, S3 primary and replica when configured.

One object knows the stores, their roles, the order reads try them and which failure leaves a
job partial, so that no service, adapter or exit-code map tests role names of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from etcdops.config import Config, S3Location
from etcdops.errors import UsageError
from etcdops.stores.base import Store

LOCAL, PRIMARY, REPLICA = "local", "primary", "replica"
# a save streams into these, local first (its copy is committed before anything waits on S3);
# the others are filled by copies afterwards
_STREAMED = (LOCAL, PRIMARY)
# where `snapshot replicate` copies to: this host's own disk is never a copy's target
_COPY_TARGETS = (PRIMARY, REPLICA)
# a job that failed only here succeeded where it counts (exit 3): the replica region is the
# second copy, filled after the backup already exists
_PARTIAL = frozenset({REPLICA})


class Stores(Mapping[str, Store]):
    """The configured stores by role, in the order reads try them (local, primary, replica).

    Each store is opened when first used (an S3 store costs botocore and a client), so that a
    read of a file, or of one store, touches no other; open() opens them all at once.
    """

    def __init__(self, openers: Mapping[str, Callable[[], Store]]) -> None:
        self._openers = dict(openers)
        self._open: dict[str, Store] = {}

    def __getitem__(self, name: str) -> Store:
        if name not in self._open:
            self._open[name] = self._openers[name]()
        return self._open[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._openers)

    def __len__(self) -> int:
        return len(self._openers)

    def open(self) -> Stores:
        """Open every store now: a store's configuration mistake stops a job before it starts."""
        for name in self:
            self[name]
        return self

    def only(self, name: str, hint: str | None = None) -> Stores:
        """The topology narrowed to one store (--store, --from); UsageError when not configured."""
        if name not in self:
            raise UsageError(
                f"no {name} store is configured", hint or f"choose one of: {', '.join(self)}"
            )
        return Stores({name: lambda: self[name]})

    @property
    def local(self) -> str | None:
        """This host's own store: a save's first copy, which it can always vouch for."""
        return LOCAL if LOCAL in self else None

    @property
    def streamed(self) -> list[str]:
        """The stores a save streams into, in the order it commits them."""
        return [name for name in _STREAMED if name in self]

    @property
    def copied(self) -> list[str]:
        """The stores a save fills by copying its backup afterwards."""
        return [name for name in self if name not in _STREAMED]

    @property
    def copy_targets(self) -> list[str]:
        """The stores `snapshot replicate` fills with what they lack."""
        return [name for name in _COPY_TARGETS if name in self]

    @property
    def second_region(self) -> str | None:
        """The store in the other region, whose holding the newest backup health checks."""
        return REPLICA if REPLICA in self else None

    def partial(self, failed: Iterable[str]) -> bool:
        """Whether a job that failed in these stores still succeeded where it counts (exit 3)."""
        failed = set(failed)
        return bool(failed) and failed <= _PARTIAL


def open_stores(config: Config, *, local_only: bool = False) -> Stores:
    """Every store the configuration names (only the local one with local_only)."""
    from etcdops.stores.local import LocalStore

    openers: dict[str, Callable[[], Store]] = {LOCAL: lambda: LocalStore(config.local.dir, LOCAL)}
    s3 = config.s3
    if s3 is not None and not local_only:
        openers[PRIMARY] = lambda: _s3(s3, PRIMARY, "s3")
        if (replica := s3.replica) is not None:
            openers[REPLICA] = lambda: _s3(replica, REPLICA, "s3.replica")
    return Stores(openers)


def _s3(location: S3Location, name: str, section: str) -> Store:
    from etcdops.stores.s3 import S3Store

    return S3Store(location, name, section=section)
