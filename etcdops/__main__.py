"""`python -m etcdops` is the same as the etcdops command."""

from etcdops.cli.main import run

run()
