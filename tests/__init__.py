"""Tests run grpc as etcdops does: its settings must be in place before anything imports grpc,
and pytest imports this package before conftest and every test module."""

from etcdops.etcd.rpc import prepare_grpc_environment

prepare_grpc_environment()
