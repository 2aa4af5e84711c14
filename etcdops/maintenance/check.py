"""One row of `etcdops health`: what was measured, against what, and the verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass

OK, FAIL, INFO, WARN = "ok", "fail", "info", "warn"


@dataclass(frozen=True)
class Check:
    """One row of `etcdops health`: what was measured, against what, and the verdict."""

    subject: str  # a member's name, "cluster", "backups" or "journal"
    name: str
    value: str
    target: str
    verdict: str

    @property
    def failed(self) -> bool:
        """Whether this check makes `etcdops health` exit 13."""
        return self.verdict == FAIL

    def as_dict(self) -> dict[str, str]:
        """The check as `--output json` prints it."""
        return asdict(self)


def judged(subject: str, name: str, value: str, target: str, passed: bool) -> Check:
    """A check with a target: ok when it passed, fail when not."""
    return Check(subject, name, value, target, OK if passed else FAIL)
