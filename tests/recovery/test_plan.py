"""The recovery plan: the issue's example works as written, and every mistake is a ConfigError
(exit 10) naming the key, its file and its line, as the config's are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdops.cli.main import app
from etcdops.config import Config
from etcdops.config.settings import DrConfig
from etcdops.errors import ConfigError
from etcdops.recovery.plan import default_state_path, load_plan

EXAMPLE = """\
backup = "latest"            # or a backup id
source = "auto"              # auto | primary | replica | local
[targets]
restore = "5m"               # steps 1-2
recovery = "10m"             # steps 1-5
[[members]]
name = "cp-1"
peer_url = "https://10.0.1.11:2380"
client_url = "https://10.0.1.11:2379"
data_dir = "/var/lib/etcd"
exec = ""                    # command prefix for another host, e.g. "ssh root@cp-1"
[[members]]
name = "cp-2"
peer_url = "https://10.0.1.12:2380"
client_url = "https://10.0.1.12:2379"
data_dir = "/var/lib/etcd"
exec = "ssh root@cp-2"
[steps.stop]                 # before step 1: stop what writes to etcd
commands = ["systemctl stop kubelet"]
[steps.start]                # step 2
commands = ["systemctl start etcd"]
timeout = "3m"
[steps.nodes]                # step 3
expect = 5
timeout = "3m"               # or: command = "kubectl wait --for=condition=Ready nodes --all"
[steps.pods]                 # step 4
min_updated = 0.9
timeout = "3m"
[steps.controllers]          # step 5
require_keys = ["/registry/deployments/production/web-app"]
timeout = "3m"               # and/or: command = "kubectl rollout status deploy -A"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_the_issues_example_works_as_written(tmp_path):
    plan = load_plan(write(tmp_path, EXAMPLE))
    assert plan.backup == "latest" and plan.store is None
    assert (plan.targets.restore, plan.targets.recovery) == (300.0, 600.0)
    first, second = plan.members
    assert (first.name, first.remote, first.host) == ("cp-1", False, "this host")
    assert (second.name, second.remote, second.exec) == ("cp-2", True, "ssh root@cp-2")
    assert second.data_dir == Path("/var/lib/etcd") and second.etcdops == "etcdops"
    assert plan.initial_cluster == "cp-1=https://10.0.1.11:2380,cp-2=https://10.0.1.12:2380"
    steps = plan.steps
    assert steps.stop.commands == ("systemctl stop kubelet",)
    assert steps.start.commands == ("systemctl start etcd",) and steps.start.timeout == 180.0
    assert (steps.nodes.expect, steps.nodes.command) == (5, None)
    assert steps.pods.min_updated == 0.9
    assert steps.controllers.require_keys == ("/registry/deployments/production/web-app",)
    assert steps.restore.timeout == 1800.0  # [steps.restore] may be left out
    assert plan.files.to is None and plan.files.force is False
    assert plan.path == tmp_path / "plan.toml"
    assert default_state_path(plan.path) == tmp_path / "plan.toml.state.json"


def test_a_node_count_of_zero_stands_beside_a_command_that_does_the_checking(tmp_path):
    text = EXAMPLE.replace("expect = 5", 'expect = 0\ncommand = "kubectl wait nodes --all"')
    assert load_plan(write(tmp_path, text)).steps.nodes.expect == 0


def test_targets_left_out_are_the_configs_dr_targets(tmp_path):
    text = EXAMPLE.replace('restore = "5m"', "").replace('recovery = "10m"', "")
    plan = load_plan(write(tmp_path, text))
    config = Config(dr=DrConfig(restore_target=120.0, recovery_target=240.0))
    assert (plan.restore_target(config), plan.recovery_target(config)) == (120.0, 240.0)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(needle)]
    return lines[occurrence - 1]


def second_member(key: str, value: str) -> str:
    """The example with one key of the second member changed."""
    head, tail = EXAMPLE.split('name = "cp-2"')
    tail = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", tail, count=1)
    return head + 'name = "cp-2"' + tail if key != "name" else head + f"name = {value}" + tail


CASES = {
    "unknown key": (EXAMPLE.replace("expect = 5", "expect = 5\nexpected = 5"),
                    "unknown key 'steps.nodes.expected'", "expected = 5"),
    "unknown key in a member": (EXAMPLE.replace('exec = "ssh root@cp-2"', 'host = "cp-2"'),
                                "unknown key 'members[1].host'", 'host = "cp-2"'),
    "wrong type": (EXAMPLE.replace("expect = 5", 'expect = "five"'),
                   "invalid value for 'steps.nodes.expect'", "expect ="),
    "wrong type in a member": (second_member("peer_url", "2380"),
                               "invalid value for 'members[1].peer_url'", "peer_url = 2380"),
    "out of range": (EXAMPLE.replace("min_updated = 0.9", "min_updated = 1.5"),
                     "'steps.pods.min_updated' = 1.5 is out of range", "min_updated ="),
    "a list that is a string": (
        EXAMPLE.replace('commands = ["systemctl start etcd"]', 'commands = "systemctl start"'),
        "invalid value for 'steps.start.commands'", 'commands = "systemctl start"'),
    "duplicate name": (second_member("name", '"cp-1"'),
                       "duplicate member: name cp-1 is also members[0]'s", 'name = "cp-1"'),
    "duplicate peer URL": (second_member("peer_url", '"https://10.0.1.11:2380"'),
                           "duplicate member: peer_url https://10.0.1.11:2380",
                           'peer_url = "https://10.0.1.11:2380"'),
    "duplicate client URL": (second_member("client_url", '"https://10.0.1.11:2379"'),
                             "duplicate member: client_url", 'client_url = "https://10.0.1.11:2379"'),
    "duplicate data dir on one host": (second_member("exec", '""'),
                                       "duplicate member: data_dir /var/lib/etcd on this host",
                                       'data_dir = "/var/lib/etcd"'),
    "missing required key": (EXAMPLE.replace('client_url = "https://10.0.1.12:2379"\n', ""),
                             "missing required key 'members[1].client_url'", "[[members]]"),
    "no members": ("\n".join(line for line in EXAMPLE.splitlines()
                             if not line.startswith(("[[members]]", "name", "peer_url",
                                                     "client_url", "data_dir", "exec"))),
                   "missing required key 'members'", None),
    "invalid source": (EXAMPLE.replace('source = "auto"', 'source = "tape"'),
                       "invalid value for 'source': 'tape'", "source ="),
    "a step without a check": (EXAMPLE.replace("expect = 5\n", ""),
                               "[steps.nodes] has no check", "[steps.nodes]"),
    "a node check of zero leases": (EXAMPLE.replace("expect = 5", "expect = 0"),
                                    "[steps.nodes] expect = 0 checks nothing", "expect = 0"),
    "a relative data dir": (second_member("data_dir", '"etcd"'),
                            "members[1].data_dir 'etcd' is not an absolute path",
                            'data_dir = "etcd"'),
    "a URL without a port": (second_member("peer_url", '"https://10.0.1.12"'),
                             "members[1].peer_url 'https://10.0.1.12' has no port",
                             'peer_url = "https://10.0.1.12"'),
    "two points in time": (
        EXAMPLE.replace('source = "auto"', 'at = "2026-11-25T09:13:00Z"\nrevision = 7\n'
                        'source = "auto"'),
        "the plan names two points in time: revision 7 and at '2026-11-25T09:13:00Z'",
        "revision = 7"),
    "a moment that is no time": (EXAMPLE.replace('source = "auto"', 'at = "09:13 today"\n'
                                                 'source = "auto"'),
                                 "invalid value for 'at': '09:13 today' is not a time", "at ="),
    "a moment without a zone": (
        EXAMPLE.replace('source = "auto"', 'at = 2026-11-25T09:13:00\nsource = "auto"'),
        "invalid value for 'at': '2026-11-25T09:13:00' has no time zone", "at ="),
    "a revision of zero": (EXAMPLE.replace('source = "auto"', 'revision = 0\nsource = "auto"'),
                           "'revision' = 0 is out of range", "revision ="),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_plan_names_the_key_its_file_and_line(tmp_path, case):
    text, message, at = CASES[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_plan(path)
    assert message in raised.value.message
    occurrence = 2 if at and text.count("\n" + at) > 1 else 1
    where = f"{path}:{line_of(text, at, occurrence)}" if at else str(path)
    assert raised.value.message.startswith(where + ": "), raised.value.message


def test_a_point_in_time_in_the_plan_and_as_dr_runs_flags_override_it(tmp_path):
    from datetime import UTC, datetime

    from etcdops.restore.point_plan import PointTarget

    plain = load_plan(write(tmp_path, EXAMPLE))
    assert plain.point is None and plain.allow_gap is False
    assert plain.fingerprint()["point"] is None  # as a state from before points has it
    # TOML's own date-time, in another zone: the same moment as the flag gives in UTC
    text = EXAMPLE.replace('source = "auto"', 'at = 2026-11-25T10:13:00+01:00\n'
                           'allow_gap = true\nsource = "auto"')
    plan = load_plan(write(tmp_path, text))
    moment = datetime(2026, 11, 25, 9, 13, tzinfo=UTC)
    assert plan.point == PointTarget(at=moment) and plan.allow_gap
    flagged = plain.with_point(PointTarget(at=moment), allow_gap=True)
    assert flagged.fingerprint() == plan.fingerprint() != plain.fingerprint()
    assert plan.fingerprint()["point"] == {"at": "2026-11-25T09:13:00+00:00", "revision": None,
                                           "allow_gap": True}
    # a flag's revision replaces the plan's moment; no flag keeps the plan's point
    assert plan.with_point(PointTarget(revision=42), allow_gap=False).point == PointTarget(
        revision=42)
    assert plan.with_point(None, allow_gap=False) == plan


def test_a_duplicate_data_dir_on_two_hosts_is_two_members(tmp_path):
    assert len(load_plan(write(tmp_path, EXAMPLE)).members) == 2  # both /var/lib/etcd


@pytest.mark.parametrize("case", ["unknown key", "wrong type", "duplicate name",
                                  "missing required key"])
def test_dr_run_refuses_a_bad_plan_with_exit_10_and_one_line(tmp_path, case):
    text, message, at = CASES[case]
    path = write(tmp_path, text)
    config = tmp_path / "etcdops.toml"
    config.write_text('cluster = "test"\n')
    for args in (["dr", "run"], ["dr", "run", "--dry-run"]):
        result = CliRunner().invoke(app, [*args, "--plan", str(path), "--config", str(config)])
        assert result.exit_code == 10, result.output
        assert result.stderr.count("\n") == 1 and message in result.stderr
        assert f"{path}:" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etcdops.toml", "plan.toml"]


def test_a_plan_that_does_not_exist_says_how_to_write_one(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as raised:
        load_plan(tmp_path / "missing.toml")
    assert "etcdops dr plan --plan" in str(raised.value.hint)


def test_a_plan_that_is_not_toml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"plan.toml: TOML syntax error: .*line 2"):
        load_plan(write(tmp_path, 'backup = "latest"\nsource = auto\n'))
