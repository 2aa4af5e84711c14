"""One stream written to several stores at once, where one store failing spares the others."""

from __future__ import annotations

from etcdops.errors import EtcdopsError
from etcdops.stores.base import ObjectWriter


class Fanout:
    """Writes every block to each live writer; a writer that fails is aborted and set aside.

    A slow writer holds the stream for every store, so each bounds its own waits (an S3 upload
    by its timeouts and deadline): a store that stalls holds the others that long at most, and
    cancel() ends those waits at once. Writers are committed one by one, so that one store's
    copy never waits for another's.
    """

    def __init__(self, writers: dict[str, ObjectWriter]) -> None:
        self._live = dict(writers)
        self.failures: dict[str, EtcdopsError | OSError] = {}
        # the writers aborted, and whether each abort was confirmed (an S3 writer's abort says
        # False when S3 did not answer it, and something may be left there)
        self.aborted: dict[str, bool] = {}

    @property
    def live(self) -> list[str]:
        """The writers still open, neither committed nor failed."""
        return list(self._live)

    def write(self, data: bytes, /) -> int:
        for name, writer in list(self._live.items()):
            try:
                writer.write(data)
            except (EtcdopsError, OSError) as exc:
                self._fail(name, exc)
        if not self._live:
            # nowhere left to write: stop the stream now rather than read it to the end
            raise next(iter(self.failures.values()))
        return len(data)

    def commit(self, name: str) -> bool:
        """Commit one live writer: whether it now holds the object (if not, failures says why)."""
        if name not in self._live:
            return False
        try:
            self._live[name].commit()
        except (EtcdopsError, OSError) as exc:
            self._fail(name, exc)
            return False
        del self._live[name]
        return True

    def cancel(self) -> None:
        """End the waits of writers that wait (on S3) in another thread; thread-safe."""
        for writer in list(self._live.values()):
            cancel = getattr(writer, "cancel", None)
            if cancel is not None:
                cancel()

    def abort(self) -> None:
        """Abort every writer still live (on failure elsewhere in the pipeline)."""
        for name, writer in list(self._live.items()):
            self.aborted[name] = writer.abort() is not False
        self._live = {}

    def _fail(self, name: str, exc: EtcdopsError | OSError) -> None:
        self.failures[name] = exc
        self.aborted[name] = self._live.pop(name).abort() is not False
