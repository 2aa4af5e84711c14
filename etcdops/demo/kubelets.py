"""Kubelets and controllers coming back after a control-plane outage, simulated on etcd itself.

Steps 3-5 of a disaster recovery wait for what a live cluster does once etcd serves again: each
kubelet renews its node's heartbeat Lease (every 10 s in Kubernetes; every couple of seconds
here), kubelets write the status of the pods bound to their node, and controllers recreate what
is missing. Simulator does the same through ordinary puts in transactions, so `dr run` watches
what it would watch on a real control plane. It retries until the cluster answers, starts over
whenever the cluster goes away and comes back (as kubelets resync after reconnecting), and its
threads stop on stop().
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from etcdops.config import EtcdConfig
from etcdops.demo.sample import (
    NODE_LEASE_PREFIX,
    POD_PREFIX,
    compact_json,
    micro_time,
    node_lease,
    transactions,
)
from etcdops.errors import EtcdUnavailableError
from etcdops.etcd.session import EtcdSession
from etcdops.report import Reporter

HEARTBEAT = 2.0  # seconds between lease renewals and controller passes
_RETRY = 0.2  # seconds between attempts while the cluster does not answer
# a dead member costs a dial timeout per attempt: loopback answers at once or not at all
_DIAL_TIMEOUT = 0.5
_COMMAND_TIMEOUT = 5.0


@dataclass(frozen=True)
class SimulatorStats:
    """What the simulated kubelets and controllers have written so far."""

    heartbeats: int  # rounds in which every node's lease was renewed
    pods_updated: int  # pod status writes, counting a resync after a reconnection again
    recreated: tuple[bytes, ...]  # keys the controllers put back because they were missing

    def as_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {
            "heartbeats": self.heartbeats,
            "pods_updated": self.pods_updated,
            "recreated": [key.decode(errors="replace") for key in self.recreated],
        }


class Simulator:
    """The kubelets of `nodes` and the controllers that own `recreate`, on a cluster that may
    not be up yet; a context manager, or start() and stop()."""

    def __init__(
        self,
        etcd: EtcdConfig,
        nodes: Sequence[str],
        reporter: Reporter,
        *,
        recreate: Mapping[bytes, bytes] | None = None,
        interval: float = HEARTBEAT,
    ) -> None:
        self._config = dataclasses.replace(
            etcd,
            dial_timeout=min(etcd.dial_timeout, _DIAL_TIMEOUT),
            command_timeout=min(etcd.command_timeout, _COMMAND_TIMEOUT),
        )
        self._nodes = tuple(nodes)
        self._reporter = reporter
        self._recreate = dict(recreate or {})
        self._interval = interval
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._failure: BaseException | None = None
        self._leases: dict[str, dict[str, Any]] = {}  # node -> its Lease, read on reconnection
        self._heartbeats = 0
        self._pods_updated = 0
        self._recreated: list[bytes] = []

    def start(self) -> Simulator:
        """Start the kubelets' and the controllers' threads (they wait for the cluster)."""
        for name, work in (("kubelet-heartbeats", self._renew_leases),
                           ("kubelet-pods-controllers", self._reconcile)):
            thread = threading.Thread(target=self._loop, args=(work,), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        """Stop the threads and wait for them; raises what made one of them fail, if anything."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._failure is not None:
            raise self._failure

    def stats(self) -> SimulatorStats:
        """What has been written so far."""
        with self._lock:
            return SimulatorStats(self._heartbeats, self._pods_updated, tuple(self._recreated))

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _loop(self, work: Callable[[EtcdSession, bool], None]) -> None:
        session: EtcdSession | None = None
        reconnected = True  # the first answer is a reconnection too
        try:
            session = EtcdSession(self._config)
            while not self._stopping.is_set():
                try:
                    work(session, reconnected)
                    reconnected = False
                    wait = self._interval
                except EtcdUnavailableError:
                    # fresh channels next time: grpc's reconnect backoff grows towards minutes
                    session.close()
                    reconnected = True
                    wait = _RETRY
                self._stopping.wait(wait)
        except BaseException as exc:  # handed to the caller by stop()
            self._failure = exc
            self._reporter.event(f"simulated kubelets and controllers stopped: {exc}")
        finally:
            if session is not None:
                session.close()

    def _renew_leases(self, session: EtcdSession, reconnected: bool) -> None:
        """Every kubelet renews its node's Lease (and creates it when it is missing)."""
        if reconnected:
            self._leases = self._read_leases(session)
        renewed = micro_time(datetime.now(UTC))
        for lease in self._leases.values():
            lease["spec"]["renewTime"] = renewed
        for batch in transactions(
            (NODE_LEASE_PREFIX + node.encode(), compact_json(lease))
            for node, lease in self._leases.items()
        ):
            session.put_many(batch)
        with self._lock:
            self._heartbeats += 1
            first = self._heartbeats == 1
        if first:
            self._reporter.event(f"kubelets of {len(self._leases)} nodes renew their leases")

    def _read_leases(self, session: EtcdSession) -> dict[str, dict[str, Any]]:
        leases = {node: node_lease(node, None, datetime.now(UTC)) for node in self._nodes}
        for page in session.prefix_pages(NODE_LEASE_PREFIX):
            for kv in page:
                node = kv.key[len(NODE_LEASE_PREFIX):].decode(errors="replace")
                if node in leases:
                    leases[node] = json.loads(kv.value)
        return leases

    def _reconcile(self, session: EtcdSession, reconnected: bool) -> None:
        """Kubelets write their pods' status once per reconnection; controllers put back what
        is missing on every pass."""
        if reconnected:
            updated = 0
            for batch in transactions(self._reconciled_pods(session)):
                session.put_many(batch)
                updated += len(batch)
            with self._lock:
                self._pods_updated += updated
            self._reporter.event(f"kubelets updated the status of {updated} pods")
        missing = [key for key in self._recreate if not _exists(session, key)]
        if missing:
            session.put_many([(key, self._recreate[key]) for key in missing])
            with self._lock:
                self._recreated += missing
            named = ", ".join(key.decode(errors="replace") for key in missing)
            self._reporter.event(f"controllers recreated {named}")

    def _reconciled_pods(self, session: EtcdSession) -> Iterator[tuple[bytes, bytes]]:
        nodes = set(self._nodes)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for page in session.prefix_pages(POD_PREFIX):
            for kv in page:
                pod = json.loads(kv.value)
                if pod.get("spec", {}).get("nodeName") in nodes:
                    yield kv.key, compact_json(_with_fresh_status(pod, now))


def _with_fresh_status(pod: dict[str, Any], now: str) -> dict[str, Any]:
    """The pod as its kubelet writes it after probing it again (kube-apiserver keeps no
    resourceVersion in the stored value: etcd's revision is the version)."""
    pod["metadata"].pop("resourceVersion", None)
    status = pod.setdefault("status", {})
    status["phase"] = "Running"
    status["conditions"] = [
        {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
        for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    return pod


def _exists(session: EtcdSession, key: bytes) -> bool:
    kvs, _ = session.get_prefix(key)
    return any(kv.key == key for kv in kvs)


