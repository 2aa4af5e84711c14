"""etcd's own offline tool, for what only it knows how to do with a bbolt file."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from etcdops.errors import IntegrityError, ToolError
from etcdops.etcd.binaries import find_binary


@dataclass(frozen=True)
class EtcdutlStatus:
    hash: int
    revision: int
    total_keys: int
    total_size: int


def run_etcdutl(binary: Path, args: list[str], timeout: float = 600) -> str:
    """Run etcdutl and return its stdout; ToolError with its own words when it fails."""
    # not subprocess.run: on Ctrl-C or SIGTERM it kills etcdutl without waiting for it to exit,
    # and the caller's cleanup would race an etcdutl still writing into the directory it removes
    with subprocess.Popen(
        [str(binary), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException as exc:
            process.kill()
            process.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise ToolError(f"etcdutl {args[0]} did not finish within {timeout:.0f}s") from exc
            raise
    if process.returncode != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolError(f"etcdutl {' '.join(args[:2])} failed: {last}")
    return stdout


def snapshot_status(path: Path, configured: str | None) -> EtcdutlStatus:
    """Revision and key count of a plain snapshot, read by etcd's own code."""
    binary = find_binary("etcdutl", configured)
    try:
        out = run_etcdutl(binary, ["snapshot", "status", str(path), "--write-out", "json"])
    except ToolError as exc:
        raise IntegrityError(
            f"{path} is not a readable etcd snapshot: {exc.message}",
            "check that it is an etcd snapshot file and not damaged",
        ) from exc
    doc = json.loads(out)
    return EtcdutlStatus(doc["hash"], doc["revision"], doc["totalKey"], doc["totalSize"])
