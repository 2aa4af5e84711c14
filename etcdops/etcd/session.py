"""EtcdSession: one object for every etcd call etcdops makes, over shared connections.

The calls live by etcd service (kv.py, maintenance.py, cluster.py, lease.py, watch.py), the
connections, auth and error translation in connection.py; election.py builds the election of a
job's taker on the KV and Lease calls.
"""

from __future__ import annotations

from etcdops.etcd.cluster import ClusterCalls
from etcdops.etcd.election import ElectionCalls
from etcdops.etcd.kv import KVCalls
from etcdops.etcd.lease import LeaseCalls
from etcdops.etcd.maintenance import MaintenanceCalls
from etcdops.etcd.watch import WatchCalls


class EtcdSession(KVCalls, MaintenanceCalls, ClusterCalls, ElectionCalls, LeaseCalls, WatchCalls):
    """Connections to the configured etcd endpoints, opened on first use and closed together."""
