"""The job table (which jobs the daemon runs, in which order, on which [schedule] periods, on
which hosts) and the snapshot job against a real etcd and a local store: a period held by
another node's running save, and a save that fails, each with what retention does then."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from etcdops.backup.period import Period
from etcdops.backup.save import save_snapshot
from etcdops.config import Config, EncryptionConfig, EtcdConfig, LocalConfig
from etcdops.config.settings import RetentionConfig, ScheduleConfig
from etcdops.errors import EtcdUnavailableError
from etcdops.etcd.election import Holder, Term
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.report import LogReporter
from etcdops.unattended.jobs import JOBS, snapshot
from tests.fixtures.backups import AgeIdentity


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


def test_only_the_snapshot_runs_on_the_elections_periods() -> None:
    assert {job.name: job.aligned for job in JOBS} == {
        "snapshot": True, "maintain": False, "drill": False,
    }


def test_the_drill_runs_only_where_the_age_identity_is(tmp_path: Path) -> None:
    backup_host = Config(encryption=EncryptionConfig(recipients=("age1...",)))
    drill_host = Config(encryption=EncryptionConfig(identity_file=tmp_path / "identity.txt"))
    assert {job.name: job.unfit(backup_host) for job in JOBS} == {
        "snapshot": None, "maintain": None,
        "drill": "no [encryption] identity_file on this host",
    }
    assert {job.name: job.unfit(drill_host) for job in JOBS} == {
        "snapshot": None, "maintain": None, "drill": None,
    }


# --- the snapshot job ------------------------------------------------------------------------

TTL = 5.0  # [schedule] election_ttl's least


class Host(NamedTuple):
    config: Config
    old: list[str]  # backups of 50 and 30 hours ago, oldest first

    def backups(self) -> list[str]:
        directory = self.config.local.dir
        return sorted(p.name.removesuffix(".manifest.json")
                      for p in directory.rglob("*.manifest.json"))


@pytest.fixture
def host(etcd_single: LocalCluster, age_identity: AgeIdentity, tmp_path: Path) -> Host:
    """A backup host (recipients only) whose local store holds two backups past keep_within:
    retention (keep_min 1) deletes the older one, or both once a new one is taken."""
    config = Config(
        cluster="jobs", etcd=etcd_single.etcd_config(),
        encryption=EncryptionConfig(recipients=(age_identity.recipient,)),
        local=LocalConfig(dir=tmp_path / "backups"),
        retention=RetentionConfig(keep_min=1),
        # a day: no period boundary falls within the test
        schedule=ScheduleConfig(snapshot_every=86400.0, election_ttl=TTL),
    )
    now = datetime.now(UTC)
    old = [save_snapshot(config, LogReporter(), clock=lambda m=now - timedelta(hours=h): m)
           .manifest.id for h in (50, 30)]
    return Host(config, old)


@pytest.fixture
def held(host: Host) -> Iterator[Term]:
    """The period's key held by another node's save that is still running."""
    key = Period.of(host.config.cluster, datetime.now(UTC), 86400.0).key
    with EtcdSession(host.config.etcd) as session:
        term = session.campaign(key, Holder("cp-test", 4242, datetime.now(UTC)).to_json(), 60)
        assert isinstance(term, Term)
        yield term
        term.let_go()


def test_a_period_held_by_a_running_save_is_looked_at_again_then_taken_if_given_up(
    host: Host, held: Term
) -> None:
    started = time.monotonic()
    outcome = snapshot(host.config, LogReporter())
    # not waited for (the daemon's compaction must go on): a look again after the TTL
    assert time.monotonic() - started < TTL
    assert outcome.again_in == TTL
    assert "already taken by cp-test (pid 4242)" in outcome.summary
    assert outcome.summary.endswith(
        ": nothing to do for now; looking again in 5.0s, in case that save fails"
    )
    # nothing saved, and retention waits for the period's last look
    assert host.backups() == host.old
    held.release()  # the other node's save failed: it gave the period up
    outcome = snapshot(host.config, LogReporter())
    assert outcome.again_in is None
    new = outcome.fields["backup_id"]
    assert outcome.summary == f"backup {new} stored in local; pruned 2"
    assert host.backups() == [new]


def test_a_period_already_saved_by_another_node_is_not_looked_at_again(
    host: Host, held: Term
) -> None:
    done = Holder("cp-test", 4242, datetime.now(UTC), "20260101T000000Z-0a0b0c", datetime.now(UTC))
    assert held.settle(done.to_json(), ttl=60)
    outcome = snapshot(host.config, LogReporter())
    assert outcome.again_in is None
    assert outcome.summary.endswith(
        "already has backup 20260101T000000Z-0a0b0c by cp-test (pid 4242): nothing to do; "
        "pruned 1"
    )
    assert outcome.fields == {"backup_id": "20260101T000000Z-0a0b0c"}
    assert host.backups() == host.old[1:]


def test_a_period_whose_backup_is_in_the_catalogue_names_that_backup(host: Host) -> None:
    # as when the last period's save ran past the boundary: its backup was created in this one
    taken = save_snapshot(host.config, LogReporter()).manifest.id
    outcome = snapshot(host.config, LogReporter())
    assert outcome.again_in is None
    assert f"already has backup {taken}, verified in local: nothing to do" in outcome.summary
    assert outcome.fields == {"backup_id": taken}
    assert host.backups() == [taken]


def test_a_failed_save_is_the_jobs_error_and_retention_is_applied_all_the_same(
    host: Host, unreachable_endpoint: str
) -> None:
    etcd = replace(host.config.etcd, endpoints=(unreachable_endpoint,), dial_timeout=0.2)
    config = replace(host.config, etcd=etcd)
    with pytest.raises(EtcdUnavailableError):
        snapshot(config, LogReporter())
    assert host.backups() == host.old[1:]


def test_a_failed_save_whose_prune_fails_too_reports_both(
    age_identity: AgeIdentity, unreachable_endpoint: str, tmp_path: Path, caplog: Any
) -> None:
    not_a_directory = tmp_path / "backups"
    not_a_directory.write_text("")
    config = Config(
        etcd=EtcdConfig(endpoints=(unreachable_endpoint,), dial_timeout=0.2),
        encryption=EncryptionConfig(recipients=(age_identity.recipient,)),
        local=LocalConfig(dir=not_a_directory),
    )
    with caplog.at_level(logging.ERROR, logger="etcdops"), \
            pytest.raises(EtcdUnavailableError):
        snapshot(config, LogReporter())
    [pruning] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert pruning.startswith("pruning the local store failed: ")
    assert pruning.endswith(" (after the failed save)")
