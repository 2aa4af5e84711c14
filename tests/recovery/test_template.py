"""`etcdops dr plan`: a commented template from the config and the live member list that loads
back as a plan; never over an existing file without --force; still written, with a warning,
when etcd does not answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdops.cli.main import app
from etcdops.demo.sample import load_kubernetes_objects
from etcdops.errors import ConfigError
from etcdops.etcd.session import EtcdSession
from etcdops.recovery.plan import load_plan


def dr_plan(config: Path, plan: Path, *args: str):
    return CliRunner().invoke(
        app, ["dr", "plan", "--plan", str(plan), "--config", str(config), *args]
    )


def config_for(tmp_path: Path, endpoints: list[str]) -> Path:
    path = tmp_path / "etcdops.toml"
    quoted = ", ".join(f'"{endpoint}"' for endpoint in endpoints)
    path.write_text(f'cluster = "prod"\n[etcd]\nendpoints = [{quoted}]\ndial_timeout = "500ms"\n'
                    '[backup]\ninclude_files = ["/etc/kubernetes/enc.yaml"]\n')
    return path


def test_the_template_lists_the_live_members_and_loads_back_as_a_plan(etcd_cluster3, tmp_path):
    with EtcdSession(etcd_cluster3.etcd_config()) as session:
        load_kubernetes_objects(session, 200, seed=1)
        leases = sum(len(page) for page in session.key_revisions(
            b"/registry/leases/kube-node-lease/"))
    assert leases > 0
    config = config_for(tmp_path, etcd_cluster3.client_urls[:1])
    path = tmp_path / "plan.toml"
    result = dr_plan(config, path, "-o", "json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["members_from"] == "etcd's member list" and written["warnings"] == []
    plan = load_plan(path)
    assert [(m.name, m.peer_url, m.client_url) for m in plan.members] == [
        (m.name, m.peer_url, m.client_url) for m in etcd_cluster3.members]
    # all three on this host: one data dir each, no prefix
    assert [m.data_dir for m in plan.members] == [
        Path(f"/var/lib/{m.name}") for m in etcd_cluster3.members]
    assert all(m.exec == "" for m in plan.members)
    assert plan.steps.nodes.expect == leases == written["node_leases"]
    assert plan.files.to == Path("/")  # the config includes files: they go back by default
    assert (plan.targets.restore, plan.targets.recovery) == (300.0, 600.0)
    assert 'restore = "5m"' in path.read_text()
    text = path.read_text()
    assert "ssh root@<host>" in text and text.splitlines().count("[[members]]") == 3
    commented = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commented) < len(text.splitlines()) / 2  # every key is explained
    # the point in time: commented out, and it loads once uncommented
    assert '# at = "2026-11-25T09:13:00Z"' in text and "# allow_gap = false" in text
    path.write_text(text.replace('# at = "', 'at = "').replace("# allow_gap", "allow_gap"))
    assert load_plan(path).point is not None


def test_an_existing_plan_is_kept_unless_forced(etcd_single, tmp_path):
    config = config_for(tmp_path, etcd_single.client_urls)
    path = tmp_path / "plan.toml"
    path.write_text("# my edited plan\n")
    refused = dr_plan(config, path)
    assert refused.exit_code == 2 and "already exists (nothing was written)" in refused.stderr
    assert path.read_text() == "# my edited plan\n"
    forced = dr_plan(config, path, "--force")
    assert forced.exit_code == 0, forced.output
    # a cluster without node leases: step 3's expect is left for the operator to set
    assert forced.stderr.count("warning: no node lease was counted") == 1
    written = path.read_text().replace("expect = 0", "expect = 1")
    assert written != path.read_text()
    path.write_text(written)
    assert load_plan(path).members[0].name == etcd_single.members[0].name


def test_with_etcd_down_the_members_are_guessed_from_the_endpoints_with_a_warning(
    tmp_path, unreachable_endpoint
):
    config = config_for(tmp_path, [unreachable_endpoint, "http://10.0.1.12:2379"])
    path = tmp_path / "plan.toml"
    result = dr_plan(config, path)
    assert result.exit_code == 0, result.output
    assert "warning: etcd did not answer" in result.stderr and "guessed" in result.stderr
    assert f"set [steps.nodes] expect in {path}" in result.stderr
    # no lease counted: step 3's expect is written as 0, refused until it is set
    text = path.read_text()
    assert "expect = 0" in text and "SET IT to the number of nodes" in text
    with pytest.raises(ConfigError, match=r"expect = 0 checks nothing"):
        load_plan(path)
    path.write_text(text.replace("expect = 0", "expect = 2"))
    plan = load_plan(path)
    assert [(m.name, m.peer_url, m.client_url, m.exec, m.data_dir) for m in plan.members] == [
        ("member-1", unreachable_endpoint.rsplit(":", 1)[0] + ":2380", unreachable_endpoint,
         "", Path("/var/lib/etcd")),  # on this host
        ("member-2", "http://10.0.1.12:2380", "http://10.0.1.12:2379", "ssh root@10.0.1.12",
         Path("/var/lib/etcd")),
    ]
    assert plan.steps.nodes.expect == 2
