"""Counting keys by resource type and namespace: the shapes kube-apiserver writes, and the rest."""

import pytest

from etcdops.demo.sample import kubernetes_objects
from etcdops.restore.inventory import OTHER, Inventory, Place, classify

SHAPES = [
    # namespaced: /registry/{type}/{namespace}/{name}
    (b"/registry/pods/default/web-1", Place("pods", "default")),
    (b"/registry/leases/kube-node-lease/node-1", Place("leases", "kube-node-lease")),
    (b"/registry/configmaps/kube-system/kube-proxy", Place("configmaps", "kube-system")),
    # cluster-scoped: /registry/{type}/{name}, a name may hold dots
    (b"/registry/nodes/node-1", Place("nodes", None)),
    (b"/registry/namespaces/kube.system", Place("namespaces", None)),
    (b"/registry/clusterroles/system:admin", Place("clusterroles", None)),
    (b"/registry/persistentvolumes/pvc-1f2e", Place("persistentvolumes", None)),
    (b"/registry/ranges/serviceips", Place("ranges", None)),
    # an API group first: named resource.group, as kubectl does, scope from what follows
    (b"/registry/apiregistration.k8s.io/apiservices/v1.apps",
     Place("apiservices.apiregistration.k8s.io", None)),
    (b"/registry/monitoring.coreos.com/prometheuses/monitoring/k8s",
     Place("prometheuses.monitoring.coreos.com", "monitoring")),
    # kube-apiserver's historical storage paths, under the names kubectl shows
    (b"/registry/minions/node-7", Place("nodes", None)),
    (b"/registry/controllers/default/rc-1", Place("replicationcontrollers", "default")),
    (b"/registry/services/specs/default/kubernetes", Place("services", "default")),
    (b"/registry/services/endpoints/default/kubernetes", Place("endpoints", "default")),
    # what is not a Kubernetes object's key
    (b"/other/app/key", Place(OTHER, None)),
    (b"registry/pods/default/x", Place(OTHER, None)),
    (b"/registry/pods", Place(OTHER, None)),
    (b"/registry/pods/", Place(OTHER, None)),
    (b"/registry//default/x", Place(OTHER, None)),
    (b"/registry/pods/a/b/c", Place(OTHER, None)),
    (b"/registry/apiregistration.k8s.io/apiservices", Place(OTHER, None)),
    (b"\xff\xfe", Place(OTHER, None)),
]


@pytest.mark.parametrize(("key", "place"), SHAPES, ids=[repr(k) for k, _ in SHAPES])
def test_each_key_shape(key, place):
    assert classify(key) == place


def test_protobuf_values_are_never_needed():
    # a key is enough: the inventory takes keys only, and a non-UTF-8 name still counts
    assert classify(b"/registry/secrets/default/\xe2\x28\xa1") == Place("secrets", "default")


def test_counts_types_namespaces_and_ranks_them():
    inventory = Inventory()
    inventory.add([
        b"/registry/pods/default/a", b"/registry/pods/default/b", b"/registry/pods/prod/c",
        b"/registry/nodes/n1",
    ])
    inventory.add([b"/registry/secrets/prod/s", b"/compact_rev_key"])  # a second page adds up
    assert inventory.total == 6
    assert inventory.by_type() == {"pods": 3, OTHER: 1, "nodes": 1, "secrets": 1}
    assert list(inventory.by_type()) == ["pods", OTHER, "nodes", "secrets"]  # ties by name
    assert inventory.by_namespace() == {"default": 2, "prod": 2}
    assert inventory.namespaces_of("pods") == {"default": 2, "prod": 1}
    assert inventory.namespaces_of("nodes") == {}
    document = inventory.as_dict()
    assert document["total"] == 6
    assert document["types"][0] == {
        "type": "pods", "keys": 3, "cluster_scoped": 0, "namespaces": {"default": 2, "prod": 1},
    }
    assert {"type": "nodes", "keys": 1, "cluster_scoped": 1, "namespaces": {}} in document["types"]


def test_empty_inventory():
    inventory = Inventory()
    assert inventory.total == 0
    assert inventory.as_dict() == {"total": 0, "types": [], "namespaces": {}}


def test_sample_objects_by_type_and_namespace():
    # the demo's sample, counted independently here from how it builds its keys
    objects = list(kubernetes_objects(300, seed=0))
    inventory = Inventory()
    inventory.add(key for key, _ in objects)
    expected_types: dict[str, int] = {}
    expected_namespaces: dict[str, int] = {}
    for key, _ in objects:
        parts = key.decode().split("/")[2:]
        expected_types[parts[0]] = expected_types.get(parts[0], 0) + 1
        if len(parts) == 3:
            expected_namespaces[parts[1]] = expected_namespaces.get(parts[1], 0) + 1
    assert inventory.by_type() == expected_types
    assert inventory.by_namespace() == expected_namespaces
    assert inventory.by_type()["namespaces"] == 9
    assert inventory.namespaces_of("nodes") == {}
    assert inventory.total == 300
