"""What the recovery tests share: one backup of a real three-member cluster in every store (moto,
two regions) made once per module, the config and plan files that point `dr run` at it, start
commands that launch members in the background, and simulated kubelets."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from etcdops.backup.manifest import Manifest
from etcdops.backup.save import save_snapshot
from etcdops.config import Config, EncryptionConfig, LocalConfig, S3Config, S3Location
from etcdops.config.settings import BackupConfig
from etcdops.demo.sample import kubernetes_objects, load_kubernetes_objects
from etcdops.etcd.local import LocalCluster, LocalEtcd, stop_launched
from etcdops.etcd.session import EtcdSession
from etcdops.report import LogReporter
from etcdops.stores.configured import open_stores

OBJECTS = 300
PRIMARY, REPLICA = "dr-primary", "dr-replica"
ETCDOPS = str(Path(sys.executable).with_name("etcdops"))  # this venv's, as another host runs it
INCLUDED = b"kind: EncryptionConfiguration\nresources: []\n"


class SavedBackup(NamedTuple):
    """A backup of a three-member cluster that is now dead, its data dirs left in place."""

    cluster: LocalCluster  # stopped; its data dirs hold what it had (to be moved aside)
    config: Config  # local store, S3 primary (us-east-1) and replica (us-west-2) on moto
    manifest: Manifest
    objects: dict[bytes, bytes]  # exactly what the cluster held at the backup
    identity: Path
    included: Path  # a file [backup] include_files carried along
    moto: str


@pytest.fixture(scope="module")
def saved_backup(moto_server, tmp_path_factory) -> Iterator[SavedBackup]:
    """One backup per module, in every store; tests must not change it (a test that damages a
    copy puts it back)."""
    from etcdops.crypto.keys import generate_identity_file

    base = tmp_path_factory.mktemp("saved")
    with pytest.MonkeyPatch.context() as patch:
        fake_aws(patch, base)
        _buckets(moto_server)
        identity = base / "identity.txt"
        recipient = generate_identity_file(identity)
        included = base / "etc" / "encryption.yaml"
        included.parent.mkdir()
        included.write_bytes(INCLUDED)
        cluster = LocalCluster.three(base / "cluster")
        with cluster:
            with EtcdSession(cluster.etcd_config()) as session:
                load_kubernetes_objects(session, OBJECTS, seed=0)
            config = Config(
                cluster="drtest",
                etcd=cluster.etcd_config(),
                encryption=EncryptionConfig(recipients=(str(recipient),), identity_file=identity),
                local=LocalConfig(dir=base / "backups"),
                s3=S3Config(
                    bucket=PRIMARY, region="us-east-1", endpoint_url=moto_server,
                    max_attempts=1, connect_timeout=1.0,
                    replica=S3Location(bucket=REPLICA, region="us-west-2",
                                       endpoint_url=moto_server, max_attempts=1,
                                       connect_timeout=1.0),
                ),
                backup=BackupConfig(include_files=(str(included),)),
            )
            result = save_snapshot(config, LogReporter(), stores=open_stores(config))
            assert not result.failures, result.failures
        yield SavedBackup(cluster, config, result.manifest,
                          dict(kubernetes_objects(OBJECTS, seed=0)), identity, included,
                          moto_server)


def _buckets(endpoint: str, primary: str = PRIMARY, replica: str = REPLICA) -> None:
    import boto3
    from botocore.config import Config as BotoConfig

    for bucket, region in ((primary, "us-east-1"), (replica, "us-west-2")):
        client = boto3.client("s3", region_name=region, endpoint_url=endpoint,
                              config=BotoConfig(s3={"addressing_style": "path"}))
        extra = {} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}}
        client.create_bucket(Bucket=bucket, **extra)


def fake_aws(patch: pytest.MonkeyPatch, base: Path) -> None:
    """The environment that points boto3 at moto and nowhere else."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(base / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(base / "no-aws-credentials"),
    }.items():
        patch.setenv(name, value)


@pytest.fixture
def aws(saved_backup, monkeypatch, tmp_path):
    """The fake AWS environment of the saved backup, for this test (and the CLI it runs)."""
    fake_aws(monkeypatch, tmp_path)
    return saved_backup


def config_toml(
    path: Path, saved: SavedBackup, *, local_dir: Path, primary_url: str | None = None,
    identity: Path | None = None, extra: str = "",
) -> Path:
    """The operator's etcdops.toml for a recovery: this host's local store (often empty: the
    host lost its disk), the primary (or a URL where nothing answers) and the replica."""
    config = saved.config
    s3 = config.s3
    assert s3 is not None and s3.replica is not None
    path.write_text("\n".join([
        f'cluster = "{config.cluster}"',
        "[encryption]",
        f'recipients = ["{config.encryption.recipients[0]}"]',
        f'identity_file = "{identity or saved.identity}"',
        "[local]",
        f'dir = "{local_dir}"',
        "[s3]",
        f'bucket = "{s3.bucket}"', f'region = "{s3.region}"',
        f'endpoint_url = "{primary_url or s3.endpoint_url}"',
        "max_attempts = 1", 'connect_timeout = "1s"',
        "[s3.replica]",
        f'bucket = "{s3.replica.bucket}"', f'region = "{s3.replica.region}"',
        f'endpoint_url = "{s3.replica.endpoint_url}"',
        extra, "",
    ]))
    return path


@dataclasses.dataclass
class Member:
    """A member as a plan names it (exec "" = this host)."""

    name: str
    peer_url: str
    client_url: str
    data_dir: Path
    exec: str = ""
    etcdops: str | None = None

    @classmethod
    def of(cls, member: LocalEtcd, **changes: Any) -> Member:
        return dataclasses.replace(
            cls(member.name, member.peer_url, member.client_url, member.data_dir), **changes
        )


def _toml(value: Any) -> str:
    return json.dumps(str(value) if isinstance(value, Path) else value)


def plan_toml(
    path: Path,
    members: list[Member],
    *,
    start: list[str],
    stop: list[str] | None = None,
    targets: dict[str, str] | None = None,
    source: str = "auto",
    nodes_expect: int = 5,
    pods_min: float = 0.9,
    require_keys: tuple[str, ...] = ("/registry/namespaces/default",),
    check_timeout: str = "20s",
    start_timeout: str = "60s",
    files_to: Path | None = None,
    pods_command: str | None = None,
    checks_command: str | None = None,
    top: tuple[str, ...] = (),
) -> Path:
    """A plan of the issue's shape for these members; checks_command: steps 3-5 check that
    command alone (nothing writes to the restored cluster); top: more top-level keys."""
    lines = ['backup = "latest"', f"source = {_toml(source)}", *top, "[targets]"]
    lines += [f"{key} = {_toml(value)}" for key, value in (targets or {}).items()]
    for member in members:
        lines += ["[[members]]"] + [
            f"{key} = {_toml(getattr(member, key))}"
            for key in ("name", "peer_url", "client_url", "data_dir", "exec", "etcdops")
            if getattr(member, key) is not None
        ]
    checks = {
        "nodes": [f"expect = {nodes_expect}"],
        "pods": [f"min_updated = {pods_min}",
                 *([f"command = {_toml(pods_command)}"] if pods_command else [])],
        "controllers": [f"require_keys = {_toml(list(require_keys))}"],
    }
    if checks_command is not None:
        checks = {name: [f"command = {_toml(checks_command)}"] for name in checks}
    lines += [
        "[steps.stop]", f"commands = {_toml(stop or ['true'])}",
        "[steps.start]", f"commands = {_toml(start)}", f"timeout = {_toml(start_timeout)}",
    ]
    for name, keys in checks.items():
        lines += [f"[steps.{name}]", *keys, f"timeout = {_toml(check_timeout)}"]
    if files_to is not None:
        lines += ["[files]", f"to = {_toml(files_to)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Launcher:
    """Start commands that launch members in the background (pid files), stopped at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pid_files: list[Path] = []

    def command(self, member: LocalEtcd) -> str:
        pid_file = self.directory / f"{member.name}-{member.client_port}.pid"
        self.pid_files.append(pid_file)
        return member.shell_launch(pid_file)

    def commands(self, cluster: LocalCluster) -> list[str]:
        return [self.command(member) for member in cluster.members]

    def stop(self) -> None:
        for pid_file in self.pid_files:
            stop_launched(pid_file)


@pytest.fixture
def launcher(tmp_path) -> Iterator[Launcher]:
    launched = Launcher(tmp_path)
    yield launched
    launched.stop()


class Kubelets:
    """Simulated kubelets: once the restored cluster answers, they keep writing every node
    lease and pod again with the very value it had (so every key and value still equals what
    was backed up), as kubelets renew leases and report pod status after an outage."""

    def __init__(self, endpoints: list[str], objects: dict[bytes, bytes]) -> None:
        self.items = [
            (key, value) for key, value in objects.items()
            if key.startswith((b"/registry/leases/kube-node-lease/", b"/registry/pods/"))
        ]
        self.endpoints = tuple(endpoints)
        self.stopping = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, name="kubelets", daemon=True)

    def __enter__(self) -> Kubelets:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        from etcdops.config import EtcdConfig
        from etcdops.errors import EtcdopsError

        config = EtcdConfig(endpoints=self.endpoints, dial_timeout=0.5, command_timeout=5.0)
        while not self.stopping.is_set():
            try:
                with EtcdSession(config) as session:
                    for start in range(0, len(self.items), 100):
                        session.put_many(self.items[start:start + 100])
                self.rounds += 1
            except EtcdopsError:
                pass  # not up yet: kubelets retry
            self.stopping.wait(0.5)


def rebuilt_hosts(base: Path) -> LocalCluster:
    """Members whose hosts were rebuilt: the parent of each data dir, and nothing in it."""
    cluster = LocalCluster.three(base)
    for member in cluster.members:
        member.data_dir.parent.mkdir(parents=True)
    return cluster


def listing(*bases: Path) -> list[str]:
    """Every path under the bases: what 'nothing changed' compares."""
    return sorted(str(path) for base in bases for path in base.rglob("*"))


def waiting_command(marker: Path, go: Path) -> str:
    """A start command that says it is running (its pid in marker), then waits for go."""
    m, g = shlex.quote(str(marker)), shlex.quote(str(go))
    return f"echo $$ > {m}; while [ ! -e {g} ]; do sleep 0.05; done"
