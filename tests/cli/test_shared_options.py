"""--output, --config, -v and -q before or after the subcommand, and usage errors under -o json."""

import json

import pytest
from typer.testing import CliRunner

from etcdops.cli.main import app


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "prod.toml"
    path.write_text(f'cluster = "prod"\n[local]\ndir = "{tmp_path / "backups"}"\n')
    return path


@pytest.mark.parametrize("order", ["before", "after", "split"])
def test_shared_options_work_before_or_after_the_subcommand(config_file, order):
    words = {
        "before": ["-c", str(config_file), "-o", "json", "snapshot", "list"],
        "after": ["snapshot", "list", "-c", str(config_file), "-o", "json"],
        "split": ["-c", str(config_file), "snapshot", "list", "--output", "json"],
    }[order]
    result = invoke(*words)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["backups"] == []


def test_the_option_after_the_subcommand_wins(config_file, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('cluster = "bad name!"\n')
    result = invoke("-c", str(other), "-o", "text", "snapshot", "list",
                    "-c", str(config_file), "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["backups"] == []
    # and the one before still counts when nothing comes after
    broken = invoke("-c", str(other), "snapshot", "list")
    assert broken.exit_code == 10
    assert "invalid cluster name" in broken.stderr


def test_root_help_documents_the_shared_options():
    result = invoke("--help")
    text = " ".join(result.output.split())
    for option in ("--output", "--config", "--verbose", "--quiet"):
        assert option in text
    assert "before the subcommand or after it" in text


@pytest.mark.parametrize("words", [
    ["snapshot", "status", "-o", "json"],             # a missing argument
    ["-o", "json", "snapshot", "lst"],                # no such command, option before
    ["snapshot", "list", "--bogus", "--output=json"],  # no such option
])
def test_a_usage_error_under_json_prints_the_error_document(words):
    result = invoke(*words)
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 2 and error["message"] and error["hint"]


def test_a_usage_error_in_text_keeps_stdout_empty():
    result = invoke("snapshot", "status")
    assert result.exit_code == 2
    assert result.stdout == ""
