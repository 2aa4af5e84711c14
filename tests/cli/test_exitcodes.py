"""Each error's exit code comes from its own class's kind, never from the order of a lookup."""

import pytest

from etcdops import errors
from etcdops.cli import exitcodes
from etcdops.cli.exitcodes import exit_code_for

DOCUMENTED = {
    errors.EtcdopsError: 1,
    errors.UsageError: 2,
    errors.NotFoundError: 2,
    errors.ConfigError: 10,
    errors.LockedError: 11,
    errors.CryptoError: 12,
    errors.EtcdUnavailableError: 13,
    errors.StorageError: 14,
    errors.IntegrityError: 15,
    errors.TargetMissedError: 16,
    errors.ToolError: 1,
    errors.HostUnreachableError: 1,
}


@pytest.mark.parametrize("cls", DOCUMENTED, ids=lambda cls: cls.__name__)
def test_every_error_class_exits_with_its_documented_code(cls):
    assert exit_code_for(cls("message", "hint")) == DOCUMENTED[cls]
    assert f" {DOCUMENTED[cls]} " in exitcodes.HELP_TABLE.replace("·", " ")


def test_every_kind_has_a_code_and_every_error_class_a_kind_of_its_own_choosing():
    assert set(exitcodes.BY_KIND) == set(errors.Kind)
    # a subclass that names its own kind gets that kind's code, whatever its base exits with
    class Missing(errors.StorageError):
        kind = errors.Kind.USAGE

    class Broken(errors.StorageError):
        pass

    assert exit_code_for(Missing("gone")) == exitcodes.USAGE
    assert exit_code_for(Broken("down")) == exitcodes.STORAGE


def test_interrupts_and_foreign_errors():
    assert exit_code_for(errors.Interrupted("stopped")) == exitcodes.INTERRUPTED
    assert exit_code_for(KeyboardInterrupt()) == exitcodes.INTERRUPTED
    assert exit_code_for(RuntimeError("bug")) == exitcodes.ERROR
