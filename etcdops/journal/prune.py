"""Applying retention to every store, backups and the journal chains extending them together:
etcdops.backup.retention and etcdops.journal.retention decide, this module deletes.

In each store on its own (one failing spares the rest):
- the chains are listed (one listing, two manifests per chain: etcdops.journal.listing), so
  that retention knows until when each backup's chain reaches and keeps the base of the chain
  that covers keep_within's start;
- each backup retention deletes takes its chain with it, chain first: the chain's manifests
  newest first, its other files, then the backup's manifest, check record and object. A prune
  interrupted anywhere leaves a base with what is left of its chain (locally its start; in S3,
  whose batch deletes keep no order, maybe with a hole that no restore crosses), deleted with
  it next time; never a chain whose base is gone but that looks restorable, and never a
  deleted base whose segments were still wanted;
- then the orphan chains retention deletes (their base is not in this store).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from etcdops.backup.catalog import Catalog
from etcdops.backup.prune import Dependents, StorePrune, prune_store
from etcdops.backup.retention import Decision
from etcdops.config import Config, RetentionConfig
from etcdops.errors import EtcdopsError
from etcdops.journal.listing import ChainFolder, list_chains, summarise
from etcdops.journal.retention import ChainDecision, decide_chains, reaches
from etcdops.metrics import job_metrics
from etcdops.report import Reporter
from etcdops.stores.base import Store


@dataclass
class StoreRetention:
    """One store's prune: its backups' (etcdops.backup.prune) and its chains'."""

    backups: StorePrune
    chains: list[ChainDecision] = field(default_factory=list)
    deleted_chains: list[str] = field(default_factory=list)  # by base backup id
    deleted_segments: int = 0

    @property
    def store(self) -> str:
        return self.backups.store

    @property
    def decisions(self) -> list[Decision]:
        """The backups' decisions."""
        return self.backups.decisions

    @property
    def deleted(self) -> list[str]:
        """The backups deleted."""
        return self.backups.deleted

    @property
    def notes(self) -> list[str]:
        return self.backups.notes

    @property
    def error(self) -> str | None:
        return self.backups.error

    def as_dict(self) -> dict[str, object]:
        """One store's part of the JSON form: the backups' keys, and the chains'."""
        return self.backups.as_dict() | {
            "chains": [decision.as_dict() for decision in self.chains],
            "deleted_chains": self.deleted_chains,
            "deleted_segments": self.deleted_segments,
        }


@dataclass(frozen=True)
class PruneReport:
    now: datetime
    dry_run: bool
    stores: list[StoreRetention]

    @property
    def failures(self) -> dict[str, str]:
        """Per store, why pruning it failed."""
        return {r.store: r.error for r in self.stores if r.error}

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a prune: per store, every decision with its reasons."""
        return {
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "stores": {r.store: r.as_dict() for r in self.stores},
        }


def prune(
    stores: Mapping[str, Store],
    cluster: str,
    policy: RetentionConfig,
    now: datetime,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    metrics: Config | None = None,
) -> PruneReport:
    """Decide and (unless dry_run) delete backups and chains in each store on its own. With
    metrics (the cluster's configuration) the run is recorded, unless dry."""
    results = []
    for name, store in stores.items():
        result = StoreRetention(StorePrune(name))
        results.append(result)
        try:
            _prune_store(store, cluster, policy, now, reporter, result, dry_run=dry_run)
        except EtcdopsError as exc:
            result.backups.error = str(exc)
    if metrics is not None and not dry_run:
        with job_metrics(metrics, "prune", stores=stores) as recorded:
            for result in results:
                recorded.add("deletions_total", len(result.deleted), store=result.store)
                if result.error:
                    recorded.failed(store=result.store)
    return PruneReport(now, dry_run, results)


def _prune_store(
    store: Store,
    cluster: str,
    policy: RetentionConfig,
    now: datetime,
    reporter: Reporter,
    result: StoreRetention,
    *,
    dry_run: bool,
) -> None:
    folders = list_chains(store, cluster)
    catalog = Catalog(store, cluster)
    entries = catalog.entries()
    revisions = {e.id: e.manifest.etcd.revision for e in entries if e.manifest is not None}
    chains = [summarise(store, cluster, folder, revisions.get(base))
              for base, folder in folders.items()]

    def delete(folder: ChainFolder) -> None:
        folder.delete(store)
        result.deleted_chains.append(folder.base_backup_id)
        result.deleted_segments += len(folder.segments)
        reporter.event(f"deleted the chain of {folder.base_backup_id} "
                       f"({len(folder.segments)} segments) from {store.name} store")

    def delete_chain_of(backup_id: str) -> None:
        if backup_id in folders:
            delete(folders[backup_id])

    prune_store(catalog, policy, now, reporter, result.backups, dry_run=dry_run,
                entries=entries, dependents=Dependents(reaches(chains), delete_chain_of))
    result.chains = decide_chains(chains, result.backups.decisions,
                                  keep_within=policy.keep_within, now=now)
    if dry_run:
        return
    for decision in result.chains:
        if decision.orphan and not decision.keep:
            delete(decision.chain.folder)
