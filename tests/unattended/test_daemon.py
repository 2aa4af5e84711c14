"""etcdops daemon: the loop's rules in-process with stand-in jobs (periods, the epoch-aligned
snapshot period, a look again asked by a job), then the real command as a process against a
real etcd and a local store (jobs on their periods, failures, SIGTERM idle and mid-job, SIGHUP,
the missed-period rule, the drill where there is no identity)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from etcdops.config import Config
from etcdops.config.settings import ScheduleConfig
from etcdops.errors import ConfigError, EtcdUnavailableError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalCluster
from etcdops.unattended.daemon import Daemon
from etcdops.unattended.jobs import Job, Outcome
from tests.fixtures.waiting import wait_for

# --- the loop, in-process ----------------------------------------------------------------


class Recorder:
    """Stand-in jobs that record their runs; `fail` and `work` say what a run does."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.fail: set[str] = set()
        self.work: dict[str, Callable[[], None]] = {}
        self.again_in: dict[str, list[float]] = {}  # each run takes the first one left

    def job(self, name: str, setting: str, aligned: bool = False) -> Job:
        def run(config: Config, reporter: Any) -> Outcome:
            self.runs.append(name)
            self.work.get(name, lambda: None)()
            if name in self.fail:
                raise EtcdUnavailableError(f"{name} cannot reach etcd", "start etcd")
            again = self.again_in.get(name) or [None]
            return Outcome(f"{name} ok", again_in=again.pop(0))

        return Job(name, setting, run, aligned=aligned)


def schedule_config(**periods: float) -> Config:
    return Config(schedule=ScheduleConfig(**periods))


class Clock:
    """The daemon module's time, standing still unless a job's work moves it: the loop's rules
    checked exactly, not as a busy machine happens to schedule a thread."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def work(self, seconds: float) -> Callable[[], None]:
        def run() -> None:
            self.now += seconds

        return run


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    import etcdops.unattended.daemon

    # a quarter into a second: not on a period's boundary
    fake = Clock(1_800_000_000.25)
    monkeypatch.setattr(etcdops.unattended.daemon, "time", fake)
    return fake


def daemon_of(recorder: Recorder, load: Callable[[], Config]) -> Daemon:
    jobs = (recorder.job("slow", "snapshot_every"), recorder.job("quick", "maintain_every"))
    return Daemon(load, jobs=jobs)


def test_every_job_runs_at_start_then_a_period_after_its_last_run() -> None:
    recorder = Recorder()
    daemon = daemon_of(recorder, lambda: schedule_config(snapshot_every=3600, maintain_every=60))
    daemon.run_due()
    ended = datetime.now()
    assert recorder.runs == ["slow", "quick"]
    next_runs = daemon.next_runs()
    assert ended < next_runs["quick"] <= ended + timedelta(seconds=60)
    assert ended + timedelta(seconds=3000) < next_runs["slow"] <= ended + timedelta(seconds=3600)
    daemon.run_due()
    assert recorder.runs == ["slow", "quick"]  # nothing was due again


def test_a_job_that_waited_through_several_periods_runs_once(clock: Clock) -> None:
    recorder = Recorder()
    # the slow job's run takes five of the quick job's periods
    recorder.work["slow"] = clock.work(0.5)
    daemon = daemon_of(recorder, lambda: schedule_config(snapshot_every=3600, maintain_every=0.1))
    daemon.run_due()
    daemon.run_due()
    assert recorder.runs == ["slow", "quick"]
    assert daemon.next_runs()["quick"].timestamp() == pytest.approx(clock.now + 0.1)


def test_a_failed_job_is_logged_with_its_hint_counted_and_the_others_run(caplog: Any) -> None:
    recorder = Recorder()
    recorder.fail.add("slow")
    daemon = daemon_of(recorder, lambda: schedule_config(snapshot_every=3600, maintain_every=60))
    with caplog.at_level(logging.INFO, logger="etcdops"):
        daemon.run_due()
    assert recorder.runs == ["slow", "quick"]
    assert (daemon.counts["slow"].runs, daemon.counts["slow"].failures) == (1, 1)
    assert (daemon.counts["quick"].runs, daemon.counts["quick"].failures) == (1, 0)
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 1
    assert "slow: failed after" in failed[0].getMessage()
    assert "slow cannot reach etcd" in failed[0].getMessage()
    assert failed[0].etcdops_fields["hint"] == "start etcd"


def test_a_reload_applies_new_periods_from_the_last_run_and_a_bad_one_keeps_the_old(
    caplog: Any,
) -> None:
    recorder = Recorder()
    configs: list[Config | Exception] = [
        schedule_config(snapshot_every=3600, maintain_every=60),
        schedule_config(snapshot_every=3600, maintain_every=600),
        ConfigError("bad.toml:3: not a setting", "fix the file"),
    ]

    def load() -> Config:
        loaded = configs.pop(0)
        if isinstance(loaded, Exception):
            raise loaded
        return loaded

    daemon = daemon_of(recorder, load)
    daemon.run_due()
    before = daemon.next_runs()["quick"]
    daemon.reload()
    assert daemon.config.schedule.maintain_every == 600
    # from the last run, not from the reload: 600 s after it instead of 60
    moved = daemon.next_runs()["quick"] - before
    assert timedelta(seconds=539) < moved < timedelta(seconds=541)
    with caplog.at_level(logging.INFO, logger="etcdops"):
        daemon.reload()
    assert daemon.config.schedule.maintain_every == 600
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["reload failed, the configuration in force stays: bad.toml:3: not a setting"]


def test_an_aligned_job_runs_once_in_every_period_however_long_it_takes(clock: Clock) -> None:
    # a run takes 60% of the period: a period after each run's end would leave every third
    # period without a run
    period, work = 1.0, clock.work(0.6)
    recorder, starts = Recorder(), []

    def record() -> None:
        starts.append(clock.now)
        work()

    recorder.work["snapshot"] = record
    jobs = (recorder.job("snapshot", "snapshot_every", aligned=True),)
    daemon = Daemon(lambda: schedule_config(snapshot_every=period), jobs=jobs)
    for _ in range(7):
        daemon.run_due()
        # the loop's wait: until the next run is due (a millisecond on, as next_runs() is
        # rounded to the microsecond)
        clock.now = max(clock.now, daemon.next_runs()["snapshot"].timestamp() + 0.001)
    periods = [math.floor(moment / period) for moment in starts]
    assert periods == list(range(periods[0], periods[0] + 7)), starts


def test_an_aligned_jobs_next_run_is_the_next_periods_start_plus_a_small_delay() -> None:
    recorder = Recorder()
    jobs = (recorder.job("snapshot", "snapshot_every", aligned=True),)
    daemon = Daemon(lambda: schedule_config(snapshot_every=3600), jobs=jobs)
    daemon.run_due()
    start = (math.floor(time.time() / 3600) + 1) * 3600
    due = daemon.next_runs()["snapshot"].timestamp()
    # at most 2 minutes later, as the timer's RandomizedDelaySec=2min
    assert start <= due <= start + 120


def test_a_job_asking_to_look_again_runs_then_and_then_on_its_period() -> None:
    recorder = Recorder()
    recorder.again_in["slow"] = [0.2]
    daemon = daemon_of(recorder, lambda: schedule_config(snapshot_every=3600, maintain_every=60))
    daemon.run_due()
    asked = datetime.now()
    assert daemon.next_runs()["slow"] <= asked + timedelta(seconds=0.2)
    wait_for(lambda: datetime.now() >= daemon.next_runs()["slow"], "the look again")
    daemon.run_due()
    assert recorder.runs == ["slow", "quick", "slow"]
    ended = datetime.now()
    assert ended + timedelta(seconds=3000) < daemon.next_runs()["slow"]


def test_a_job_unfit_for_the_host_is_not_scheduled_and_the_start_says_why(caplog: Any) -> None:
    recorder = Recorder()

    def unfit(config: Config) -> str | None:
        return None if config.schedule.drill_every < 60 else "no identity here"

    jobs = (recorder.job("quick", "maintain_every"),
            Job("drill", "drill_every", recorder.job("drill", "drill_every").run, unfit=unfit))
    configs = [schedule_config(maintain_every=3600, drill_every=86400),
               schedule_config(maintain_every=3600, drill_every=10)]
    daemon = Daemon(lambda: configs.pop(0), jobs=jobs)
    assert list(daemon.next_runs()) == ["quick"]
    with caplog.at_level(logging.INFO, logger="etcdops"):
        loop = threading.Thread(target=daemon.run)
        loop.start()
        wait_for(lambda: recorder.runs, "the first run")
        daemon.stop()
        loop.join(10)
    assert recorder.runs == ["quick"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["daemon started: quick every 60m00s",
                         "drill: not scheduled: no identity here"]
    daemon.reload()  # a configuration where the job fits
    assert list(daemon.next_runs()) == ["quick", "drill"]
    assert daemon.unscheduled == {}


# --- the command, as a process -----------------------------------------------------------


class DaemonProcess:
    """`etcdops daemon` running with JSON logs into a file that the test reads as it grows."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "etcdops", "daemon", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.handle,
            env=os.environ | {"ETCDOPS_LOG_FORMAT": "json"} | env,
        )

    def lines(self) -> list[dict[str, Any]]:
        """The log so far, one object per line (a line being written is left for later)."""
        text = self.log.read_text()
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def messages(self, start: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["message"].startswith(start)]

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            assert self.process.poll() is None, f"the daemon exited: {self.lines()}"
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout}s: {self.lines()}")

    def wait_messages(self, start: str, count: int = 1) -> list[dict[str, Any]]:
        """The lines that start so, once there are `count` of them."""
        return self.wait_for(
            f"{count} x {start!r}", lambda: (found := self.messages(start))[count - 1:] and found
        )

    def stop(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the daemon took to exit."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - sent

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.handle.close()


class Setup(NamedTuple):
    cluster: LocalCluster
    recipient: str
    identity: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One etcd and one age identity for the module's daemons."""
    from etcdops.crypto.keys import generate_identity_file

    base = tmp_path_factory.mktemp("daemon")
    identity = base / "identity.txt"
    recipient = str(generate_identity_file(identity))
    with LocalCluster.single(base / "etcd") as cluster:
        yield Setup(cluster, recipient, identity)


@pytest.fixture
def start(setup: Setup, tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Starts daemons on a config of the given [schedule] and [etcd] settings; kills leftovers."""
    started: list[DaemonProcess] = []
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    def launch(**settings: str | None) -> DaemonProcess:
        write_config(setup, tmp_path, **settings)
        daemon = DaemonProcess(
            tmp_path / "etcdops.toml", tmp_path / f"daemon-{len(started)}.log",
            {"TMPDIR": str(scratch)},
        )
        started.append(daemon)
        return daemon

    yield launch
    for daemon in started:
        daemon.close()


def write_config(setup: Setup, directory: Path, **settings: str | None) -> Path:
    """etcdops.toml backing setup's etcd up into directory/backups; settings are "etcd.key"
    (None: the setting is left out)."""
    tables: dict[str, dict[str, str]] = {
        "etcd": {"endpoints": f'["{setup.cluster.client_urls[0]}"]'},
        "encryption": {"recipients": f'["{setup.recipient}"]',
                       "identity_file": f'"{setup.identity}"'},
        "local": {"dir": f'"{directory / "backups"}"'},
        "schedule": {"snapshot_every": '"1h"', "maintain_every": '"1h"', "drill_every": '"1h"'},
    }
    for dotted, value in settings.items():
        section, key = dotted.split(".")
        if value is None:  # left out
            tables[section].pop(key)
        else:
            tables.setdefault(section, {})[key] = value
    # a cluster of its own: the module's daemons share one etcd, where each period is taken once
    text = f'cluster = "{directory.name[-40:].strip("_")}"\n' + "".join(
        f"[{section}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
        for section, values in tables.items()
    )
    path = directory / "etcdops.toml"
    path.write_text(text)
    return path


def backups(directory: Path) -> list[Path]:
    return sorted((directory / "backups").rglob("*.manifest.json"))


def slow_etcdutl(directory: Path, seconds: float) -> Path:
    """An etcdutl whose restores first wait `seconds` (its pid in started.pid meanwhile): a
    drill that takes as long as the test needs. One process, so that a kill stops it all."""
    script = directory / "slow-etcdutl"
    marker = directory / "started.pid"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, time\n"
        "if '--help' not in sys.argv:\n"
        f"    open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        f"    time.sleep({seconds})\n"
        f"os.execv({str(find_binary('etcdutl'))!r}, ['etcdutl'] + sys.argv[1:])\n"
    )
    script.chmod(0o755)
    return script


def test_jobs_run_on_their_periods(start: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    daemon = start(**{"schedule.snapshot_every": '"1s"', "schedule.maintain_every": '"1s"'})
    daemon.wait_for("three backups", lambda: len(backups(tmp_path)) >= 3)
    daemon.wait_messages("maintain: done", 3)
    assert len(daemon.messages("drill: done")) == 1  # at start; its period is an hour
    done = daemon.messages("snapshot: done")
    assert all(line["backup_id"] in line["message"] for line in done)
    assert all(line["cluster"] and line["command"] == "daemon" for line in done)
    assert all(isinstance(line["duration"], float) for line in done)
    # never two jobs at once: each start follows the end of the one before
    events = [line["message"].split(":")[1].strip().split()[0] for line in daemon.lines()
              if line.get("job") and line["logger"] == "etcdops.unattended.daemon"]
    assert events[:6] == ["started", "done"] * 3
    assert all(a != b for a, b in zip(events, events[1:], strict=False))
    code, _ = daemon.stop(timeout=20)
    assert code == 0


def test_sigterm_when_idle_exits_at_once(start: Callable[..., DaemonProcess]) -> None:
    daemon = start()
    daemon.wait_messages("drill: done")
    code, took = daemon.stop(timeout=10)
    assert code == 0
    # at once: not after the next job's period (an hour), nor stop_timeout (60 s); the margin
    # is for the interpreter's exit on a loaded machine
    assert took < 5.0
    assert daemon.messages("daemon stopped: snapshot 1 runs, 0 failed")


def test_a_failing_job_is_logged_and_the_loop_goes_on(
    start: Callable[..., DaemonProcess], unreachable_endpoint: str, tmp_path: Path,
) -> None:
    daemon = start(**{
        "etcd.endpoints": f'["{unreachable_endpoint}"]', "etcd.dial_timeout": '"200ms"',
        "schedule.snapshot_every": '"1s"',
    })
    failed = daemon.wait_messages("snapshot: failed", 3)
    assert all(line["level"] == "error" and line["hint"] for line in failed)
    assert "cannot" in failed[0]["message"] or "unreachable" in failed[0]["message"]
    assert failed[-1]["failures"] >= 3
    assert daemon.messages("maintain: failed") and daemon.messages("drill: failed")
    assert daemon.process.poll() is None
    assert backups(tmp_path) == []
    code, _ = daemon.stop(timeout=20)
    assert code == 0


def test_sighup_reloads_the_config_and_a_bad_one_keeps_the_old(
    start: Callable[..., DaemonProcess], setup: Setup, tmp_path: Path
) -> None:
    daemon = start()
    daemon.wait_messages("drill: done")
    assert len(backups(tmp_path)) == 1
    write_config(setup, tmp_path, **{"schedule.snapshot_every": '"1s"'})
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for("backups every second", lambda: len(backups(tmp_path)) >= 3)
    assert daemon.messages("configuration reloaded")
    (tmp_path / "etcdops.toml").write_text("[schedule]\nsnapshot_every = 'soon'\n")
    daemon.process.send_signal(signal.SIGHUP)
    failed = daemon.wait_messages("reload failed")
    assert "snapshot_every" in failed[0]["message"] and failed[0]["hint"]
    count = len(backups(tmp_path))
    daemon.wait_for("backups on the old period", lambda: len(backups(tmp_path)) >= count + 2)
    code, _ = daemon.stop(timeout=20)
    assert code == 0


def test_a_period_missed_behind_a_long_job_runs_once_after_it(
    start: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    etcdutl = slow_etcdutl(tmp_path, 3.5)
    daemon = start(**{"schedule.maintain_every": '"1s"', "etcd.etcdutl": f'"{etcdutl}"'})
    drill_done = daemon.wait_messages("drill: done")
    ended = datetime.fromisoformat(drill_done[0]["timestamp"])

    def maintain_starts_after() -> list[datetime]:
        starts = [datetime.fromisoformat(line["timestamp"])
                  for line in daemon.messages("maintain: started")]
        return [moment for moment in starts if moment >= ended]

    after = daemon.wait_for("two maintain runs after the drill",
                            lambda: (s := maintain_starts_after()) and len(s) >= 2 and s)
    # three periods or more were missed during the drill: one run at its end, the next a
    # period later (not one run per missed period)
    # at its end, not the next period's (a second later); the margin is a loaded machine's
    assert after[0] - ended < timedelta(seconds=0.9)
    assert after[1] - after[0] >= timedelta(seconds=1)
    code, _ = daemon.stop(timeout=20)
    assert code == 0


@pytest.mark.parametrize(("work", "stop_timeout", "ending"), [
    (2.0, '"30s"', "drill: done"),  # finishes within stop_timeout
    (120.0, '"1s"', "drill: abandoned"),  # abandoned once stop_timeout has passed
])
def test_sigterm_during_a_job(
    start: Callable[..., DaemonProcess], tmp_path: Path, work: float, stop_timeout: str,
    ending: str,
) -> None:
    etcdutl = slow_etcdutl(tmp_path, work)
    daemon = start(**{"schedule.stop_timeout": stop_timeout, "etcd.etcdutl": f'"{etcdutl}"'})
    marker = tmp_path / "started.pid"
    daemon.wait_for("the drill's etcdutl", lambda: marker.exists() and marker.read_text())
    assert list((tmp_path / "tmp").iterdir())  # the drill's scratch directory
    code, took = daemon.stop(timeout=30)
    assert code == 0
    assert daemon.messages(ending)
    assert took < work + 10 if ending == "drill: done" else took < 10
    assert daemon.messages("daemon stopped: snapshot 1 runs, 0 failed; maintain 1 runs, 0 failed")
    # nothing left: no scratch directory, no plaintext snapshot, no etcdutl still running
    assert list((tmp_path / "tmp").iterdir()) == []
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_host_without_the_age_identity_runs_no_drill(
    start: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = start(**{"encryption.identity_file": None, "schedule.maintain_every": '"1s"'})
    daemon.wait_messages("maintain: done", 2)
    [said] = daemon.messages("drill: ")
    assert said["message"] == "drill: not scheduled: no [encryption] identity_file on this host"
    assert daemon.messages("daemon started: snapshot every 60m00s, maintain every 1.0s")
    assert len(backups(tmp_path)) == 1
    code, _ = daemon.stop(timeout=20)
    assert code == 0
    assert daemon.messages("daemon stopped: snapshot 1 runs, 0 failed; maintain ")


def test_a_bad_config_at_start_is_exit_10(tmp_path: Path) -> None:
    config = tmp_path / "etcdops.toml"
    config.write_text("[schedule]\nsnapshot_every = '0s'\n")
    result = subprocess.run(
        [sys.executable, "-m", "etcdops", "daemon", "--config", str(config)],
        capture_output=True, text=True, timeout=30, env=os.environ | {"ETCDOPS_LOG_FORMAT": "text"},
    )
    assert result.returncode == 10
    assert result.stderr.startswith("error: ") and "snapshot_every" in result.stderr

