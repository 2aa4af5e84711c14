"""Kubernetes-shaped sample data, and how the one inventory rule counts it by type."""

from __future__ import annotations

import json

import pytest

from etcdops.demo.sample import (
    CLUSTER_SCOPED,
    MAX_VALUE_SIZE,
    NAMESPACED,
    NODE_LEASE_PREFIX,
    POD_PREFIX,
    kubernetes_objects,
    load_kubernetes_objects,
    sample_nodes,
)
from etcdops.errors import UsageError
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.restore.inventory import OTHER, Inventory, classify


def inventory(keys) -> dict[str, int]:
    counted = Inventory()
    counted.add(keys)
    return counted.by_type()


def resource_type(key: bytes) -> str:
    return classify(key).resource


# --- inventory ---------------------------------------------------------------------------------


def test_inventory_counts_namespaced_and_cluster_scoped_keys() -> None:
    keys = [
        b"/registry/pods/default/web-1",
        b"/registry/pods/kube-system/coredns-1",
        b"/registry/services/specs/default/kubernetes",  # how real clusters store services
        b"/registry/nodes/node-1",
        b"/registry/nodes/node-2",
        b"/registry/persistentvolumes/pvc-1",
        b"/registry/namespaces/default",
        b"/registry/apiregistration.k8s.io/apiservices/v1.apps",
        b"/registry/cert-manager.io/certificates/default/web-tls",
        b"compact_rev_key",
        b"/registry/",
    ]
    assert inventory(keys) == {
        "pods": 2,
        "services": 1,
        "nodes": 2,
        "persistentvolumes": 1,
        "namespaces": 1,
        "apiservices.apiregistration.k8s.io": 1,
        "certificates.cert-manager.io": 1,
        OTHER: 2,
    }


def test_values_are_not_decoded() -> None:
    # real clusters store protobuf values (k8s\x00...): only the key matters
    assert resource_type(b"/registry/pods/default/p\xff") == "pods"
    assert inventory([]) == {}


# --- generated objects -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 8, 9, 300])
def test_exactly_count_unique_objects(count: int) -> None:
    objects = list(kubernetes_objects(count))
    assert len(objects) == len(dict(objects)) == count


def test_same_seed_same_objects() -> None:
    assert list(kubernetes_objects(50, seed=3)) == list(kubernetes_objects(50, seed=3))
    assert list(kubernetes_objects(50, seed=3)) != list(kubernetes_objects(50, seed=4))


def test_keys_follow_the_kubernetes_layout() -> None:
    objects = dict(kubernetes_objects(300))
    kinds = set(inventory(objects))
    assert kinds == set(NAMESPACED) | set(CLUSTER_SCOPED)
    namespaces = {key.split(b"/")[3].decode() for key in objects if b"/namespaces/" in key}
    for key, value in objects.items():
        parts = key.decode().split("/")
        body = json.loads(value)
        assert body["metadata"]["name"] == parts[-1]
        if parts[2] in CLUSTER_SCOPED:
            assert len(parts) == 4 and "namespace" not in body["metadata"]
        else:
            assert len(parts) == 5 and body["metadata"]["namespace"] == parts[3]
            assert parts[3] in namespaces  # objects live in namespaces that exist


def test_pods_look_like_the_seed() -> None:
    pod = next(json.loads(v) for k, v in kubernetes_objects(50) if k.startswith(b"/registry/pods"))
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "200m", "memory": "256Mi"}
    assert pod["status"]["phase"] == "Running"


@pytest.mark.parametrize("count", [0, 9, 30, 301, 3000])
def test_every_node_has_its_kubelet_lease(count: int) -> None:
    objects = dict(kubernetes_objects(count))
    nodes = [k.rsplit(b"/", 1)[1].decode() for k in objects if k.startswith(b"/registry/nodes/")]
    assert tuple(nodes) == sample_nodes(count)
    leases = {k: json.loads(v) for k, v in objects.items() if k.startswith(NODE_LEASE_PREFIX)}
    assert [k.rsplit(b"/", 1)[1].decode() for k in leases] == nodes
    for key, lease in leases.items():
        node = key.rsplit(b"/", 1)[1].decode()
        assert lease["kind"] == "Lease" and lease["apiVersion"] == "coordination.k8s.io/v1"
        assert lease["spec"]["holderIdentity"] == node
        assert lease["spec"]["renewTime"].endswith(".000000Z")
        owner = json.loads(objects[b"/registry/nodes/" + node.encode()])["metadata"]["uid"]
        assert lease["metadata"]["ownerReferences"][0] == {
            "apiVersion": "v1", "kind": "Node", "name": node, "uid": owner,
        }


def test_pods_run_on_the_sample_nodes() -> None:
    objects = dict(kubernetes_objects(3000))
    nodes = set(sample_nodes(3000))
    pods = [json.loads(v) for k, v in objects.items() if k.startswith(POD_PREFIX)]
    assert len(nodes) > 100 and len(pods) > 1000
    assert {pod["spec"]["nodeName"] for pod in pods} <= nodes
    assert len({pod["spec"]["nodeName"] for pod in pods}) > len(nodes) // 2
    # heartbeats only in kube-node-lease
    assert not any(pod["metadata"]["namespace"] == "kube-node-lease" for pod in pods)


def test_values_are_padded_to_the_requested_size() -> None:
    objects = list(kubernetes_objects(40, value_size=4096, seed=1))
    assert {len(value) for _, value in objects} == {4096}
    padding = json.loads(objects[0][1])["metadata"]["annotations"]["etcdops.io/padding"]
    assert len(set(padding)) > 32  # random text, so compression benchmarks stay honest


def test_values_above_the_etcd_request_limit_are_refused() -> None:
    with pytest.raises(UsageError, match="1.5 MiB"):
        list(kubernetes_objects(1, value_size=2 * 1024 * 1024))


# --- loading into etcd -------------------------------------------------------------------------


def test_loader_counts_match_etcd(etcd_single: LocalCluster, etcd3_client) -> None:
    with EtcdSession(etcd_single.etcd_config()) as session:
        counts = load_kubernetes_objects(session, 500, seed=7)
        assert session.count_keys() == 500
    client = etcd3_client(etcd_single.client_urls[0])
    keys = [meta.key for _, meta in client.get_all(keys_only=True)]
    assert sum(counts.values()) == 500
    assert inventory(keys) == counts
    assert set(counts) == set(NAMESPACED) | set(CLUSTER_SCOPED)


def test_loader_accepts_an_etcd3_client_and_splits_big_batches(
    etcd_single: LocalCluster, etcd3_client
) -> None:
    client = etcd3_client(etcd_single.client_urls[0])
    # values near the limit: one per transaction, each under etcd's 1.5 MiB request cap
    counts = load_kubernetes_objects(client, 10, value_size=MAX_VALUE_SIZE, seed=2)
    stored = {meta.key: value for value, meta in client.get_prefix("/registry/")}
    assert sum(counts.values()) == 10
    assert stored == dict(kubernetes_objects(10, value_size=MAX_VALUE_SIZE, seed=2))
