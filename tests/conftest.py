"""Shared fixtures, one section per subsystem; add new sections at the end.

Real parts only: etcd runs as real processes on loopback (etcdops.etcd.local). Nothing that a
test can change is session-scoped; every process is stopped at teardown, even after a failure.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import etcd3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdops.config import Config, EncryptionConfig, EtcdConfig, LocalConfig
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.client import EtcdSession
from etcdops.etcd.local import LocalCluster, TLSFiles, free_port
from etcdops.sample import kubernetes_objects, load_kubernetes_objects
from tests.faultproxy import FaultProxy, Faults

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
    from etcdops.keys import generate_identity_file

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
def slow_etcd_proxy(etcd_loaded: LoadedEtcd) -> Iterator[FaultProxy]:
    """A loopback proxy to etcd_loaded that slows what etcd sends, so a save takes seconds."""
    host, port = etcd_loaded.cluster.client_urls[0].removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port), Faults(delay_per_chunk=0.5))
    yield proxy
    proxy.close()
