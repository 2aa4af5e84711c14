"""`etcdops daemon`: the timers' jobs on their [schedule] periods, in one process.

One job runs at a time, in the main thread, so that jobs never overlap and a signal can unwind
the one running. Every job runs once at start (what the timers' Persistent=true does for a
missed run), then one period after its last run ended: a job that waited behind another or a
host that slept runs once when it can, not once per missed period (schedule's rule). A job that
fails is logged and counted; the loop goes on.

The loop waits on an Event, so that a signal wakes it at once. SIGTERM stops the daemon: at once
when idle; while a job runs, after the job, or, once [schedule] stop_timeout has passed (or at a
second SIGTERM), by raising KeyboardInterrupt in it, so that the job unwinds as it does at
Ctrl-C and removes what it had half written. SIGHUP reloads the configuration; a configuration
that does not load leaves the one in force.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
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


@dataclass
class Counts:
    runs: int = 0
    failures: int = 0


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
        self._entries: dict[str, schedule.Job] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._reload_asked = False
        self._running: str | None = None
        self._abandon_timer: threading.Timer | None = None
        self.counts = {name: Counts() for name in self._jobs}
        self.config = load()
        self.plan(self.config)

    def plan(self, config: Config) -> None:
        """Schedule every job on config's periods, each from its last run (never run: now)."""
        now = datetime.now()
        last_runs = {name: entry.last_run for name, entry in self._entries.items()}
        self._scheduler.clear()
        for name, job in self._jobs.items():
            period = job.period(config.schedule)
            entry = self._scheduler.every(period).seconds.do(self._run_job, name)
            entry.last_run = last_runs.get(name)
            # a next run in the past is due at once
            entry.next_run = now if entry.last_run is None else (
                entry.last_run + timedelta(seconds=period)
            )
            self._entries[name] = entry

    def next_runs(self) -> dict[str, datetime]:
        """When each job runs next (wall clock)."""
        return {name: entry.next_run for name, entry in self._entries.items()}

    def run(self) -> int:
        """Run jobs as they come due until SIGTERM (or stop()); 0, as a stop is no failure."""
        periods = ", ".join(
            f"{name} every {format_duration(job.period(self.config.schedule))}"
            for name, job in self._jobs.items()
        )
        log.info("daemon started: %s", periods)
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
        for entry in sorted(e for e in self._scheduler.jobs if e.should_run):
            if self._stopping or self._reload_asked:
                return
            entry.run()

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

    def stop(self) -> None:
        """Stop after the running job (what SIGTERM asks)."""
        self._stopping = True
        self._wake.set()

    def _idle(self) -> float:
        idle = self._scheduler.idle_seconds
        return MAX_WAIT if idle is None else min(max(idle, 0.0), MAX_WAIT)

    def _run_job(self, name: str) -> None:
        """One run of a job: its start and end logged, a failure counted and not raised."""
        job, counts = self._jobs[name], self.counts[name]
        counts.runs += 1
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
            finally:
                self._running = None

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
