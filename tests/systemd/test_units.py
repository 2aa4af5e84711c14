"""The shipped systemd units, checked by systemd's own tools (Debian's systemd 252): each one
verifies, each service's exposure is at most 2.5, and each command it runs is a real etcdops
command line."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.system import require_system_package

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SERVICES = sorted(p.name for p in UNITS.glob("*.service"))
TIMERS = sorted(p.name for p in UNITS.glob("*.timer"))
# where the shipped units expect etcdops (runbooks/install-control-plane.md installs it there)
INSTALLED = "/usr/local/bin/etcdops"
# systemd-analyze prints the exposure with one decimal and takes --threshold in tenths of it
# (analyze-security.c keeps it as 0..100): 25 is 2.5
MAX_EXPOSURE = 2.5
_SCORE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d)\b")
_EXEC = re.compile(r"^(ExecStart|ExecStartPre|ExecStartPost|ExecStop|ExecStopPost|ExecReload)="
                   r"[-@:+!]*(.+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def analyze() -> Path:
    return require_system_package("systemd-analyze", "systemd")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as installed on this host: etcdops is the test venv's, not /usr/local/bin's
    (verify refuses a unit whose binary is missing); nothing else changes."""
    etcdops = Path(sys.executable).with_name("etcdops")
    assert etcdops.is_file(), f"{etcdops} missing: install the package into the venv"
    directory = tmp_path_factory.mktemp("units")
    for unit in (*SERVICES, *TIMERS):
        text = (UNITS / unit).read_text()
        (directory / unit).write_text(text.replace(INSTALLED, str(etcdops)))
    return directory


def _commands(unit: str) -> list[list[str]]:
    return [shlex.split(match.group(2)) for match in _EXEC.finditer((UNITS / unit).read_text())]


def test_the_units_are_the_templates_and_the_old_ones_are_gone():
    assert SERVICES == ["etcdops-drill@.service", "etcdops-journal@.service",
                        "etcdops-maintain@.service", "etcdops-prune@.service",
                        "etcdops-snapshot@.service", "etcdops@.service"]
    assert TIMERS == ["etcdops-drill@.timer", "etcdops-maintain@.timer", "etcdops-snapshot@.timer"]
    for timer in TIMERS:  # a timer starts the service of its own name
        assert timer.replace(".timer", ".service") in SERVICES


def test_every_unit_verifies_without_a_word(analyze, installed):
    # verify exits 0 on an unknown key or a bad value (it only warns): any output is a failure
    result = subprocess.run(
        [str(analyze), "verify", "--man=no", "--generators=no",
         *(str(installed / unit) for unit in (*SERVICES, *TIMERS))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_does_fail_on_a_typo(analyze, installed, tmp_path):
    """The check above can fail: a misspelt key is reported."""
    broken = tmp_path / "etcdops-drill@.timer"
    broken.write_text((installed / "etcdops-drill@.timer").read_text()
                      .replace("Persistent=", "Persistant="))
    (tmp_path / "etcdops-drill@.service").write_text(
        (installed / "etcdops-drill@.service").read_text())
    result = subprocess.run([str(analyze), "verify", "--man=no", "--generators=no", str(broken)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert "Unknown key 'Persistant'" in result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_exposure_is_at_most_2_5(analyze, service):
    result = subprocess.run(
        [str(analyze), "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}",
         str(UNITS / service)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    [(name, score)] = _SCORE.findall(result.stdout)
    assert name == service.replace("@.", "@i.")
    # both: the tool's own verdict, and the printed score in case --threshold were ignored
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert float(score) <= MAX_EXPOSURE, result.stdout[-2000:]


def test_every_service_runs_as_etcdops_with_the_same_hardening():
    blocks = {}
    for service in SERVICES:
        text = (UNITS / service).read_text()
        assert "\nUser=etcdops\n" in text
        assert "\nEnvironment=ETCDOPS_CONFIG=/etc/etcdops/%i.toml\n" in text
        for credential in ("etcd-client.key", "etcd-password", "age-identity.txt",
                           "aws-credentials"):
            assert f"\nLoadCredential={credential}:etcdops.%i.{credential}\n" in text
        block = text[text.index("# --- Hardening"):]
        blocks[service] = block.split("\n[", 1)[0]  # up to the next section ([Install])
    assert len(set(blocks.values())) == 1, "the hardening block differs between services"


@pytest.mark.parametrize("service", SERVICES)
def test_each_command_is_a_real_etcdops_command_line(service):
    """Every etcdops command a unit runs parses (its subcommand and options exist): the
    snapshot unit saves to every store, not --local-only as the old one did."""
    commands = [c for c in _commands(service) if c[0] == INSTALLED]
    assert commands, f"{service} runs no {INSTALLED}"
    for command in commands:
        assert "--local-only" not in command
        result = subprocess.run([sys.executable, "-m", "etcdops", *command[1:], "--help"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{shlex.join(command)}: {result.stdout}{result.stderr}"


def _settings(unit: str) -> dict[str, list[str]]:
    """Every KEY=value of a unit, by key (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_schedules_are_the_issues():
    snapshot = _settings("etcdops-snapshot@.timer")
    assert snapshot["OnCalendar"] == ["hourly"] and snapshot["Persistent"] == ["true"]
    # the delay spreads the nodes but stays far inside the hour that they elect a taker for
    assert snapshot["RandomizedDelaySec"] == ["2min"]
    assert _settings("etcdops-maintain@.timer")["OnUnitActiveSec"] == ["1min"]
    drill = _settings("etcdops-drill@.timer")
    assert drill["OnCalendar"] == ["daily"] and drill["Persistent"] == ["true"]
    # prune after every save, whether it succeeded or not
    save = _settings("etcdops-snapshot@.service")
    assert save["OnSuccess"] == save["OnFailure"] == ["etcdops-prune@%i.service"]
    assert _settings("etcdops@.service")["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_the_daemon_restarts_on_failure_but_not_on_a_bad_configuration():
    daemon = _settings("etcdops@.service")
    assert daemon["Restart"] == ["on-failure"]
    # exit 10 (configuration) would fail again at every restart
    assert daemon["RestartPreventExitStatus"] == ["10"]
