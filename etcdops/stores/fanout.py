"""One stream written to several stores at once, where one store failing spares the others."""

from __future__ import annotations

from etcdops.errors import EtcdopsError
from etcdops.stores.base import ObjectWriter


class Fanout:
    """Writes every block to each live writer; a writer that fails is aborted and set aside."""

    def __init__(self, writers: dict[str, ObjectWriter]) -> None:
        self._live = dict(writers)
        self.failures: dict[str, EtcdopsError | OSError] = {}

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

    def commit(self) -> list[str]:
        """Commit every writer still live; the names of those that now hold the object."""
        committed = []
        for name, writer in list(self._live.items()):
            try:
                writer.commit()
                committed.append(name)
            except (EtcdopsError, OSError) as exc:
                self._fail(name, exc)
        self._live = {}
        return committed

    def abort(self) -> None:
        """Abort every writer still live (on failure elsewhere in the pipeline)."""
        for writer in self._live.values():
            writer.abort()
        self._live = {}

    def _fail(self, name: str, exc: EtcdopsError | OSError) -> None:
        self.failures[name] = exc
        self._live.pop(name).abort()
