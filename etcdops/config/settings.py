"""Every setting of etcdops.toml: its section, type, default and valid range, declared once on
the dataclasses that the rest of etcdops reads its configuration from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdops.units import parse_duration, parse_size


def opt(
    kind: str,
    default: Any = None,
    *,
    secret: bool = False,
    required: bool = False,
    within: tuple[Any, Any] | None = None,
    why: str | None = None,
) -> Any:
    """A setting of a table: its kind (how values.checked_value converts it), default and
    range; the recovery plan's tables are declared with it too."""
    # Secrets stay out of repr() so that a logged or printed config never shows them, and out
    # of every error about their value (values.checked_value reads "secret").
    metadata: dict[str, Any] = {"kind": kind, "required": required, "secret": secret}
    if within is not None:
        # bounds are written the way an operator writes the value, and shown so in errors;
        # a missing upper bound means the setting has no ceiling of its own
        low, high = within
        parse = {"int": int, "float": float, "duration": parse_duration, "size": parse_size}[kind]
        metadata["range"] = (parse(low), None if high is None else parse(high))
        metadata["range_text"] = f"{low} to {high}" if high is not None else f"{low} or more"
        metadata["why"] = why
    return field(default=default, repr=not secret, metadata=metadata)


def _section(cls: type) -> Any:
    """A nested table ([s3.replica]); None when the file does not have it."""
    return field(default=None, metadata={"kind": "section", "cls": cls})


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...] = opt("list", ("http://127.0.0.1:2379",))
    cacert: Path | None = opt("file")
    cert: Path | None = opt("file")
    key: Path | None = opt("file")
    user: str | None = opt("user")
    password_file: Path | None = opt("file")
    password: str | None = opt("str", secret=True)
    dial_timeout: float = opt("duration", 5.0, within=("10ms", "10m"))
    command_timeout: float = opt("duration", 30.0, within=("10ms", "1h"))
    snapshot_timeout: float = opt("duration", 3600.0, within=("1s", "7d"))
    etcdutl: str | None = opt("str")
    # one per endpoint, in the same order; empty: each member's client URL + /metrics
    metrics_urls: tuple[str, ...] = opt("list", ())
    # etcd's --quota-backend-bytes; 8 GiB is the seed's limit (a member that reports a lower
    # quota on /metrics is held to its own)
    quota_backend_bytes: int = opt("size", 8 * 1024**3, within=("1MiB", "1TiB"))

    def resolved_password(self) -> str | None:
        """The etcd password, read from its file when one is configured."""
        if self.password is not None:
            return self.password
        if self.password_file is None:
            return None
        return self.password_file.read_text().strip()


@dataclass(frozen=True)
class EncryptionConfig:
    recipients: tuple[str, ...] = opt("list", ())
    recipients_file: Path | None = opt("file")
    identity_file: Path | None = opt("file")
    # where the recipients list was given (file:line or $VARIABLE), for errors about its entries
    recipients_origin: str | None = field(default=None, metadata={"kind": "internal"})


@dataclass(frozen=True)
class LocalConfig:
    dir: Path = opt("path", Path("/var/lib/etcdops"))
    # Level 1: on 2 cores zstd competes with etcd itself for the CPU, and on Kubernetes objects
    # level 3 compresses no better (measured 7.7x at level 1 vs 7.6x at 3, 40% less CPU).
    # zstandard also takes 0 (its default, 3) and negative "fast" levels; the manifest records
    # the level, so only the levels that say what they do are accepted
    compression_level: int = opt("int", 1, within=(1, 22), why="zstd's levels")


@dataclass(frozen=True)
class S3Location:
    """One bucket in one region; credentials come from the standard AWS chain."""

    bucket: str = opt("bucket", required=True)
    region: str | None = opt("region")
    prefix: str = opt("prefix", "")
    endpoint_url: str | None = opt("url")
    sse: str | None = opt("sse")
    kms_key_id: str | None = opt("str")
    storage_class: str | None = opt("str")
    # An upload holds (upload_concurrency + 1) parts in memory. Bigger parts mean fewer requests
    # (each costs CPU on both ends); more of them in flight help on a link with a long round trip.
    part_size: int = opt("size", 10 * 1024**2, within=("5MiB", "5GiB"),
                         why="S3's limits for one part")
    upload_concurrency: int = opt("int", 2, within=(1, 64),
                                  why="each part in flight is a buffer of part_size in memory")
    # A hung endpoint must end in minutes, not hold the save: each request gives up after
    # connect_timeout / read_timeout, is tried max_attempts times, and the whole of one store's
    # part of a save (upload, check, manifest, copy) after deadline.
    connect_timeout: float = opt("duration", 10.0, within=("10ms", "10m"))
    read_timeout: float = opt("duration", 30.0, within=("10ms", "1h"))
    max_attempts: int = opt("int", 3, within=(1, 20))
    deadline: float = opt("duration", 1800.0, within=("1s", "7d"))


@dataclass(frozen=True)
class S3Config(S3Location):
    replica: S3Location | None = _section(S3Location)


@dataclass(frozen=True)
class RetentionConfig:
    # prune also removes incomplete objects and unfinished uploads older than keep_within: a
    # shorter window could take the object of a save still running
    keep_within: float = opt("duration", 24 * 3600.0, within=("1h", "3650d"),
                             why="it must outlast a save in progress")
    keep_min: int = opt("int", 3, within=(1, None),
                        why="the newest verified backup is always kept, so 0 would mean 1")


@dataclass(frozen=True)
class CompactionConfig:
    # 0s is meaningful: compact all history now, as etcd's guide does to clear a NOSPACE alarm
    retain: float = opt("duration", 300.0, within=("0s", "30d"))
    prefix: str = opt("str", "/etcdops/compaction/")
    timeout: float = opt("duration", 300.0, within=("1s", "1d"))  # --physical takes a while


@dataclass(frozen=True)
class DefragConfig:
    window: str = opt("str", "02:00-05:00")
    timezone: str = opt("str", "UTC")
    free_threshold: int = opt("size", 200 * 1024**2, within=("0", "1TiB"))
    quota_percent: int = opt("int", 80, within=(1, 100))
    # per member: a multi-GiB db takes minutes
    timeout: float = opt("duration", 600.0, within=("1s", "1d"))


@dataclass(frozen=True)
class HealthConfig:
    wal_fsync_p99: float = opt("duration", 0.010, within=("1ms", "1m"))
    backend_commit_p99: float = opt("duration", 0.050, within=("1ms", "1m"))
    compaction_p99: float | None = opt("duration", within=("1ms", "1h"))
    db_size_percent: int = opt("int", 80, within=(1, 100))
    raft_index_lag: int = opt("int", 5000, within=(1, None))
    # the hourly schedule plus slack for the timer's randomized delay and the save itself
    backup_max_age: float = opt("duration", 70 * 60.0, within=("1m", "365d"))


@dataclass(frozen=True)
class RestoreConfig:
    # etcdutl's --bump-revision, where it has it: etcd's recovery guide's 1,000,000,000 passes
    # any revision a client can have seen since the backup; 10^12 still leaves int64 revisions
    # room for millennia of writes
    bump_revision: int = opt("int", 1_000_000_000, within=(1, 10**12),
                             why="it is added to the snapshot's revision, an int64")
    # without etcdutl's flags a staging etcd writes the revisions itself, about as fast as etcd
    # commits: past this the restore goes without the bump and says what to restart instead
    bump_budget: float = opt("duration", 60.0, within=("0s", "1h"))


@dataclass(frozen=True)
class BackupConfig:
    # files a restore needs besides etcd's data (the kube-apiserver's EncryptionConfiguration,
    # etcd's PKI): paths or globs, archived inside each backup's own age encryption
    include_files: tuple[str, ...] = opt("list", ())


@dataclass(frozen=True)
class DrConfig:
    # the seed's targets: etcd restored and serving (steps 1-2), and the cluster recovered (1-5)
    restore_target: float = opt("duration", 300.0, within=("1s", "1d"))
    recovery_target: float = opt("duration", 600.0, within=("1s", "1d"))


@dataclass(frozen=True)
class ScheduleConfig:
    # the periods of the unattended jobs: the timers' and the daemon's
    snapshot_every: float = opt("duration", 3600.0, within=("1s", "7d"))
    maintain_every: float = opt("duration", 60.0, within=("1s", "1d"))
    drill_every: float = opt("duration", 86400.0, within=("1s", "30d"))
    # the TTL of the lease that holds a period's election: a node that dies mid-save keeps the
    # period from the others this long at most
    election_ttl: float = opt("duration", 30.0, within=("5s", "10m"))
    # how long the daemon lets a running job finish after SIGTERM before abandoning it
    stop_timeout: float = opt("duration", 60.0, within=("1s", "1h"))


@dataclass(frozen=True)
class JournalConfig:
    # a segment is cut every interval (empty intervals write nothing) or at max_bytes
    interval: float = opt("duration", 5.0, within=("100ms", "10m"))
    max_bytes: int = opt("size", 4 * 1024**2, within=("64KiB", "64MiB"),
                         why="a segment is sealed and read whole in memory")
    # the data-loss window the journal is held to (health, metrics): the seed's minute, halved
    rpo_target: float = opt("duration", 30.0, within=("1s", "1d"))
    # further behind than this (a store or etcd slow for long), a full backup starts a new chain
    max_lag: float = opt("duration", 300.0, within=("10s", "1d"))
    # a point-in-time restore replays up to a chain's length, one revision at a time (about
    # 1,700/s on the 2-core test host): past this many revisions a full backup is taken and a
    # new chain starts at it, so the replay stays inside the 5-minute restore target
    max_chain_revisions: int = opt("int", 300_000, within=(1_000, None))
    # a lease granted after the base backup is not in it: a replay creates it with its id and
    # this TTL (etcd's watch does not carry TTLs); restored leases count down from their TTL
    replay_lease_ttl: float = opt("duration", 3600.0, within=("1s", "30d"))


@dataclass(frozen=True)
class MetricsConfig:
    # node_exporter's textfile collector directory; unset: no metrics files are written
    textfile_dir: Path | None = opt("path")


@dataclass(frozen=True)
class Config:
    cluster: str = opt("str", "default")
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    s3: S3Config | None = None
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    defrag: DefragConfig = field(default_factory=DefragConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    dr: DrConfig = field(default_factory=DrConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    source: str = field(default="built-in defaults", metadata={"kind": "internal"})
    # what the caller should tell the operator (this layer never prints)
    warnings: tuple[str, ...] = field(default=(), metadata={"kind": "internal"})


SECTIONS: dict[str, type] = {
    "etcd": EtcdConfig,
    "encryption": EncryptionConfig,
    "local": LocalConfig,
    "compaction": CompactionConfig,
    "defrag": DefragConfig,
    "health": HealthConfig,
    "s3": S3Config,
    "retention": RetentionConfig,
    "restore": RestoreConfig,
    "backup": BackupConfig,
    "dr": DrConfig,
    "schedule": ScheduleConfig,
    "metrics": MetricsConfig,
    "journal": JournalConfig,
}
