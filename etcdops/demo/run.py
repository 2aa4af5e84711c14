"""The whole job on an embedded default: a throwaway etcd and S3 in two regions, Kubernetes-shaped
objects, an encrypted backup in every store, checked and fetched back.

Everything lives in one temporary directory and in-process servers, removed at the end, so the
demo runs on any machine with the demo extra installed and touches nothing else (it never talks
to real AWS: the S3 endpoint is the embedded server and the credentials are fake).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from etcdops.config import Config, EncryptionConfig, LocalConfig, S3Config, S3Location
from etcdops.report import Reporter
from etcdops.units import format_size

PRIMARY_REGION, REPLICA_REGION = "us-east-1", "us-west-2"


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


def run_demo(reporter: Reporter, *, objects: int = 3000, keep: bool = False) -> DemoReport:
    """Run every step of the demo, then stop the servers and (unless keep) remove the files."""
    with ExitStack() as cleanup:
        workdir = cleanup.enter_context(_workdir(keep))
        demo = _Demo(workdir, reporter, cleanup, objects, DemoReport(str(workdir), keep))
        demo.run()
        return demo.report


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="etcdops-demo-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _fake_aws_credentials() -> Iterator[None]:
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ.update(AWS_ACCESS_KEY_ID="etcdops-demo", AWS_SECRET_ACCESS_KEY="etcdops-demo")
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


class _Demo:
    def __init__(
        self, workdir: Path, reporter: Reporter, cleanup: ExitStack, objects: int,
        report: DemoReport,
    ) -> None:
        self.workdir = workdir
        self.reporter = reporter
        self.cleanup = cleanup
        self.objects = objects
        self.report = report
        self.config = Config(cluster="demo", local=LocalConfig(dir=workdir / "backups"))
        self.backup_id = ""

    def run(self) -> None:
        for name, action in (
            ("start etcd", self.start_etcd),
            ("start S3", self.start_s3),
            ("load objects", self.load_objects),
            ("generate key", self.generate_key),
            ("snapshot save", self.save),
            ("snapshot list", self.list_backups),
            ("snapshot status", self.status),
            ("snapshot fetch", self.fetch),
        ):
            started = time.monotonic()
            detail = action()
            self.report.steps.append(DemoStep(name, round(time.monotonic() - started, 3), detail))
            self.reporter.event(f"{name}: {detail}")

    def _configure(self, **changes: object) -> None:
        import dataclasses

        self.config = dataclasses.replace(self.config, **changes)

    def start_etcd(self) -> str:
        from etcdops.etcd.local import LocalCluster

        cluster = LocalCluster.single(self.workdir / "etcd")
        self.cleanup.callback(cluster.stop)
        cluster.start()
        self._configure(etcd=cluster.etcd_config())
        return f"single member at {cluster.client_urls[0]}"

    def start_s3(self) -> str:
        from moto.server import ThreadedMotoServer

        from etcdops.stores.s3 import S3Store

        self.cleanup.enter_context(_fake_aws_credentials())
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self.cleanup.callback(server.stop)
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        replica = S3Location("etcdops-demo-replica", REPLICA_REGION, endpoint_url=endpoint)
        s3 = S3Config("etcdops-demo", PRIMARY_REGION, "backups/", endpoint, replica=replica)
        for location, name in ((s3, "primary"), (replica, "replica")):
            S3Store(location, name).create_bucket()
        self._configure(s3=s3)
        return (
            f"S3 server at {endpoint}: bucket {s3.bucket} in {PRIMARY_REGION} (primary), "
            f"{replica.bucket} in {REPLICA_REGION} (replica)"
        )

    def load_objects(self) -> str:
        from etcdops.demo.sample import load_kubernetes_objects
        from etcdops.etcd.session import EtcdSession

        with EtcdSession(self.config.etcd) as session:
            counts = load_kubernetes_objects(session, self.objects)
        listing = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        return f"{sum(counts.values())} Kubernetes objects ({listing})"

    def generate_key(self) -> str:
        from etcdops.crypto.keys import generate_identity_file

        identity_file = self.workdir / "identity.txt"
        recipient = generate_identity_file(identity_file)
        self._configure(
            encryption=EncryptionConfig(recipients=(str(recipient),), identity_file=identity_file)
        )
        return f"age identity {identity_file}, recipient {recipient}"

    def save(self) -> str:
        from etcdops.backup.save import save_snapshot

        result = save_snapshot(self.config, self.reporter)
        manifest = result.manifest
        self.backup_id = manifest.id
        return (
            f"backup {manifest.id} at revision {manifest.etcd.revision}: "
            f"{format_size(manifest.snapshot_size)} snapshot stored as "
            f"{format_size(manifest.object_size)} (zstd + age) in {', '.join(result.stored)}"
        )

    def list_backups(self) -> str:
        from etcdops.backup.catalog import list_backups
        from etcdops.stores.configured import open_stores

        listing = list_backups(open_stores(self.config), self.config.cluster)
        return "; ".join(
            f"{v.manifest.id} verified in {', '.join(v.verified_in)}"
            for v in listing.survey.backups
        )

    def status(self) -> str:
        from etcdops.backup.readback import snapshot_status

        result = snapshot_status(self.config, self.backup_id, self.reporter, store="replica")
        return (
            f"read from the {result.store} region: integrity ok "
            f"({', '.join(result.checks)}), {result.keys} keys"
        )

    def fetch(self) -> str:
        from etcdops.backup.readback import fetch_snapshot

        out = self.workdir / "restore.db"
        fetch_snapshot(self.config, self.backup_id, out, self.reporter)
        return f"plain snapshot for etcdutl at {out}"

