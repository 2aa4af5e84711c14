"""Shared fixtures, one module per real component in tests/fixtures/; add new ones there.

Real parts only: etcd runs as real processes on loopback (etcdops.etcd.local), S3 is a moto
server. Nothing that a test can change is session-scoped; every process is stopped at teardown,
even after a failure.
"""

import os

# The suite reads `error: ...` and `warning: ...` lines from stderr, which is no terminal here:
# text logs unless a test asks for JSON ($ETCDOPS_LOG_FORMAT is etcdops.cli.logs')
os.environ["ETCDOPS_LOG_FORMAT"] = "text"

pytest_plugins = [
    "tests.fixtures.etcd",
    "tests.fixtures.tls",
    "tests.fixtures.s3",
    "tests.fixtures.proxies",
    "tests.fixtures.backups",
    "tests.fixtures.journal",
    "tests.fixtures.sshd",
]
