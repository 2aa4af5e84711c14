"""Shared fixtures, one section per subsystem; add new sections at the end.

Real parts only: etcd runs as real processes on loopback (etcdops.etcd.local). Nothing that a
test can change is session-scoped; every process is stopped at teardown, even after a failure.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import etcd3
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdops.config import Config, EncryptionConfig, EtcdConfig, LocalConfig, S3Location
from etcdops.demo.sample import kubernetes_objects, load_kubernetes_objects
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.client import EtcdSession
from etcdops.etcd.local import LocalCluster, TLSFiles, free_port
from tests.faultproxy import FaultProxy, Faults
from tests.s3proxy import S3FaultProxy

# --- etcd clusters -----------------------------------------------------------------------------

SAMPLE_OBJECTS = 300


class LoadedEtcd(NamedTuple):
    cluster: LocalCluster
    objects: dict[bytes, bytes]  # exactly what was written: key -> value


class AuthEtcd(NamedTuple):
    cluster: LocalCluster
    config: EtcdConfig  # user root, password from a file
    password: str


@pytest.fixture
def etcd_single(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running one-member cluster of its own."""
    with LocalCluster.single(tmp_path / "etcd") as cluster:
        yield cluster


@pytest.fixture
def etcd_cluster3(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running three-member cluster of its own."""
    with LocalCluster.three(tmp_path / "etcd3") as cluster:
        yield cluster


@pytest.fixture
def etcd_config(etcd_single: LocalCluster) -> EtcdConfig:
    """Configuration that reaches etcd_single, with short loopback timeouts."""
    return etcd_single.etcd_config()


@pytest.fixture
def etcd_loaded(etcd_single: LocalCluster) -> LoadedEtcd:
    """etcd_single holding SAMPLE_OBJECTS Kubernetes-shaped objects (seed 0)."""
    with EtcdSession(etcd_single.etcd_config()) as session:
        load_kubernetes_objects(session, SAMPLE_OBJECTS, seed=0)
    return LoadedEtcd(etcd_single, dict(kubernetes_objects(SAMPLE_OBJECTS, seed=0)))


@pytest.fixture
def etcd3_client() -> Iterator[Callable[[str], etcd3.Etcd3Client]]:
    """Opens python-etcd3 clients by URL (to check etcdops against the library); closes them."""
    clients: list[etcd3.Etcd3Client] = []

    def connect(url: str) -> etcd3.Etcd3Client:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        # snapshots and padded sample values exceed grpc's default 4 MiB receive limit
        options = [("grpc.max_receive_message_length", -1)]
        client = etcd3.client(host=host, port=port, timeout=10, grpc_options=options)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def unreachable_endpoint() -> str:
    """An http:// endpoint on a loopback port where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def etcd_auth(etcd_single: LocalCluster, tmp_path: Path) -> AuthEtcd:
    """etcd_single with authentication enabled (user root), set up the way operators do it."""
    password = "s3cret-for-tests"
    etcdctl = [str(find_binary("etcdctl")), f"--endpoints={etcd_single.client_urls[0]}"]
    for command in (["user", "add", f"root:{password}"], ["user", "grant-role", "root", "root"]):
        subprocess.run(etcdctl + command, check=True, capture_output=True, timeout=30)
    subprocess.run(etcdctl + ["auth", "enable"], check=True, capture_output=True, timeout=30)
    password_file = tmp_path / "etcd-password"
    password_file.write_text(password + "\n")
    config = etcd_single.etcd_config(user="root", password_file=password_file)
    return AuthEtcd(etcd_single, config, password)


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (read-only)."""
    directory = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcdops test CA")])
    ca_cert = (
        _certificate_builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_pem(directory / "ca.crt", ca_cert)
    server_cert, server_key = _leaf(directory, "server", ca_cert, ca_key, server=True)
    client_cert, client_key = _leaf(directory, "client", ca_cert, ca_key, server=False)
    return TLSFiles(
        ca=directory / "ca.crt",
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
    )


@pytest.fixture
def etcd_tls(tmp_path: Path, tls_files: TLSFiles) -> Iterator[LocalCluster]:
    """A running one-member cluster serving TLS only, requiring client certificates."""
    with LocalCluster.single(tmp_path / "etcd-tls", tls=tls_files) as cluster:
        yield cluster


def _certificate_builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _leaf(
    directory: Path,
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"etcdops test {name}")])
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _certificate_builder(subject, ca_cert.subject, key.public_key()).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    _write_pem(directory / f"{name}.crt", builder.sign(ca_key, hashes.SHA256()))
    key_path = directory / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return directory / f"{name}.crt", key_path


def _write_pem(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


# --- backups -----------------------------------------------------------------------------------


class AgeIdentity(NamedTuple):
    path: Path  # identity file as `etcdops keys generate` writes it
    recipient: str


@pytest.fixture
def age_identity(tmp_path: Path) -> AgeIdentity:
    """A fresh age identity file and its recipient."""
    from etcdops.crypto.keys import generate_identity_file

    path = tmp_path / "keys" / "identity.txt"
    path.parent.mkdir()
    return AgeIdentity(path, str(generate_identity_file(path)))


@pytest.fixture
def backup_config(etcd_loaded: LoadedEtcd, age_identity: AgeIdentity, tmp_path: Path) -> Config:
    """Configuration that backs etcd_loaded up into a local store in tmp_path."""
    return Config(
        cluster="test",
        etcd=etcd_loaded.cluster.etcd_config(),
        encryption=EncryptionConfig(
            recipients=(age_identity.recipient,), identity_file=age_identity.path
        ),
        local=LocalConfig(dir=tmp_path / "backups"),
    )


@pytest.fixture
def backup_toml(backup_config: Config, tmp_path: Path) -> Path:
    """backup_config as the etcdops.toml an operator would write."""
    path = tmp_path / "etcdops.toml"
    endpoints = ", ".join(f'"{e}"' for e in backup_config.etcd.endpoints)
    path.write_text(
        f'cluster = "{backup_config.cluster}"\n'
        f"[etcd]\nendpoints = [{endpoints}]\n"
        f'[encryption]\nrecipients = ["{backup_config.encryption.recipients[0]}"]\n'
        f'identity_file = "{backup_config.encryption.identity_file}"\n'
        f'[local]\ndir = "{backup_config.local.dir}"\n'
    )
    return path


@pytest.fixture
def etcd_proxy(etcd_loaded: LoadedEtcd) -> Iterator[Callable[[Faults], FaultProxy]]:
    """Starts loopback proxies in front of etcd_loaded that damage or slow what etcd sends."""
    host, port = etcd_loaded.cluster.client_urls[0].removeprefix("http://").split(":")
    proxies: list[FaultProxy] = []

    def start(faults: Faults) -> FaultProxy:
        proxies.append(FaultProxy(host, int(port), faults))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def slow_etcd_proxy(etcd_proxy: Callable[[Faults], FaultProxy]) -> FaultProxy:
    """A proxy to etcd_loaded that slows what etcd sends, so a save takes seconds."""
    return etcd_proxy(Faults(delay_per_chunk=0.5))


# --- maintenance -------------------------------------------------------------------------------

CHURN_KEYS = 100
CHURN_VALUE_SIZE = 16 * 1024
TINY_QUOTA = 16 * 1024 * 1024


@pytest.fixture
def etcd_churned3(
    etcd_cluster3: LocalCluster, etcd3_client: Callable[[str], etcd3.Etcd3Client]
) -> LocalCluster:
    """etcd_cluster3 after puts and deletes, compacted: megabytes of free pages on each member."""
    client = etcd3_client(etcd_cluster3.client_urls[0])
    keys = [f"/registry/configmaps/churn/cm-{index}".encode() for index in range(CHURN_KEYS)]
    with EtcdSession(etcd_cluster3.etcd_config()) as session:
        for _ in range(5):
            for start in range(0, CHURN_KEYS, 25):
                session.put_many([(key, b"x" * CHURN_VALUE_SIZE) for key in keys[start:start + 25]])
    for key in keys[::2]:
        client.delete(key)
    # history is in use until compacted; compaction turns it into free pages for defrag
    client.compact(client.get_response("/").header.revision, physical=True)
    wait_for_stable_sizes(etcd_cluster3)
    # bbolt frees the compacted pages at the next write's commit: until then they count in use
    client.put("/registry/configmaps/churn/after-compaction", "x")
    wait_for_stable_sizes(etcd_cluster3)
    return etcd_cluster3


def wait_for_stable_sizes(cluster: LocalCluster, timeout: float = 15.0) -> None:
    """Wait until no member's db size changes: each applies a compaction on its own time."""
    deadline = time.monotonic() + timeout
    previous = None
    with EtcdSession(cluster.etcd_config()) as session:
        while time.monotonic() < deadline:
            current = [(s.db_size, s.db_size_in_use) for s in session.statuses()]
            if current == previous:
                return
            previous = current
            time.sleep(0.2)  # longer than etcd's 100 ms backend commit interval
    raise AssertionError(f"db sizes still changing after {timeout}s: {previous}")


@pytest.fixture
def etcd_tiny_quota(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running one-member cluster whose --quota-backend-bytes is 16 MiB: NOSPACE is near."""
    with LocalCluster.single(tmp_path / "etcd-tiny", quota_backend_bytes=TINY_QUOTA) as cluster:
        yield cluster


def fill_until_nospace(client: etcd3.Etcd3Client) -> int:
    """Overwrite four keys with 512 KiB values until etcd refuses: returns the puts accepted."""
    value = b"n" * (512 * 1024)
    for count in range(4 * TINY_QUOTA // len(value)):
        try:
            client.put(f"/registry/secrets/fill/s-{count % 4}", value)
        except grpc.RpcError as exc:  # python-etcd3 passes RESOURCE_EXHAUSTED through
            assert "database space exceeded" in exc.details(), exc
            return count
    raise AssertionError("etcd never raised NOSPACE")


# --- S3 (moto) ---------------------------------------------------------------------------------


class S3Env(NamedTuple):
    endpoint_url: str  # the moto server
    primary: S3Location  # bucket etcdops-primary in us-east-1, prefix "backups/"
    replica: S3Location  # bucket etcdops-replica in us-west-2, no prefix

    def client(self, region: str = "us-east-1") -> Any:
        """A plain boto3 S3 client on moto, to look at what a store wrote."""
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            region_name=region,
            endpoint_url=self.endpoint_url,
            config=BotoConfig(s3={"addressing_style": "path"}),
        )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server on a free loopback port for the session; its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials only: no profile, config file, instance role or endpoint from the host."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3(moto_server: str, aws_env: None) -> S3Env:
    """Empty moto with the primary bucket in us-east-1 and the replica bucket in us-west-2."""
    import urllib.request

    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    env = S3Env(
        moto_server,
        S3Location(bucket="etcdops-primary", region="us-east-1", prefix="backups/",
                   endpoint_url=moto_server),
        S3Location(bucket="etcdops-replica", region="us-west-2", endpoint_url=moto_server),
    )
    env.client("us-east-1").create_bucket(Bucket=env.primary.bucket)
    env.client("us-west-2").create_bucket(
        Bucket=env.replica.bucket,
        CreateBucketConfiguration={"LocationConstraint": "us-west-2"},
    )
    return env


@pytest.fixture
def s3_proxy(moto_server: str) -> Iterator[Callable[[], S3FaultProxy]]:
    """Starts S3 fault proxies in front of moto (point an S3Location's endpoint_url at .url)."""
    proxies: list[S3FaultProxy] = []

    def start() -> S3FaultProxy:
        proxies.append(S3FaultProxy(moto_server))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()
