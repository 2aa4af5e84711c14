"""One backup per cluster per period, whichever control-plane node's timer fires first.

Every node runs the same hourly `etcdops snapshot save`. The period is the node's clock floored
to `[schedule] snapshot_every` (UTC, from the epoch), so every node names the same one. Before
saving, a node asks etcd and the catalogue whether the period is done or being done:

1. the period's election key, /etcdops/periods/<cluster>/snapshot/<start>: a node holds it while
   it saves (host, pid, start), and the node that saved keeps it until the period ends (its
   backup id added);
2. a verified backup created within the period in the stores every node shares (the S3 stores;
   the local store when it is the only one): taken with --force, or after the key expired;
3. otherwise it runs for the key (etcd/election.py): one transaction creates it only if absent,
   under a lease of `[schedule] election_ttl` kept alive while the save runs. Of any number of
   nodes asking in the same second exactly one wins; the others read who did.

A node that finds the key held by a save still running waits (unless told not to): it looks at the
key every third of the TTL until the saver settles it with its backup id (done: nothing to do),
or until the key is gone, and then it runs for the key again (and of the nodes waiting, one
wins and the others wait again). A node that dies mid-save stops renewing: the key goes when its
lease expires, and a node waiting takes the period. The wait ends, with nothing done, after
`[etcd] snapshot_timeout` (the longest a save's stream may take) or at the end of the period,
whichever comes first. A save that fails, or stores its backup nowhere but this host's disk
(S3 down), revokes the key at once so that another node may do better; in the worst case, when
S3 fails for every node, each one keeps a local backup. If the keep-alive loses the lease
mid-save the backup is kept all the same (a good backup is never thrown away) and the outcome
warns that another node may also have saved the period.

Under NOSPACE etcd refuses every write, the key's lease first, and that is when a backup matters
most: the node saves without the election (after the same look at the key and the catalogue),
and warns that another node may save the period too, as defragmentation does then.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from etcdops.backup.catalog import Survey, survey_stores
from etcdops.backup.save import SaveResult, save_snapshot
from etcdops.config import Config
from etcdops.crypto.keys import configured_recipients
from etcdops.errors import EtcdopsError, EtcdUnavailableError
from etcdops.etcd.election import Holder, Taken, Term, election_key
from etcdops.metrics import job_metrics
from etcdops.report import Reporter
from etcdops.stores.configured import Stores, open_stores

if TYPE_CHECKING:
    from etcdops.etcd.session import EtcdSession
    from etcdops.stores.base import Store

# how long a run waits for the catalogue before it elects without it: the election alone keeps
# the period to one node, and the local copy must not wait on a hung S3
CATALOGUE_BUDGET = 10.0
# how long the key of a saved period outlives the period: a node whose clock lags etcd's (or a
# timer that fires late) still finds the period done rather than taking a second backup
DONE_MARGIN = 300.0
# the warning of a save under NOSPACE, which etcd lets no one win the period's key
UNELECTED = (
    "NOSPACE is raised and etcd takes no writes, not even the election's: saving without it; "
    "another node may save this period too"
)


@dataclass(frozen=True)
class Period:
    """One cluster's snapshot period: [start, start + every), UTC."""

    cluster: str
    start: datetime
    every: float

    @classmethod
    def of(cls, cluster: str, moment: datetime, every: float) -> Period:
        """The period a moment falls in: the epoch's seconds floored to a multiple of every."""
        epoch = moment.timestamp()
        start = datetime.fromtimestamp(math.floor(epoch / every) * every, UTC)
        return cls(cluster, start, every)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.every)

    @property
    def label(self) -> str:
        return self.start.strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def key(self) -> bytes:
        """The period's election key in etcd."""
        return election_key(self.cluster, "snapshot", self.label)

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def as_dict(self) -> dict[str, object]:
        return {"cluster": self.cluster, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "key": self.key.decode()}


@dataclass(frozen=True)
class ExistingBackup:
    """A verified backup created within the period, found in the catalogue."""

    id: str
    created_at: datetime
    verified_in: tuple[str, ...]


@dataclass(frozen=True)
class PeriodOutcome:
    """What one run did for its period: saved (result), or found it taken (holder) or done
    (existing) and did nothing."""

    period: Period
    result: SaveResult | None = None
    elected: bool = False  # False for a save that took no part in the election (--force)
    holder: Holder | None = None
    existing: ExistingBackup | None = None
    warnings: tuple[str, ...] = ()
    waited: float = 0.0  # seconds spent waiting for another node's save

    @property
    def skipped(self) -> bool:
        return self.result is None

    @property
    def backup_id(self) -> str | None:
        """The period's backup: the one this run saved, or the one it found the period done
        with; None while another node's save still runs."""
        if self.result is not None:
            return self.result.manifest.id
        if self.existing is not None:
            return self.existing.id
        return self.holder.backup_id if self.holder is not None else None

    def summary(self) -> str:
        """Why a skipped run did nothing, in one line for the operator or the daemon's log."""
        where = f"period {self.period.label} of cluster {self.period.cluster}"
        if self.holder is not None:
            holder = self.holder
            if holder.backup_id:
                return (f"{where} already has backup {holder.backup_id} by {holder.who}: "
                        "nothing to do")
            if self.waited:
                return (f"{where} is still being taken by {holder.who}{holder.since}, after "
                        f"waiting {self.waited:.0f}s for it: nothing to do")
            when = f" at {holder.started_at:%Y-%m-%d %H:%M:%S}Z" if holder.started_at else ""
            return f"{where} already taken by {holder.who}{when}: nothing to do"
        if self.existing is not None:
            return (f"{where} already has backup {self.existing.id}, verified in "
                    f"{', '.join(self.existing.verified_in)}: nothing to do")
        return f"{where}: backup {self.result.manifest.id}" if self.result else where

    def as_dict(self) -> dict[str, object]:
        """The JSON form: the save's own (SaveResult's) when it saved, else who took the period."""
        doc: dict[str, object] = {
            "skipped": self.skipped, "period": self.period.as_dict(), "elected": self.elected,
            "warnings": list(self.warnings), "waited_seconds": round(self.waited, 3),
        }
        if self.result is not None:
            return self.result.as_dict() | doc
        existing = self.existing
        return doc | {
            "message": self.summary(),
            "holder": self.holder.as_dict() if self.holder else None,
            "backup": {
                "id": existing.id, "created_at": existing.created_at.isoformat(),
                "verified_in": list(existing.verified_in),
            } if existing else None,
        }


def save_once_per_period(
    config: Config,
    reporter: Reporter,
    *,
    stores: Stores | None = None,
    force: bool = False,
    wait: bool = True,
    now: datetime | None = None,
) -> PeriodOutcome:
    """Take the period's backup unless another node has taken it or is taking it; with force,
    take one regardless, outside the election. With wait, a save still running on another node
    is waited for, and its period taken over if that node dies or gives it up.

    now names the period (default: the clock's); an error of the save itself propagates, after
    the period was given up so that another node may take it. A run that fails before its save
    starts is counted in the snapshot job's metrics as a failed save is.
    """
    started = datetime.now(UTC)
    period = Period.of(config.cluster, now or started, config.schedule.snapshot_every)
    stores = stores or open_stores(config)
    if force:
        return PeriodOutcome(period, save_snapshot(config, reporter, stores=stores))
    from etcdops.etcd.session import EtcdSession

    # a save's stream cannot outlast snapshot_timeout, and once the period is over the next
    # period's timers take over
    bound = min(config.etcd.snapshot_timeout, (period.end - started).total_seconds())
    waiting = _Waiting(period, reporter, config.schedule.election_ttl, bound) if wait else None
    with contextlib.ExitStack() as opened:
        try:
            # a configuration that cannot save says so before etcd is asked anything
            # (save_snapshot reads the recipients again: they are a few lines)
            configured_recipients(config.encryption)
            etcd = opened.enter_context(EtcdSession(config.etcd))
            won = _elect(config, reporter, stores, period, etcd, waiting)
        except BaseException as exc:
            _count_failure(config, stores, exc)
            raise
        if isinstance(won, PeriodOutcome):
            return won
        if won is None:
            outcome = PeriodOutcome(
                period, save_snapshot(config, reporter, stores=stores), warnings=(UNELECTED,)
            )
        else:
            outcome = _elected_save(config, reporter, stores, period, won)
        return replace(outcome, waited=_waited(waiting))


def _elect(
    config: Config, reporter: Reporter, stores: Stores, period: Period, etcd: EtcdSession,
    waiting: _Waiting | None,
) -> Term | PeriodOutcome | None:
    """The period's key, won; or a skipped outcome saying who took the period or which backup
    is already in it; None under NOSPACE, when etcd refuses the key and the save goes on
    without it (a backup matters most then)."""
    while True:
        taken = etcd.holder(period.key)
        if taken is None:
            # looked at again after a wait too: a saver that lost its lease still saved
            existing = _backup_in_period(stores, period, reporter)
            if existing is not None:
                return PeriodOutcome(period, existing=existing, waited=_waited(waiting))
            term = _campaign(config, reporter, period, etcd)
            if not isinstance(term, Taken):
                return term
            taken = term
        holder = Holder.from_json(taken.value)
        if holder.backup_id or waiting is None or not waiting.again(taken, holder):
            return PeriodOutcome(period, holder=holder, waited=_waited(waiting))


def _count_failure(config: Config, stores: Stores, exc: BaseException) -> None:
    """The snapshot job's metrics for a run that failed before save_snapshot, which counts
    its own runs: bad recipients, etcd unreachable, a failed campaign. A skipped run counts
    nothing."""
    recorder = job_metrics(config, "snapshot", stores=stores)
    # what the backup-age alert measures against, as save_snapshot records it
    recorder.__enter__().set("period_seconds", config.schedule.snapshot_every)
    # job_metrics counts the exception that leaves its block as the run's failure and hands
    # it back: given exc itself, it records and lets the caller raise exc as it was
    recorder.__exit__(type(exc), exc, exc.__traceback__)


class _Waiting:
    """A node's wait for the save that holds its period: the key read every third of the TTL,
    until the period's end or snapshot_timeout."""

    def __init__(self, period: Period, reporter: Reporter, ttl: float, bound: float) -> None:
        self._period = period
        self._reporter = reporter
        self._interval = ttl / 3  # a dead saver's key is gone at most a TTL after its death
        self._deadline = time.monotonic() + bound
        self._seen: int | None = None  # the create revision of the key last announced
        self._since: float | None = None

    @property
    def seconds(self) -> float:
        """How long this node has waited, 0 if it never did."""
        return 0.0 if self._since is None else time.monotonic() - self._since

    def again(self, taken: Taken, holder: Holder) -> bool:
        """Whether to look at the key again: after a pause, unless the wait is over."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            return False
        if taken.create_revision != self._seen:
            # once per holder: a second round's winner is announced too
            self._seen = taken.create_revision
            self._since = self._since or time.monotonic()
            self._reporter.event(
                f"period {self._period.label} held by {holder.who}{holder.since}: waiting for "
                "it to finish or its lease to expire"
            )
        # a plain sleep: SIGTERM's KeyboardInterrupt ends it, and nothing is held meanwhile
        time.sleep(min(self._interval, left))
        return True


def _waited(waiting: _Waiting | None) -> float:
    return waiting.seconds if waiting is not None else 0.0


def _campaign(
    config: Config, reporter: Reporter, period: Period, etcd: EtcdSession
) -> Term | Taken | None:
    def lost(why: str) -> None:
        reporter.event(f"{why}: another node may take period {period.label} too; this save goes on")

    # stamped as the key is taken: a node waiting says how long this save has run, however
    # long this process waited before
    me = Holder.me(datetime.now(UTC))
    try:
        return etcd.campaign(period.key, me.to_json(), config.schedule.election_ttl,
                             on_lost=lost)
    except EtcdUnavailableError:
        if _nospace(etcd):
            return None
        raise


def _nospace(etcd: EtcdSession) -> bool:
    """Whether NOSPACE is raised: then etcd refuses every write, the election's lease first."""
    try:
        return any(alarm.nospace for alarm in etcd.alarms())
    except EtcdopsError:
        return False  # the campaign's own error says what is wrong


def _elected_save(
    config: Config, reporter: Reporter, stores: Stores, period: Period, term: Term
) -> PeriodOutcome:
    reporter.event(f"elected to take period {period.label} of cluster {period.cluster} "
                   f"(lease {term.kept.ttl}s, kept alive while the save runs)")
    kept = False  # the period is given up otherwise: another node may take it now
    try:
        result = save_snapshot(config, reporter, stores=stores)
        # a backup on this host's disk alone (or short of S3): another node may store it better
        kept = not result.failures or stores.partial(result.failures)
    finally:
        if not kept:
            why = term.let_go()
            reporter.event(f"gave up period {period.label}: another node may take it"
                           if why is None else f"could not give up period {period.label} ({why})")
    if not kept:
        return PeriodOutcome(period, result, elected=True)
    # the holder as the key was taken, with what it made
    done = replace(Holder.from_json(term.value), backup_id=result.manifest.id,
                   finished_at=datetime.now(UTC))
    remaining = max((period.end - datetime.now(UTC)).total_seconds(), 0.0)
    try:
        settled, why = term.settle(done.to_json(), remaining + DONE_MARGIN), term.lost
    except EtcdopsError as exc:
        settled, why = False, exc.message
    if settled:
        return PeriodOutcome(period, result, elected=True)
    warning = (
        f"the election of period {period.label} was lost during the save "
        f"({why or 'its key was gone'}): backup {result.manifest.id} is kept, and another "
        "node may also have saved this period"
    )
    return PeriodOutcome(period, result, elected=True, warnings=(warning,))


def _backup_in_period(
    stores: Stores, period: Period, reporter: Reporter
) -> ExistingBackup | None:
    """The newest backup created within the period and verified in a store every node shares;
    None too when the stores cannot say so within CATALOGUE_BUDGET."""
    shared = _shared_stores(stores)
    outcome: list[Survey | Exception] = []

    def read() -> None:
        try:
            outcome.append(survey_stores(shared, period.cluster))
        except Exception as exc:  # said below: the election decides without the catalogue
            outcome.append(exc)

    # on a thread of its own, so that a hung S3 is left behind rather than waited for
    worker = threading.Thread(target=read, name="period-catalogue", daemon=True)
    worker.start()
    worker.join(CATALOGUE_BUDGET)
    if not outcome:
        reporter.event(f"the {' and '.join(shared)} catalogue did not answer within "
                       f"{CATALOGUE_BUDGET:g}s; electing without it")
        return None
    if isinstance(outcome[0], Exception):
        reporter.event(f"the {' and '.join(shared)} catalogue could not be read "
                       f"({outcome[0]}); electing without it")
        return None
    found = outcome[0]
    for name, exc in found.unreachable.items():
        reporter.event(f"the {name} store could not be listed ({exc.message}); electing anyway")
    for view in reversed(found.backups):
        if period.holds(view.manifest.created_at) and view.verified_in:
            return ExistingBackup(view.manifest.id, view.manifest.created_at,
                                  tuple(view.verified_in))
    return None


def _shared_stores(stores: Stores) -> Mapping[str, Store]:
    """The stores every node writes: all but this host's own, unless it is the only one."""
    shared = {name: stores[name] for name in stores if name != stores.local}
    return shared or {name: stores[name] for name in stores}

