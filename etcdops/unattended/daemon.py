"""`etcdops daemon`: the timers' jobs on their [schedule] periods, in one process.

One job runs at a time, in the main thread, so that jobs never overlap and a signal can unwind
the one running. Every job runs once at start (what the timers' Persistent=true does for a
missed run). The snapshot job then runs at the start of each of its periods, floored on the
epoch as the election's are (OnCalendar=hourly), plus a random delay of up to a thirtieth of the
period and 2 minutes at most (RandomizedDelaySec=): a period after the last run would drift
later by the job's duration each time, and now and then leave a period with no run. The other
jobs run one period after their last run ended. Either way a job that waited behind another, or
a host that slept, runs once when it can, not once per missed period. A job that fails is logged
and counted; the loop goes on. A job that cannot run on this host (the drill without an age
identity) is not scheduled, and the start says why.

Due times are epoch seconds, compared with time.time(): schedule's own naive local datetimes
repeat an hour at a DST fall-back, which would hold a job an hour (or run one early).

The loop waits on an Event, so that a signal wakes it at once. SIGTERM stops the daemon: at once
when idle; while a job runs, after the job, or, once [schedule] stop_timeout has passed (or at a
second SIGTERM), by raising KeyboardInterrupt in it, so that the job unwinds as it does at
Ctrl-C and removes what it had half written. SIGHUP reloads the configuration; a configuration
that does not load leaves the one in force.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import schedule

from etcdops.config import Config
from etcdops.errors import EtcdopsError
from etcdops.report import LogReporter, Reporter, fields, log_scope
from etcdops.unattended.jobs import JOBS, Job
from etcdops.units import format_duration

log = logging.getLogger("etcdops.unattended.daemon")

# The longest wait between two looks at the clock. The Event's timeout runs on the monotonic
# clock, which stands still while the host sleeps; the schedule is on the wall clock.
MAX_WAIT = 30.0
# the snapshot timer's RandomizedDelaySec=, the longest an aligned job's start is spread
MAX_SPREAD = 120.0


@dataclass
class Counts:
    runs: int = 0
    failures: int = 0


@dataclass
class _Runs:
    """A job's last run, epoch seconds, and when it asked to run again (Outcome.again_in)."""

    started: float | None = None
    ended: float | None = None
    again_at: float | None = None


class _Entry(schedule.Job):
    """A schedule job that is due at an epoch second rather than at a naive local time."""

    def __init__(self, period: float, scheduler: schedule.Scheduler) -> None:
        super().__init__(period, scheduler)  # type: ignore[arg-type]  # works with a float
        self.due = 0.0

    @property
    def should_run(self) -> bool:
        return time.time() >= self.due

    def set_due(self, due: float) -> None:
        self.due = due
        self.next_run = datetime.fromtimestamp(due)  # what schedule shows, local time


class Daemon:
    """The loop; `load` reads the configuration (at start and at each SIGHUP)."""

    def __init__(
        self,
        load: Callable[[], Config],
        *,
        jobs: tuple[Job, ...] = JOBS,
        reporter: Reporter | None = None,
    ) -> None:
        self._load = load
        self._jobs = {job.name: job for job in jobs}
        self._reporter = reporter or LogReporter()
        self._scheduler = schedule.Scheduler()  # never schedule's global one
        self._entries: dict[str, _Entry] = {}
        self._runs = {name: _Runs() for name in self._jobs}
        self.unscheduled: dict[str, str] = {}  # job name: why it does not run on this host
        self._wake = threading.Event()
        self._stopping = False
        self._reload_asked = False
        self._running: str | None = None
        self._abandon_timer: threading.Timer | None = None
        self.counts = {name: Counts() for name in self._jobs}
        self.config = load()
        self.plan(self.config)

    def plan(self, config: Config) -> None:
        """Schedule every job that fits this host on config's periods, each from its last run
        (never run: now)."""
        self._scheduler.clear()
        self._entries = {}
        self.unscheduled = {}
        for name, job in self._jobs.items():
            why = job.unfit(config)
            if why is not None:
                self.unscheduled[name] = why
                continue
            entry = _Entry(job.period(config.schedule), self._scheduler)
            entry.seconds.do(self._run_job, name)
            entry.set_due(self._due(job, self._runs[name], config))
            self._entries[name] = entry

    def next_runs(self) -> dict[str, datetime]:
        """When each scheduled job runs next (local time, as schedule keeps it)."""
        return {name: entry.next_run for name, entry in self._entries.items()}

    def _due(self, job: Job, runs: _Runs, config: Config) -> float:
        """When a job runs next, epoch seconds: now if it never ran; a due time in the past is
        due at once."""
        if runs.started is None or runs.ended is None:
            return time.time()
        period = job.period(config.schedule)
        if job.aligned:
            from etcdops.backup.period import Period

            # the period after the one the last run started in: one that ended during the
            # run (an overrun) is still due at once
            moment = datetime.fromtimestamp(runs.started, UTC)
            start = Period.of(config.cluster, moment, period).end.timestamp()
            due = start + random.uniform(0.0, min(MAX_SPREAD, period / 30))
        else:
            due = runs.ended + period
        return due if runs.again_at is None else min(due, runs.again_at)

    def run(self) -> int:
        """Run jobs as they come due until SIGTERM (or stop()); 0, as a stop is no failure."""
        periods = ", ".join(
            f"{name} every {format_duration(self._jobs[name].period(self.config.schedule))}"
            for name in self._entries
        )
        log.info("daemon started: %s", periods)
        self._say_unscheduled()
        with self._signals():
            try:
                while not self._stopping:
                    if self._reload_asked:
                        self.reload()
                    self.run_due()
                    if self._stopping:
                        break
                    self._wake.wait(self._idle())
                    self._wake.clear()
            except KeyboardInterrupt:
                # the abandon signal can land just after its job ended
                if not self._stopping:
                    raise
            finally:
                if self._abandon_timer is not None:
                    self._abandon_timer.cancel()
        summary = "; ".join(
            f"{name} {c.runs} runs, {c.failures} failed" for name, c in self.counts.items()
        )
        log.info("daemon stopped: %s", summary)
        return 0

    def run_due(self) -> None:
        """Every job that is due, one after the other, until a stop or a reload is asked."""
        due = [(name, entry) for name, entry in self._entries.items() if entry.should_run]
        for name, entry in sorted(due, key=lambda item: item[1].due):
            if self._stopping or self._reload_asked:
                return
            entry.run()
            entry.set_due(self._due(self._jobs[name], self._runs[name], self.config))

    def reload(self) -> None:
        """Read the configuration again; keep the one in force if it does not load."""
        self._reload_asked = False
        try:
            config = self._load()
        except EtcdopsError as exc:
            log.error("reload failed, the configuration in force stays: %s", exc.message,
                      extra=fields(hint=exc.hint))
            return
        self.config = config
        self.plan(config)
        log.info("configuration reloaded from %s", config.source)
        self._say_unscheduled()

    def stop(self) -> None:
        """Stop after the running job (what SIGTERM asks)."""
        self._stopping = True
        self._wake.set()

    def _say_unscheduled(self) -> None:
        for name, why in self.unscheduled.items():
            log.info("%s: not scheduled: %s", name, why)

    def _idle(self) -> float:
        if not self._entries:
            return MAX_WAIT
        idle = min(entry.due for entry in self._entries.values()) - time.time()
        return min(max(idle, 0.0), MAX_WAIT)

    def _run_job(self, name: str) -> None:
        """One run of a job: its start and end logged, a failure counted and not raised."""
        job, counts, runs = self._jobs[name], self.counts[name], self._runs[name]
        counts.runs += 1
        runs.started, runs.again_at = time.time(), None
        started = time.monotonic()
        with log_scope(job=name):
            log.info("%s: started", name)
            self._running = name
            try:
                outcome = job.run(self.config, self._reporter)
            except EtcdopsError as exc:
                counts.failures += 1
                self._failed(name, started, counts, exc.message, exc.hint, exc)
            except KeyboardInterrupt as exc:
                if not self._stopping:
                    raise  # Ctrl-C: the daemon stops as any command does
                took = time.monotonic() - started
                # an Interrupted says what the job had kept
                log.warning(
                    "%s: abandoned after %s, to stop: %s", name, format_duration(took),
                    getattr(exc, "message", "interrupted; nothing half-written was kept"),
                    extra=fields(duration=round(took, 3)),
                )
            except Exception as exc:  # a bug in one job must not stop the others
                counts.failures += 1
                self._failed(name, started, counts,
                             f"internal error: {type(exc).__name__}: {exc}",
                             "rerun with -v for the traceback, and report it", exc)
            else:
                took = time.monotonic() - started
                log.info("%s: done in %s: %s", name, format_duration(took), outcome.summary,
                         extra=fields(duration=round(took, 3), **outcome.fields))
                if outcome.again_in is not None:
                    runs.again_at = time.time() + outcome.again_in
            finally:
                self._running = None
                runs.ended = time.time()

    def _failed(self, name: str, started: float, counts: Counts, message: str,
                hint: str | None, exc: BaseException) -> None:
        took = time.monotonic() - started
        verbose = log.isEnabledFor(logging.DEBUG)
        log.error(
            "%s: failed after %s (%d of %d runs): %s", name, format_duration(took),
            counts.failures, counts.runs, message, exc_info=exc if verbose else None,
            extra=fields(duration=round(took, 3), hint=hint, error_type=type(exc).__name__,
                         failures=counts.failures),
        )

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM and SIGHUP handled while the loop runs (only the main thread can)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_sigterm),
            signal.SIGHUP: signal.signal(signal.SIGHUP, self._on_sighup),
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._running is None:
            self.stop()
            return
        if self._stopping:
            # stop_timeout is over, or a second SIGTERM: the job unwinds as at Ctrl-C
            raise KeyboardInterrupt
        self.stop()
        timeout = self.config.schedule.stop_timeout
        log.info("SIGTERM: stopping after %s ends (abandoned after %s)", self._running,
                 format_duration(timeout))
        main = threading.main_thread().ident
        assert main is not None
        # a signal to the main thread, not a flag: it interrupts a blocking call there too
        self._abandon_timer = threading.Timer(
            timeout, signal.pthread_kill, (main, signal.SIGTERM)
        )
        self._abandon_timer.daemon = True
        self._abandon_timer.start()

    def _on_sighup(self, signum: int, frame: Any) -> None:
        self._reload_asked = True
        self._wake.set()
