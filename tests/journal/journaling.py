"""Helpers for the journal run's tests: its config on a real etcd, a journal in a thread, a
writer that records what etcd gave each write, and a chain read back from a store."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import etcd3

from etcdops.config import Config, EncryptionConfig, LocalConfig
from etcdops.config.settings import JournalConfig, ScheduleConfig
from etcdops.crypto.age import Identity
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.etcd.watch import Revision
from etcdops.journal.chain import ChainWindow, window
from etcdops.journal.report import JournalReport
from etcdops.journal.run import run_journal
from etcdops.journal.store import chain_manifests, read_segment
from etcdops.report import LogReporter
from etcdops.stores.base import Store


def journal_config(cluster: LocalCluster, identity: Identity, directory: Path,
                   **journal: object) -> Config:
    """A config of a cluster name of its own (its own election key and folders), short
    intervals, the shortest election TTL."""
    return Config(
        cluster="j" + uuid.uuid4().hex[:10],
        etcd=cluster.etcd_config(),
        encryption=EncryptionConfig(recipients=(str(identity.recipient()),)),
        local=LocalConfig(dir=directory / "backups"),
        journal=JournalConfig(**{"interval": 0.2, **journal}),
        schedule=ScheduleConfig(election_ttl=5.0, stop_timeout=20.0),
    )


class Journal:
    """run_journal on a thread, stopped as SIGTERM stops it (the stop event)."""

    def __init__(self, config: Config, **options: object) -> None:
        self.stop = threading.Event()
        self.report: JournalReport | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(config, options), daemon=True)
        self._thread.start()

    def _run(self, config: Config, options: dict) -> None:
        try:
            self.report = run_journal(config, LogReporter(), stop=self.stop, **options)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 30.0) -> JournalReport:
        self.stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the journal did not stop"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


@dataclass
class Writer:
    """Puts to etcd on a thread until stopped, recording each put's revision and moment."""

    client: etcd3.Etcd3Client
    prefix: str = "/registry/configmaps/journal/"
    written: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    moments: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, revision)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        number = 0
        while not self._stop.wait(0.01):
            self.put(number)
            number += 1

    def put(self, number: int) -> int:
        key, value = f"{self.prefix}cm-{number % 50}".encode(), f"value {number}".encode()
        revision = self.client.put(key, value).header.revision
        self.written[revision] = (key, value)
        self.moments.append((time.monotonic(), revision))
        return revision

    def finish(self) -> int:
        """Stop; the last revision written."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)
        return max(self.written)


def chain_in(store: Store, config: Config, base_id: str, base_revision: int) -> ChainWindow:
    manifests, damaged = chain_manifests(store, config.cluster, base_id)
    assert damaged == []
    return window(base_id, base_revision, manifests)


def replayed(store: Store, chain: ChainWindow, identity: Identity) -> list[Revision]:
    """Every revision of a chain's path, read back with every check."""
    return [r for segment in chain.path for r in read_segment(store, segment, [identity])]


def history(config: Config, first: int, last: int) -> list[Revision]:
    """etcd's own history from first to last, by a watch of its own."""
    found: list[Revision] = []
    if last < first:
        return found
    with EtcdSession(config.etcd) as session, session.changes(first) as stream:
        for item in stream:
            if isinstance(item, Revision):
                found.append(item)
                if item.revision >= last:
                    break
    return found
