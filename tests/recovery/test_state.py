"""The state file a rerun resumes from: written atomically, refused when the plan changed since
or the recovery already completed (a rerun must never restore over a recovered cluster)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdops.cli.main import app
from etcdops.errors import ConfigError, UsageError
from etcdops.recovery.plan import load_plan
from etcdops.recovery.state import (
    STATE_VERSION,
    STEP_NAMES,
    StepRecord,
    now_iso,
    open_state,
    read_state,
)
from tests.recovery.test_plan import EXAMPLE


@pytest.fixture
def plan_file(tmp_path) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(EXAMPLE)
    return path


def record(name: str) -> StepRecord:
    return StepRecord(name, now_iso(), now_iso(), 0.5, "ok", f"{name} done")


def test_a_new_state_is_not_written_until_saved_and_then_round_trips(plan_file, tmp_path):
    path = tmp_path / "plan.toml.state.json"
    plan = load_plan(plan_file)
    state = open_state(path, plan, "prod")
    assert not path.exists()
    assert state.token.startswith("prod-recovery-") and state.next_step == "stop"
    state.backup_id, state.revision = "20260101T000000Z-abcdef", {"after_restore": 1234}
    state.finish(record("stop"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml", path.name]  # no temp
    again = read_state(path, plan)
    assert again is not None and again.token == state.token
    assert again.declared_at == state.declared_at and again.backup_id == state.backup_id
    assert again.steps == state.steps and again.next_step == "restore"
    assert again.revision_after == 1234


def test_a_changed_plan_is_refused_naming_what_changed_the_state_file_and_how_to_start_over(
    plan_file, tmp_path
):
    path = tmp_path / "state.json"
    state = open_state(path, load_plan(plan_file), "prod")
    state.finish(record("stop"))
    plan_file.write_text(EXAMPLE.replace('data_dir = "/var/lib/etcd"\nexec = "ssh',
                                         'data_dir = "/srv/etcd"\nexec = "ssh'))
    with pytest.raises(ConfigError) as raised:
        read_state(path, load_plan(plan_file))
    message = str(raised.value)
    assert f"changed since the recovery recorded in {path} began (stop done)" in message
    assert "members[1] (cp-2) data_dir was '/var/lib/etcd'" in message
    assert f"remove {path} to start a new recovery" in str(raised.value.hint)
    config = tmp_path / "etcdops.toml"
    config.write_text('cluster = "prod"\n')
    for extra in ([], ["--dry-run", "-o", "json"]):
        result = CliRunner().invoke(app, ["dr", "run", "--plan", str(plan_file), "--state",
                                          str(path), "--config", str(config), *extra])
        if extra:  # the dry run lists it with the other prerequisites
            checks = json.loads(result.stdout)["prerequisites"]
            (state_check,) = [check for check in checks if check["check"] == "state"]
            assert not state_check["ok"] and "changed since" in state_check["detail"]
        else:
            assert result.exit_code == 10, result.output
            assert result.stderr.count("\n") == 1 and "changed since" in result.stderr


@pytest.mark.parametrize(("edit", "words"), [
    (('backup = "latest"', 'backup = "20260101T000000Z-abcdef"'),
     "backup was 'latest', now '20260101T000000Z-abcdef'"),
    (('source = "auto" ', 'source = "replica" '), "source was 'auto', now 'replica'"),
    (("[steps.stop]", '[files]\nto = "/"\n[steps.stop]'), "files was {'to': None"),
    (("[steps.stop]", '[[members]]\nname = "cp-3"\npeer_url = "https://10.0.1.13:2380"\n'
      'client_url = "https://10.0.1.13:2379"\ndata_dir = "/var/lib/etcd"\n'
      'exec = "ssh root@cp-3"\n[steps.stop]'),
     "members was [cp-1, cp-2], now [cp-1, cp-2, cp-3]"),
])
def test_a_change_to_what_finished_steps_depend_on_is_refused_and_named(
    plan_file, tmp_path, edit, words
):
    path = tmp_path / "state.json"
    open_state(path, load_plan(plan_file), "prod").finish(record("stop"))
    assert EXAMPLE.count(edit[0]) == 1
    plan_file.write_text(EXAMPLE.replace(*edit))
    with pytest.raises(ConfigError, match=re.escape(words)):
        read_state(path, load_plan(plan_file))


def test_the_steps_targets_and_comments_may_be_edited_before_a_resume(plan_file, tmp_path):
    """'Fix the command in the plan, then run dr run again': the rerun resumes."""
    path = tmp_path / "state.json"
    state = open_state(path, load_plan(plan_file), "prod")
    state.finish(record("stop"))
    edited = (EXAMPLE.replace('commands = ["systemctl start etcd"]',
                              'commands = ["systemctl start etcd.service"]  # fixed')
              .replace("expect = 5", "expect = 6").replace('recovery = "10m"', 'recovery = "15m"')
              .replace('timeout = "3m"', 'timeout = "5m"')
              + "# a comment\n[steps.restore]\ntimeout = \"1h\"\n")
    assert edited != EXAMPLE
    plan_file.write_text(edited)
    resumed = read_state(path, load_plan(plan_file))
    assert resumed is not None and resumed.token == state.token and resumed.next_step == "restore"


def test_a_completed_recovery_is_refused(plan_file, tmp_path):
    path = tmp_path / "state.json"
    plan = load_plan(plan_file)
    state = open_state(path, plan, "prod")
    for name in STEP_NAMES:
        state.finish(record(name))
    assert state.completed_at is not None and state.next_step is None
    completed = re.escape(f"already completed at {state.completed_at}")
    with pytest.raises(UsageError, match=completed) as raised:
        open_state(path, plan, "prod")
    assert f"remove {path} to run a new recovery" in str(raised.value.hint)


@pytest.mark.parametrize("content", [
    "{not json", json.dumps({"version": 99}),
    json.dumps({"version": STATE_VERSION + 1, "steps": {}}),
    # valid JSON of the wrong shape: each once ended in an internal error (exit 1)
    '"x"', "null", "[]", json.dumps({"version": STATE_VERSION, "steps": []}),
    json.dumps({"version": STATE_VERSION, "steps": {"stop": "done"}}),
])
def test_a_state_file_that_is_not_one_is_refused(plan_file, tmp_path, content):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"state file {path}") as raised:
        read_state(path, load_plan(plan_file))
    assert f"remove {path}" in str(raised.value.hint)
    config = tmp_path / "etcdops.toml"
    config.write_text('cluster = "prod"\n')
    result = CliRunner().invoke(app, ["dr", "run", "--plan", str(plan_file), "--state",
                                      str(path), "--config", str(config)])
    assert result.exit_code == 10, result.output
    assert result.stderr.startswith("error: state file") and result.stderr.count("\n") == 1
