"""grpc runs with etcdops' settings, which an operator's environment overrides."""

from __future__ import annotations

import os
import subprocess
import sys

from etcdops.etcd.rpc import prepare_grpc_environment


def test_grpc_knows_every_setting_etcdops_gives_it() -> None:
    # grpc logs a setting it does not know (an experiment a newer grpc dropped) on stderr, on
    # every run of every command: that must fail here, not litter an operator's terminal
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    script = (
        "from etcdops.etcd.rpc import prepare_grpc_environment\n"
        "prepare_grpc_environment()\n"
        "import grpc\n"
        "grpc.insecure_channel('127.0.0.1:1').close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_grpc_settings_yield_to_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GRPC_EXPERIMENTS", "")  # an operator's choice, even an empty one
    monkeypatch.delenv("GRPC_VERBOSITY")
    prepare_grpc_environment()
    assert os.environ["GRPC_EXPERIMENTS"] == ""
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"
