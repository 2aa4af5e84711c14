"""The shipped alert rules: valid for promtool, their unit tests pass, and each one names real
metrics and a runbook section that exists."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from etcdops.metrics.catalogue import JOBS, METRICS
from etcdops.metrics.textfile import textfile_path
from tests.fixtures.system import require_system_package

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "etcdops.rules.yml"
TESTS = sorted((ROOT / "monitoring" / "tests").glob("*.yml"))
RUNBOOK = ROOT / "runbooks" / "alerts.md"


@pytest.fixture(scope="module")
def promtool() -> Path:
    return require_system_package("promtool", "prometheus")


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool_run(promtool: Path, *args: str) -> str:
    done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT / "monitoring", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules(promtool):
    assert "SUCCESS" in promtool_run(promtool, "check", "rules", str(RULES))


def test_promtool_unit_tests_pass(promtool):
    assert TESTS
    assert "SUCCESS" in promtool_run(promtool, "test", "rules", *map(str, TESTS))


def test_every_alert_has_a_unit_test():
    tested = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    tested.add(check["alertname"])
    assert {rule["alert"] for rule in alerts()} == tested


def test_every_alert_says_how_bad_what_and_where_the_runbook_is():
    anchors = {_anchor(line) for line in RUNBOOK.read_text().splitlines()
               if line.startswith("## ")}
    for rule in alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, anchor = notes["runbook_url"].split("#")
        assert page == "runbooks/alerts.md" and anchor in anchors, rule["alert"]


def test_the_rules_name_only_metrics_etcdops_writes():
    text = RULES.read_text()
    used = set(re.findall(r"\betcdops_[a-z_]+\b", text)) - {"etcdops_job"}
    assert used and used <= set(METRICS), used - set(METRICS)


def test_the_file_age_rule_reads_back_the_cluster_and_job_each_file_is_named_with():
    """The rule's label_replace regexes (anchored, as Prometheus anchors them) applied to the
    names textfile_path gives: the labels are the metrics' own, for any shape of valid name."""
    [rule] = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
              for rule in group["rules"] if rule.get("record") == "etcdops:textfile_age_seconds"]
    selector = _unquoted(re.search(r'file=~"([^"]+)"', rule["expr"])[1])
    labels = {label: _unquoted(regex) for label, regex in re.findall(
        r'"(cluster|etcdops_job)", "\$1", "file", "([^"]+)"', rule["expr"])}
    assert set(labels) == {"cluster", "etcdops_job"}
    for cluster in ("main", "k8s.events", "events_k8s-2", "a", "prod_snapshot"):
        for job in JOBS:
            for name in (textfile_path(Path("/var/lib/node-exporter"), cluster, job).name,
                         str(textfile_path(Path("/var/lib/node-exporter"), cluster, job))):
                assert re.fullmatch(selector, name), name
                assert re.fullmatch(labels["cluster"], name)[1] == cluster, name
                assert re.fullmatch(labels["etcdops_job"], name)[1] == job, name


def _unquoted(text: str) -> str:
    """A PromQL string's content as the regex it is ("\\\\." is "\\.")."""
    return text.replace("\\\\", "\\")


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    words = re.sub(r"[^\w\- ]", "", heading[3:].strip().lower())
    return words.replace(" ", "-")
