"""An S3 object's body as a stream."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from etcdops.errors import EtcdopsError


class S3Reader(io.IOBase):
    """An object's body as a stream; network failures while reading become StorageErrors."""

    def __init__(self, body: Any, error: Callable[[Exception], EtcdopsError]) -> None:
        self._body = body
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to size bytes (all the rest when size is negative); b"" at the end."""
        from botocore.exceptions import BotoCoreError

        try:
            return self._body.read(None if size is None or size < 0 else size)
        except BotoCoreError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._body.close()
        super().close()
