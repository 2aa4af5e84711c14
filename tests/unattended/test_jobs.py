"""The job table: which jobs the daemon runs, in which order, on which [schedule] periods."""

from __future__ import annotations

from etcdops.config.settings import ScheduleConfig
from etcdops.unattended.jobs import JOBS


def test_the_timers_jobs_in_the_order_they_run_when_due_together() -> None:
    # the drill comes after the snapshot, so that at start it drills the backup just taken
    assert [job.name for job in JOBS] == ["snapshot", "maintain", "drill"]


def test_each_job_runs_on_its_own_schedule_setting() -> None:
    schedule = ScheduleConfig(snapshot_every=7.0, maintain_every=3.0, drill_every=11.0)
    assert {job.name: job.period(schedule) for job in JOBS} == {
        "snapshot": 7.0, "maintain": 3.0, "drill": 11.0,
    }


def test_the_default_periods_are_the_timers() -> None:
    assert {job.name: job.period(ScheduleConfig()) for job in JOBS} == {
        "snapshot": 3600.0, "maintain": 60.0, "drill": 86400.0,
    }
