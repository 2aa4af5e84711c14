"""The simulated kubelets and controllers, on a real three-member cluster that comes and goes."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etcdops.demo.kubelets import Simulator, SimulatorStats
from etcdops.demo.sample import (
    NODE_LEASE_PREFIX,
    POD_PREFIX,
    load_kubernetes_objects,
    sample_nodes,
)
from etcdops.errors import ConfigError
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from tests.fixtures.waiting import wait_for

OBJECTS = 600
DEPLOYMENT = b"/registry/deployments/production/web-app"


class Events:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def progress(self, description, total):  # pragma: no cover - the simulator shows no bars
        raise AssertionError("no progress bars expected")

    def event(self, message: str) -> None:
        self.lines.append(message)



def read(cluster: LocalCluster, prefix: bytes) -> dict[bytes, tuple[dict, int]]:
    """key -> (decoded value, mod revision), read with etcd3's view of the revisions."""
    import etcd3

    url = cluster.client_urls[0].removeprefix("http://")
    host, port = url.split(":")
    client = etcd3.client(host=host, port=int(port), timeout=10)
    try:
        return {
            meta.key: (json.loads(value), meta.mod_revision)
            for value, meta in client.get_prefix(prefix)
        }
    finally:
        client.close()


@pytest.fixture
def cluster(tmp_path: Path):
    """A three-member cluster, built but not started: the simulator must wait for it."""
    cluster = LocalCluster.three(tmp_path / "etcd")
    yield cluster
    cluster.stop()


def test_kubelets_and_controllers_wait_for_the_cluster_then_do_their_work(cluster) -> None:
    nodes = sample_nodes(OBJECTS)
    events = Events()
    deployment = json.dumps({"kind": "Deployment", "metadata": {"name": "web-app"}}).encode()
    simulator = Simulator(
        cluster.etcd_config(), nodes, events, recreate={DEPLOYMENT: deployment}, interval=0.5
    )
    cluster.start()
    with EtcdSession(cluster.etcd_config()) as session:
        load_kubernetes_objects(session, OBJECTS)
        loaded = session.status(cluster.client_urls[0]).revision
    cluster.stop()  # down, as during a recovery's restore
    before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with simulator:
        time_down = time.monotonic()
        while time.monotonic() - time_down < 1.0:  # the threads retry against a dead cluster
            assert simulator.stats() == SimulatorStats(0, 0, ())
            time.sleep(0.1)
        cluster.start()

        def caught_up() -> bool:
            written = {**read(cluster, NODE_LEASE_PREFIX), **read(cluster, POD_PREFIX)}
            return all(revision > loaded for _, revision in written.values())

        wait_for(caught_up, "every lease renewed and every pod's status written")
    leases = read(cluster, NODE_LEASE_PREFIX)
    pods = read(cluster, POD_PREFIX)
    assert len(nodes) > 10 and len(leases) == len(nodes)
    for _key, (lease, revision) in leases.items():
        assert revision > loaded and lease["spec"]["renewTime"] > before
        assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"  # the restored body
    assert pods and all(revision > loaded for _, revision in pods.values())
    for pod, _ in pods.values():
        assert "resourceVersion" not in pod["metadata"]
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True" and ready["lastTransitionTime"] >= before[:19]
    # missing from the restored data: put back once, then left alone
    assert read(cluster, DEPLOYMENT)[DEPLOYMENT][0]["kind"] == "Deployment"
    assert simulator.stats().recreated == (DEPLOYMENT,)
    assert simulator.stats().pods_updated >= len(pods)  # again after a failed write, if any
    assert any("kubelets of" in line and "renew their leases" in line for line in events.lines)
    assert any(line == f"controllers recreated {DEPLOYMENT.decode()}" for line in events.lines)


def test_a_missing_lease_is_created_and_other_pods_are_left_alone(cluster) -> None:
    cluster.start()
    with EtcdSession(cluster.etcd_config()) as session:
        load_kubernetes_objects(session, OBJECTS)
        session.delete_keys([NODE_LEASE_PREFIX + b"node-1"])
        loaded = session.status(cluster.client_urls[0]).revision
    nodes = sample_nodes(OBJECTS)[:2]
    with Simulator(cluster.etcd_config(), nodes, Events(), interval=0.2) as simulator:
        wait_for(lambda: simulator.stats().heartbeats >= 1 and simulator.stats().pods_updated,
                 "a heartbeat and the pods' status")
    leases = read(cluster, NODE_LEASE_PREFIX)
    created = leases[NODE_LEASE_PREFIX + b"node-1"][0]
    assert created["spec"]["holderIdentity"] == "node-1"
    assert created["spec"]["leaseDurationSeconds"] == 40
    renewed = {key for key, (_, revision) in leases.items() if revision > loaded}
    assert renewed == {NODE_LEASE_PREFIX + node.encode() for node in nodes}
    pods = read(cluster, POD_PREFIX)
    updated = {pod["spec"]["nodeName"] for pod, revision in pods.values() if revision > loaded}
    assert updated == {pod["spec"]["nodeName"] for pod, _ in pods.values()} & set(nodes)
    assert simulator.stats().pods_updated == sum(
        1 for pod, _ in pods.values() if pod["spec"]["nodeName"] in nodes
    )


def test_stop_is_prompt_while_the_cluster_never_comes(cluster) -> None:
    simulator = Simulator(cluster.etcd_config(), ["node-1"], Events()).start()
    started = time.monotonic()
    simulator.stop()
    # an attempt in flight ends (three endpoints' dial timeouts, 1.5 s): a stop that did not
    # reach the loop would never return
    assert time.monotonic() - started < 5
    assert simulator.stats().heartbeats == 0


def test_a_configuration_problem_is_raised_by_stop_not_retried(cluster, tmp_path) -> None:
    https = tuple(url.replace("http://", "https://") for url in cluster.client_urls)
    config = dataclasses.replace(
        cluster.etcd_config(), endpoints=https, cacert=tmp_path / "no-ca.pem"
    )
    cluster.start()
    events = Events()
    simulator = Simulator(config, ["node-1"], events).start()
    wait_for(lambda: events.lines, "the failure reported")
    with pytest.raises(ConfigError, match="no-ca.pem"):
        simulator.stop()
    assert "stopped" in events.lines[0]
