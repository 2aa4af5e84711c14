"""S3 for the benchmarks: moto's server in a process of its own, a bucket in each of two regions,
and the fake credentials that reach the tools under test and nothing of this host's AWS setup.

moto runs in its own process so that its CPU (moto is pure Python, and on a 2-core machine it
competes with etcd and the tool under test) can be read from /proc apart from the benchmark's
and the tools', for every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from common import ChildFailed
from machine import memory_mib, process_cpu

PRIMARY_REGION, REPLICA_REGION = "us-east-1", "us-west-2"
PRIMARY_BUCKET, REPLICA_BUCKET = "etcdops-bench-east", "etcdops-bench-west"
ETCDOPS_PREFIX = "etcdops/"
FAKE_KEY = "testing"

# Run by moto's own interpreter as a child: the port on stdout, then serve until stdin closes
# (the benchmark exiting, however it exits, closes it).
_MOTO_SERVER = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


class MotoServer:
    """moto's S3 in a child process of its own: its CPU and memory are then readable apart."""

    def __init__(self, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with log.open("wb") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _MOTO_SERVER], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
            )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"moto did not start: see {log}")
        self.url = f"http://127.0.0.1:{int(line)}"
        self.pid = self._process.pid

    def cpu(self) -> float:
        """CPU seconds moto has used so far, every thread included."""
        return process_cpu(self.pid)

    def peak_rss_mib(self) -> float:
        """moto's peak RSS so far (VmHWM): it keeps objects in memory while it assembles them."""
        memory = memory_mib(self.pid)
        return 0.0 if memory is None else memory[0]

    def stop(self) -> None:
        """Close its stdin (it stops serving and exits); kill it if it does not."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class Buckets:
    """The two buckets, reached from this process with the fake credentials passed explicitly.

    A botocore session of its own, pointed at config files that do not exist, so that nothing of
    this host's AWS setup (profiles, endpoints, credentials) applies here either.
    """

    def __init__(self, endpoint: str, missing: Path) -> None:
        import botocore.session
        from botocore.config import Config

        session = botocore.session.Session()
        session.set_config_variable("config_file", str(missing / "config"))
        session.set_config_variable("credentials_file", str(missing / "credentials"))
        session.set_credentials(FAKE_KEY, FAKE_KEY)
        config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard"})
        self.clients = {
            bucket: session.create_client("s3", region_name=region, endpoint_url=endpoint,
                                          config=config)
            for bucket, region in ((PRIMARY_BUCKET, PRIMARY_REGION),
                                   (REPLICA_BUCKET, REPLICA_REGION))
        }

    def create(self) -> None:
        """One bucket in each region, as the etcdops demo has them."""
        self.clients[PRIMARY_BUCKET].create_bucket(Bucket=PRIMARY_BUCKET)
        self.clients[REPLICA_BUCKET].create_bucket(
            Bucket=REPLICA_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": REPLICA_REGION},
        )

    def size(self, bucket: str, key: str) -> int | None:
        """The object's size, or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            return int(self.clients[bucket].head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError:
            return None

    def expect(self, key: str, size: int, side: str) -> None:
        """Both regions hold key at size: a run that did not upload must not count as fast."""
        for bucket in self.clients:
            found = self.size(bucket, key)
            if found != size:
                raise ChildFailed(f"{side}: s3://{bucket}/{key} holds {found}, expected {size}")

    def time_copy(self, key: str, cpu: Callable[[], float]) -> dict[str, float]:
        """One CopyObject primary -> replica as etcdops makes it: moto's share of the replica."""
        before_cpu, started = cpu(), time.perf_counter()
        self.clients[REPLICA_BUCKET].copy_object(
            Bucket=REPLICA_BUCKET, Key="probe/copy",
            CopySource={"Bucket": PRIMARY_BUCKET, "Key": key}, ChecksumAlgorithm="SHA256",
        )
        return {"wall_s": time.perf_counter() - started, "moto_cpu_s": cpu() - before_cpu}

    def clean(self) -> int:
        """Delete every object and abort every multipart upload in both buckets; the count."""
        removed = 0
        for bucket, client in self.clients.items():
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=item["Key"])
                    removed += 1
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                for upload in page.get("Uploads", []):
                    client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed


def fake_aws_variables(missing: Path) -> dict[str, str]:
    """The fake credentials, and config files that do not exist: what the tools under test get
    in place of this host's AWS settings."""
    return {
        "AWS_ACCESS_KEY_ID": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_KEY,
        "AWS_CONFIG_FILE": str(missing / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(missing / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def fake_aws_env(env: str, missing: Path) -> list[str]:
    """env(1) in front of a command: fake credentials, and none of this host's AWS settings.

    env execs the command, so wait4 still measures the command itself.
    """
    unset = [arg for name in sorted(os.environ) if name.startswith("AWS_") for arg in ("-u", name)]
    fake = fake_aws_variables(missing)
    return [env, *unset, *(f"{k}={v}" for k, v in fake.items())]


def add_s3_sections(config: Path, endpoint: str) -> str:
    """Give common.write_config's file both regions; return its age recipient."""
    with config.open("a") as out:
        for table, bucket, region in (("s3", PRIMARY_BUCKET, PRIMARY_REGION),
                                      ("s3.replica", REPLICA_BUCKET, REPLICA_REGION)):
            out.write(
                f"\n[{table}]\nbucket = {json.dumps(bucket)}\nregion = {json.dumps(region)}\n"
                f"prefix = {json.dumps(ETCDOPS_PREFIX)}\nendpoint_url = {json.dumps(endpoint)}\n"
            )
    parsed = tomllib.loads(config.read_text())
    return str(parsed["encryption"]["recipients"][0])



def moto_with_buckets(workdir: Path) -> tuple[MotoServer, Buckets]:
    """A moto server with both regions' buckets, announced; stopped again if they cannot be
    made."""
    moto = MotoServer(workdir / "moto.log")
    buckets = Buckets(moto.url, workdir / "no-aws-config")
    try:
        buckets.create()
    except BaseException:
        moto.stop()
        raise
    print(f"  moto S3 at {moto.url} (pid {moto.pid}): {PRIMARY_BUCKET} in {PRIMARY_REGION}, "
          f"{REPLICA_BUCKET} in {REPLICA_REGION}", flush=True)
    return moto, buckets
