"""The whole job on an embedded default: a throwaway three-member etcd and S3 in two regions,
Kubernetes-shaped objects, an encrypted backup in every store, checked and fetched back; then a
disaster (every member killed, its data dir gone, the primary region down) and the five-step
`dr run` that recovers from the replica region, timed against the 5- and 10-minute targets;
then, with the primary region back, the journal and a point-in-time restore of a namespace
deleted by mistake (etcdops.demo.rewind).

Everything lives in one temporary directory and in-process servers, removed at the end, so the
demo runs on any machine with the demo extra installed and touches nothing else (it never talks
to real AWS: the S3 endpoint is the embedded server and the credentials are fake).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from etcdops.config import Config, EncryptionConfig, LocalConfig, S3Config, S3Location
from etcdops.report import Reporter
from etcdops.units import format_duration, format_size

if TYPE_CHECKING:
    from etcdops.demo.disaster import Keyspace
    from etcdops.demo.rewind import RewindReport
    from etcdops.etcd.local import LocalCluster
    from etcdops.recovery.report import RecoveryReport

PRIMARY_REGION, REPLICA_REGION = "us-east-1", "us-west-2"


@dataclass
class DemoStep:
    name: str
    seconds: float
    detail: str
    facts: dict[str, object] = field(default_factory=dict)  # what the detail says, as data


@dataclass
class DemoReport:
    workdir: str
    kept: bool
    steps: list[DemoStep] = field(default_factory=list)
    recovery: RecoveryReport | None = None  # dr run's own report
    rewind: RewindReport | None = None  # the point-in-time restore's

    def as_dict(self) -> dict[str, object]:
        """The JSON form of the report."""
        return {
            "workdir": self.workdir,
            "kept": self.kept,
            "steps": [vars(step) for step in self.steps],
            "total_seconds": round(sum(step.seconds for step in self.steps), 3),
            "recovery": None if self.recovery is None else self.recovery.as_dict(),
            "rewind": None if self.rewind is None else self.rewind.as_dict(),
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
        self.s3_endpoint = ""
        self.cluster: LocalCluster | None = None
        self.after_backup: dict[bytes, bytes] = {}
        self.before: Keyspace | None = None
        self.revision_before = 0

    def run(self) -> None:
        from etcdops.demo.rewind import Rewind

        self._run_steps((
            ("start etcd", self.start_etcd),
            ("start S3", self.start_s3),
            ("compact", self.compact),
            ("load objects", self.load_objects),
            ("generate key", self.generate_key),
            ("snapshot save", self.save),
            ("snapshot list", self.list_backups),
            ("snapshot status", self.status),
            ("snapshot fetch", self.fetch),
            ("after the backup", self.write_after_backup),
            ("disaster", self.disaster),
            ("dr run", self.recover),
            ("check", self.check),
            ("primary back", self.primary_back),
        ))
        rewind = Rewind(self.workdir / "rewind", self.config, self.objects, self.reporter,
                        self.cleanup)
        self.report.rewind = rewind.report
        self._run_steps(rewind.steps())

    def _run_steps(self, steps: Iterable[tuple[str, Callable[[], object]]]) -> None:
        for name, action in steps:
            started = time.monotonic()
            outcome = action()
            detail, facts = outcome if isinstance(outcome, tuple) else (outcome, {})
            seconds = round(time.monotonic() - started, 3)
            self.report.steps.append(DemoStep(name, seconds, detail, facts))
            self.reporter.event(f"{name}: {detail}")

    def _configure(self, **changes: object) -> None:
        self.config = dataclasses.replace(self.config, **changes)

    def start_etcd(self) -> str:
        from etcdops.etcd.local import LocalCluster

        self.cluster = LocalCluster.three(self.workdir / "etcd")
        self.cleanup.callback(self.cluster.stop)
        self.cluster.start()
        self._configure(etcd=self.cluster.etcd_config())
        return f"three members at {', '.join(self.cluster.client_urls)}"

    def start_s3(self) -> str:
        from moto.server import ThreadedMotoServer

        from etcdops.stores.s3 import S3Store

        self.cleanup.enter_context(_fake_aws_credentials())
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self.cleanup.callback(server.stop)
        host, port = server.get_host_and_port()
        endpoint = self.s3_endpoint = f"http://{host}:{port}"
        replica = S3Location("etcdops-demo-replica", REPLICA_REGION, endpoint_url=endpoint)
        s3 = S3Config("etcdops-demo", PRIMARY_REGION, "backups/", endpoint, replica=replica)
        for location, name in ((s3, "primary"), (replica, "replica")):
            S3Store(location, name).create_bucket()
        self._configure(s3=s3)
        return (
            f"S3 server at {endpoint}: bucket {s3.bucket} in {PRIMARY_REGION} (primary), "
            f"{replica.bucket} in {REPLICA_REGION} (replica)"
        )

    def compact(self) -> str:
        from etcdops.etcd.session import EtcdSession
        from etcdops.maintenance.compaction import compact

        # the job of every 5 minutes; its samples also tell a restore how fast etcd writes
        with EtcdSession(self.config.etcd) as session:
            result = compact(session, self.config.compaction)
        return f"{result.reason}; sample of revision {result.current_revision} kept"

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


    def write_after_backup(self) -> str:
        from etcdops.demo.disaster import written_after_backup
        from etcdops.etcd.session import EtcdSession

        self.after_backup = written_after_backup()
        with EtcdSession(self.config.etcd) as session:
            session.put_many(list(self.after_backup.items()))
        return (
            f"{' and '.join(_kube_names(self.after_backup))} applied: newer than the backup, "
            "so lost with the disaster until their controllers write them again"
        )

    def disaster(self) -> tuple[str, dict[str, object]]:
        from etcdops.demo.disaster import destroy, keyspace
        from etcdops.etcd.local import free_port
        from etcdops.etcd.session import EtcdSession

        assert self.cluster is not None and self.config.s3 is not None
        with EtcdSession(self.config.etcd) as session:
            self.before = keyspace(session)
            self.revision_before = session.status(self.cluster.client_urls[0]).revision
        removed = destroy(self.cluster)
        # the hosts' own disk held the local copies of the backups
        shutil.rmtree(self.config.local.dir)
        # nothing listens there: the primary region refuses every connection
        dead = f"http://127.0.0.1:{free_port()}"
        self._configure(s3=dataclasses.replace(self.config.s3, endpoint_url=dead))
        return (
            "every member killed at once (SIGKILL) and its data dir removed, the local backups "
            f"lost with the hosts, the primary region ({PRIMARY_REGION}) unreachable",
            {"keys_before": self.before.keys, "revision_before": self.revision_before,
             "removed": [str(path) for path in removed], "primary_endpoint": dead},
        )

    def recover(self) -> tuple[str, dict[str, object]]:
        from etcdops.demo.disaster import recovery_plan, start_scripts
        from etcdops.demo.kubelets import Simulator
        from etcdops.demo.sample import sample_nodes
        from etcdops.etcd.local import stop_launched
        from etcdops.recovery.run import run_recovery

        assert self.cluster is not None
        nodes = sample_nodes(self.objects)
        scripts = start_scripts(self.cluster)
        # the start commands leave the members running detached: stopped on every way out
        for _, pid_file in scripts:
            self.cleanup.callback(stop_launched, pid_file)
        plan_path = self.workdir / "dr-plan.toml"
        plan_path.write_text(recovery_plan(
            self.cluster, [script for script, _ in scripts], self.backup_id, len(nodes),
            list(self.after_backup),
        ))
        with Simulator(
            self.cluster.etcd_config(), nodes, self.reporter, recreate=self.after_backup
        ) as simulated:
            report = run_recovery(self.config, plan_path, self.reporter)
        self.report.recovery = report
        if report.failure is not None:
            raise report.failure
        verdicts = {record.name: record.verdict for record in report.steps}
        ok = sum(verdict == "ok" for name, verdict in verdicts.items() if name != "stop")
        window = report.data_loss_window
        detail = (
            f"{ok} of 5 steps ok, reading the {report.store} store: restore "
            f"{_against(report.restore_time.seconds, report.restore_time.target)}, recovery "
            f"{_against(report.recovery_time.seconds, report.recovery_time.target)}, "
            f"data-loss window {'unknown' if window is None else format_duration(window)}"
        )
        return detail, {
            "verdicts": verdicts, "store": report.store, "plan": str(plan_path),
            "simulated": simulated.stats().as_dict(),
        }

    def check(self) -> tuple[str, dict[str, object]]:
        from etcdops.demo.disaster import keyspace
        from etcdops.errors import IntegrityError
        from etcdops.etcd.session import EtcdSession

        assert self.cluster is not None and self.before is not None
        with EtcdSession(self.cluster.etcd_config()) as session:
            after = keyspace(session)
            # a watch resumed from before the disaster must be told to list afresh
            old_compacted = not session.readable_at(self.revision_before)
        if after != self.before:
            raise IntegrityError(
                f"the recovered cluster holds {after.keys} keys, not the {self.before.keys} "
                "it held before the disaster (or other ones)",
                f"run the demo with --keep and look at {self.workdir}",
            )
        assert self.report.recovery is not None
        restored_at = (self.report.recovery.revision or {}).get("after_restore")
        revision = (
            f"restored at revision {restored_at}, past {self.revision_before} before the "
            "disaster" + (", which a watch is told was compacted" if old_compacted else "")
        )
        return (
            f"{after.keys} keys, the same keys as before the disaster (leases and pods "
            f"rewritten by their kubelets since); {revision}",
            {"keys_before": self.before.keys, "keys_after": after.keys,
             "same_keys": after == self.before, "revision_before": self.revision_before,
             "restored_at": restored_at, "old_revision_compacted": old_compacted},
        )

    def primary_back(self) -> str:
        # the point-in-time scene journals to every store: the region outage is over
        assert self.config.s3 is not None
        self._configure(s3=dataclasses.replace(self.config.s3, endpoint_url=self.s3_endpoint))
        return (
            f"the primary region ({PRIMARY_REGION}) answers again; the hosts' new disks hold "
            "no backup yet"
        )


def _against(seconds: float | None, target: float) -> str:
    taken = "not measured" if seconds is None else format_duration(seconds)
    verdict = "" if seconds is None else (" met" if seconds <= target else " MISSED")
    return f"{taken} (target {format_duration(target)}{verdict})"


def _kube_names(objects: dict[bytes, bytes]) -> list[str]:
    return [key.decode().removeprefix("/registry/") for key in objects]
