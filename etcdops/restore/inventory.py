"""What a keyspace holds, by Kubernetes resource type and namespace, counted from keys alone.

kube-apiserver stores `/registry/{type}/{namespace}/{name}` for namespaced resources and
`/registry/{type}/{name}` for cluster-scoped ones (nodes, persistentvolumes, namespaces,
clusterroles...); resources of a non-core API group may sit one level deeper, under the group
(`/registry/apiregistration.k8s.io/apiservices/{name}`). Which shape a key has is decided by
its number of path parts: no list of cluster-scoped types to fall out of date. Values are never
read (real clusters store protobuf, `k8s\\x00...`), and memory grows with the number of
(type, namespace) pairs, never with the number of keys.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

REGISTRY = b"/registry/"
OTHER = "(other)"  # outside /registry, or not shaped like a Kubernetes object's key
# Where kube-apiserver's storage paths predate today's resource names, or nest one level more
# (services and endpoints share /registry/services/): the name an operator knows from kubectl.
_STORED_AS = {"minions": "nodes", "controllers": "replicationcontrollers"}
_SERVICES_SUBTREES = {"specs": "services", "endpoints": "endpoints"}


class Place(NamedTuple):
    """Where a key belongs: its resource type, and its namespace (None: cluster-scoped)."""

    resource: str
    namespace: str | None


def classify(key: bytes) -> Place:
    """The resource type and namespace of one etcd key, from its path alone."""
    if not key.startswith(REGISTRY):
        return Place(OTHER, None)
    parts = key[len(REGISTRY):].decode("utf-8", "replace").split("/")
    if any(not part for part in parts):
        return Place(OTHER, None)
    resource = parts[0]
    if "." in resource:
        # an API group comes first (no core type has a dot): name the type resource.group, as
        # kubectl does; a group and a type with no name after it is no object's key
        if len(parts) < 3:
            return Place(OTHER, None)
        resource, parts = f"{parts[1]}.{parts[0]}", parts[1:]
    elif resource == "services" and len(parts) == 4 and parts[1] in _SERVICES_SUBTREES:
        resource, parts = _SERVICES_SUBTREES[parts[1]], parts[1:]
    resource = _STORED_AS.get(resource, resource)
    if len(parts) == 2:
        return Place(resource, None)
    if len(parts) == 3:
        return Place(resource, parts[1])
    return Place(OTHER, None)


@dataclass
class Inventory:
    """Key counts per (resource type, namespace), fed a page of keys at a time."""

    counts: Counter[Place] = field(default_factory=Counter)

    def add(self, keys: Iterable[bytes]) -> None:
        """Count more keys (a page of a key-range read)."""
        self.counts.update(classify(key) for key in keys)

    @property
    def total(self) -> int:
        """Every key counted, whatever its shape."""
        return sum(self.counts.values())

    def by_type(self) -> dict[str, int]:
        """Keys per resource type, most first (ties by name)."""
        totals: Counter[str] = Counter()
        for place, count in self.counts.items():
            totals[place.resource] += count
        return _ranked(totals)

    def by_namespace(self) -> dict[str, int]:
        """Keys of namespaced resources per namespace, most first."""
        totals: Counter[str] = Counter()
        for place, count in self.counts.items():
            if place.namespace is not None:
                totals[place.namespace] += count
        return _ranked(totals)

    def namespaces_of(self, resource: str) -> dict[str, int]:
        """One type's keys per namespace, most first (empty for a cluster-scoped type)."""
        return _ranked(Counter({
            place.namespace: count for place, count in self.counts.items()
            if place.resource == resource and place.namespace is not None
        }))

    def as_dict(self) -> dict[str, object]:
        """The JSON form: the total, each type with its namespaces, and the namespaces."""
        types = []
        for resource, keys in self.by_type().items():
            namespaces = self.namespaces_of(resource)
            types.append({
                "type": resource,
                "keys": keys,
                "cluster_scoped": keys - sum(namespaces.values()),
                "namespaces": namespaces,
            })
        return {"total": self.total, "types": types, "namespaces": self.by_namespace()}


def _ranked(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
