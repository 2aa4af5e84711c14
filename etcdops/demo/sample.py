"""Kubernetes-shaped sample data: what the demo, the tests and the benchmarks load into etcd.

The demo, the tests and the benchmarks need an etcd that looks like a Kubernetes control plane:
`/registry/{type}/{namespace}/{name}` for namespaced resources, `/registry/{type}/{name}` for
cluster-scoped ones, JSON values shaped like the seed's pods, services, nodes and volumes. Every
node has its kubelet's heartbeat Lease in kube-node-lease and pods run on the sample's nodes, so
a disaster recovery can watch nodes reconnect and kubelets reconcile. The same seed always gives
the same keys and values, so a test knows what a restore must bring back.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from etcdops.errors import UsageError
from etcdops.restore.inventory import classify

REGISTRY = b"/registry/"
NAMESPACED = ("pods", "services", "deployments", "configmaps", "secrets", "leases")
CLUSTER_SCOPED = ("nodes", "persistentvolumes", "namespaces")
NODE_LEASES = "kube-node-lease"  # where kubelets renew their heartbeat Lease
NAMESPACES = (
    "default",
    "kube-system",
    "kube-public",
    NODE_LEASES,
    "monitoring",
    "ingress-nginx",
    "production",
    "staging",
    "payments",
)
# etcd's defaults are --max-txn-ops 128 and --max-request-bytes 1.5 MiB; leave room for framing
MAX_TXN_OPS = 128
MAX_TXN_BYTES = 1024 * 1024
MAX_VALUE_SIZE = MAX_TXN_BYTES
NODE_LEASE_PREFIX = REGISTRY + f"leases/{NODE_LEASES}/".encode()
POD_PREFIX = REGISTRY + b"pods/"
LEASE_DURATION = 40  # seconds: the kubelet's default nodeLeaseDurationSeconds

# roughly the mix of a busy cluster; namespaces come first and are not weighted
_WEIGHTS = {
    "pods": 40,
    "configmaps": 14,
    "secrets": 12,
    "services": 10,
    "deployments": 10,
    "nodes": 8,
    "persistentvolumes": 6,
}
_APPS = ("web", "api", "worker", "cache", "auth", "billing", "search", "gateway", "scheduler")
_EPOCH = datetime(2026, 1, 8, 10, 0, 0, tzinfo=UTC)
_ZONES = ("us-west-2a", "us-west-2b", "us-west-2c")


def kubernetes_objects(
    count: int, *, value_size: int | None = None, seed: int = 0
) -> Iterator[tuple[bytes, bytes]]:
    """The key-values that load_kubernetes_objects writes, without etcd (tests compare with it)."""
    if value_size is not None and value_size > MAX_VALUE_SIZE:
        raise UsageError(
            f"value size {value_size} is above {MAX_VALUE_SIZE} bytes",
            "etcd refuses requests over 1.5 MiB; use more keys instead of bigger values",
        )
    rng = random.Random(seed)
    namespaces = NAMESPACES[: min(count, len(NAMESPACES))]
    workloads = workload_namespaces(count)
    for name in namespaces:
        yield _encode("namespaces", None, name, _namespace(rng, name), value_size, rng)
    allocation = _allocate(count - len(namespaces))
    for kind, amount in allocation.items():
        for index in range(amount):
            if kind == "nodes":
                name, body = _node(rng, index)
                yield _encode(kind, None, name, body, value_size, rng)
                lease = node_lease(name, body["metadata"]["uid"], _EPOCH)
                lease["metadata"].update(_metadata(rng, name, NODE_LEASES))
                yield _encode("leases", NODE_LEASES, name, lease, value_size, rng)
            elif kind in CLUSTER_SCOPED:
                name, body = _volume(rng, index)
                yield _encode(kind, None, name, body, value_size, rng)
            else:
                app = rng.choice(_APPS)
                namespace = rng.choice(workloads)
                yield _workload_object(rng, kind, namespace, app, index, allocation["nodes"],
                                       value_size)


def workload_namespaces(count: int) -> tuple[str, ...]:
    """The namespaces that run workloads among `count` sample objects (not kube-node-lease:
    only kubelets' heartbeats live there)."""
    return tuple(name for name in NAMESPACES[: min(count, len(NAMESPACES))]
                 if name != NODE_LEASES)


def new_object(
    rng: random.Random, kind: str, namespace: str, index: int, nodes: int
) -> tuple[bytes, bytes]:
    """One more namespaced object (pods, services, deployments, configmaps, secrets), as a
    controller or a user creates it; an index at or past the loaded count names a new key."""
    return _workload_object(rng, kind, namespace, rng.choice(_APPS), index, nodes, None)


def rolled_out(deployment: dict[str, Any], image_tag: str) -> dict[str, Any]:
    """A Deployment after `kubectl set image`: its containers on a new tag, a new generation
    (kube-apiserver keeps no resourceVersion in the stored value)."""
    deployment["metadata"].pop("resourceVersion", None)
    deployment["metadata"]["generation"] = deployment["metadata"].get("generation", 1) + 1
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        container["image"] = f"{container['image'].rsplit(':', 1)[0]}:{image_tag}"
    return deployment


def event(rng: random.Random, body: dict[str, Any], moment: datetime) -> tuple[bytes, bytes]:
    """An Event about a namespaced object, as kube-apiserver stores one: under
    /registry/events/{namespace}/, and bound to an etcd lease (--event-ttl) by its writer."""
    metadata = body["metadata"]
    name = f"{metadata['name']}.{rng.getrandbits(64):016x}"
    reason, message = rng.choice(_EVENT_REASONS[body["kind"]])
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _encode("events", metadata["namespace"], name, {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": metadata["namespace"],
                     "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                     "creationTimestamp": stamp},
        "involvedObject": {"kind": body["kind"], "namespace": metadata["namespace"],
                           "name": metadata["name"], "uid": metadata.get("uid")},
        "reason": reason,
        "message": message.format(name=metadata["name"]),
        "type": "Normal",
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "deployment-controller" if body["kind"] == "Deployment"
                   else "kubelet"},
    }, None, rng)


def sample_nodes(count: int) -> tuple[str, ...]:
    """The names of the nodes (each with its Lease) among `count` sample objects."""
    namespaces = min(count, len(NAMESPACES))
    return tuple(_node_name(index) for index in range(_allocate(count - namespaces)["nodes"]))


def node_lease(node: str, node_uid: str | None, renew_time: datetime) -> dict[str, Any]:
    """A kubelet's heartbeat Lease (coordination.k8s.io/v1) for its node, renewed at a time."""
    metadata: dict[str, Any] = {"name": node, "namespace": NODE_LEASES}
    if node_uid is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}
        ]
    return {
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": metadata,
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": LEASE_DURATION,
            "renewTime": micro_time(renew_time),
        },
    }


def micro_time(moment: datetime) -> str:
    """Kubernetes' MicroTime, as a Lease's renewTime holds it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load_kubernetes_objects(
    target: Any, count: int, *, value_size: int | None = None, seed: int = 0
) -> dict[str, int]:
    """Fill etcd (an EtcdSession or an etcd3 client) with sample objects; counts per type."""
    write = _writer(target)
    counts: Counter[str] = Counter()

    def counted() -> Iterator[tuple[bytes, bytes]]:
        for key, value in kubernetes_objects(count, value_size=value_size, seed=seed):
            counts[classify(key).resource] += 1
            yield key, value

    for batch in transactions(counted()):
        write(batch)
    return dict(counts)


def transactions(items: Iterable[tuple[bytes, bytes]]) -> Iterator[list[tuple[bytes, bytes]]]:
    """Key-values in batches that etcd takes as one transaction each (its default limits)."""
    batch: list[tuple[bytes, bytes]] = []
    batch_bytes = 0
    for key, value in items:
        size = len(key) + len(value)
        if batch and (len(batch) == MAX_TXN_OPS or batch_bytes + size > MAX_TXN_BYTES):
            yield batch
            batch, batch_bytes = [], 0
        batch.append((key, value))
        batch_bytes += size
    if batch:
        yield batch


def _writer(target: Any) -> Callable[[list[tuple[bytes, bytes]]], object]:
    if hasattr(target, "put_many"):
        writer: Callable[[list[tuple[bytes, bytes]]], object] = target.put_many
        return writer

    def etcd3_transaction(batch: list[tuple[bytes, bytes]]) -> object:
        puts = [target.transactions.put(key, value) for key, value in batch]
        return target.transaction(compare=[], success=puts, failure=[])

    return etcd3_transaction


def _allocate(total: int) -> dict[str, int]:
    """How many objects of each kind; "nodes" counts nodes that each come with their Lease."""
    # largest remainder: the counts add up to exactly `total`
    weight_sum = sum(_WEIGHTS.values())
    shares = {kind: total * weight / weight_sum for kind, weight in _WEIGHTS.items()}
    counts = {kind: int(share) for kind, share in shares.items()}
    by_remainder = sorted(shares, key=lambda kind: shares[kind] - counts[kind], reverse=True)
    for kind in by_remainder[: total - sum(counts.values())]:
        counts[kind] += 1
    # a node's share is nodes and their leases, two keys each: an odd one left over is a pod
    counts["pods"] += counts["nodes"] % 2
    counts["nodes"] //= 2
    return counts


def _encode(
    kind: str,
    namespace: str | None,
    name: str,
    body: dict[str, Any],
    value_size: int | None,
    rng: random.Random,
) -> tuple[bytes, bytes]:
    path = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
    value = compact_json(body)
    if value_size is not None and len(value) < value_size:
        annotations = body["metadata"].setdefault("annotations", {})
        annotations["etcdops.io/padding"] = ""
        missing = value_size - len(compact_json(body))
        if missing > 0:
            # random base64, not one repeated character: compression must not look better
            # than it would on real objects
            filler = base64.b64encode(rng.randbytes(missing * 3 // 4 + 3))[:missing]
            annotations["etcdops.io/padding"] = filler.decode("ascii")
        value = compact_json(body)
    return REGISTRY + path.encode(), value


def compact_json(body: dict[str, Any]) -> bytes:
    """An object's value as kube-apiserver writes JSON: no spaces."""
    return json.dumps(body, separators=(",", ":")).encode()


def _workload_object(
    rng: random.Random, kind: str, namespace: str, app: str, index: int, nodes: int,
    value_size: int | None,
) -> tuple[bytes, bytes]:
    name = _object_name(rng, kind, app, index)
    if kind == "pods":
        body = _pod(rng, name, namespace, app, nodes)
    else:
        body = _BUILDERS[kind](rng, name, namespace, app)
    return _encode(kind, namespace, name, body, value_size, rng)


def _object_name(rng: random.Random, kind: str, app: str, index: int) -> str:
    if kind == "pods":
        return f"{app}-{rng.getrandbits(40):010x}-{index}"
    suffix = {"configmaps": "-config", "secrets": "-tls"}.get(kind, "")
    return f"{app}{suffix}-{index}"


def _metadata(rng: random.Random, name: str, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    created = _EPOCH + timedelta(seconds=rng.randrange(86_400))
    metadata["uid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    metadata["resourceVersion"] = str(rng.randrange(1, 10_000_000))
    metadata["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return metadata


def _namespace(rng: random.Random, name: str) -> dict[str, Any]:
    metadata = _metadata(rng, name)
    metadata["labels"] = {"kubernetes.io/metadata.name": name}
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _pod(rng: random.Random, name: str, namespace: str, app: str, nodes: int) -> dict[str, Any]:
    metadata = _metadata(rng, name, namespace)
    metadata["labels"] = {"app": app, "tier": rng.choice(("frontend", "backend"))}
    started = metadata["creationTimestamp"]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {
            "containers": [
                {
                    "name": app,
                    "image": f"registry.example.com/{app}:1.{rng.randrange(30)}",
                    "ports": [{"containerPort": rng.choice((80, 8080, 9090))}],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "200m", "memory": "256Mi"},
                    },
                }
            ],
            # scheduled on one of the sample's nodes (its kubelet reconciles it after a restore)
            "nodeName": _node_name(rng.randrange(max(nodes, 1))),
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "startTime": started,
            "containerStatuses": [
                {
                    "name": app,
                    "ready": True,
                    "restartCount": rng.choice((0, 0, 0, 1, 2)),
                    "state": {"running": {"startedAt": started}},
                }
            ],
        },
    }


def _service(rng: random.Random, name: str, namespace: str, app: str) -> dict[str, Any]:
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": _metadata(rng, name, namespace),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": f"10.96.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "selector": {"app": app},
        },
        "status": {"loadBalancer": {}},
    }


def _deployment(rng: random.Random, name: str, namespace: str, app: str) -> dict[str, Any]:
    replicas = rng.choice((1, 2, 3, 5))
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": _metadata(rng, name, namespace),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": app, "image": f"registry.example.com/{app}:1.0"}]},
            },
        },
        "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas},
    }


def _configmap(rng: random.Random, name: str, namespace: str, app: str) -> dict[str, Any]:
    return {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": _metadata(rng, name, namespace),
        "data": {
            "LOG_LEVEL": rng.choice(("info", "debug", "warn")),
            "UPSTREAM": f"http://{app}.{namespace}.svc.cluster.local:8080",
        },
    }


def _secret(rng: random.Random, name: str, namespace: str, app: str) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": _metadata(rng, name, namespace),
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(rng.randbytes(96)).decode(),
            "tls.key": base64.b64encode(rng.randbytes(48)).decode(),
        },
    }


def _node_name(index: int) -> str:
    return f"node-{index + 1}"


def _node(rng: random.Random, index: int) -> tuple[str, dict[str, Any]]:
    name = _node_name(index)
    zone = rng.choice(_ZONES)
    return name, {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            **_metadata(rng, name),
            "labels": {
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": "m5.2xlarge",
                "topology.kubernetes.io/zone": zone,
            },
        },
        "spec": {
            "podCIDR": f"10.0.{index % 256}.0/24",
            "providerID": f"aws:///{zone}/i-{rng.getrandbits(56):014x}",
        },
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "7800m", "memory": "30Gi", "pods": "110"},
            "conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-08T10:00:00Z"}
            ],
        },
    }


def _volume(rng: random.Random, index: int) -> tuple[str, dict[str, Any]]:
    # dynamically provisioned volumes are named after their claim's uid
    name = f"pvc-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
    return name, {
        "kind": "PersistentVolume",
        "apiVersion": "v1",
        "metadata": _metadata(rng, name),
        "spec": {
            "capacity": {"storage": f"{rng.choice((10, 50, 100))}Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "fast-ssd",
            "hostPath": {"path": f"/mnt/data/{index}"},
        },
        "status": {"phase": "Bound"},
    }


_BUILDERS: dict[str, Callable[[random.Random, str, str, str], dict[str, Any]]] = {
    "services": _service,
    "deployments": _deployment,
    "configmaps": _configmap,
    "secrets": _secret,
}
# what the controllers and kubelets say about the objects a workload writes
_EVENT_REASONS: dict[str, tuple[tuple[str, str], ...]] = {
    "Deployment": (("ScalingReplicaSet", "Scaled up replica set {name} to 3"),),
    "Pod": (("Scheduled", "Successfully assigned {name}"), ("Pulled", "Container image pulled"),
            ("Started", "Started container")),
    "Service": (("EnsuredLoadBalancer", "Ensured load balancer"),),
    "ConfigMap": (("Updated", "ConfigMap {name} updated"),),
    "Secret": (("Updated", "Secret {name} updated"),),
}
