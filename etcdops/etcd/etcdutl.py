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
    try:
        done = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"etcdutl {args[0]} did not finish within {timeout:.0f}s") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolError(f"etcdutl {' '.join(args[:2])} failed: {last}")
    return done.stdout


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
