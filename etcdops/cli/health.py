"""`etcdops health`: one row per check, exit 13 naming every check that failed."""

import logging
from datetime import UTC, datetime
from typing import Any

from etcdops.cli import exitcodes
from etcdops.cli.common import Invocation, command
from etcdops.cli.render import table

log = logging.getLogger("etcdops")


@command
def health(run: Invocation) -> int:
    """Members, leader, alarms, db size vs quota, disk latency, backups, the journal's lag."""
    from etcdops.etcd.metrics_page import METHOD
    from etcdops.maintenance.health import check_health

    checks = check_health(run.config(), datetime.now(UTC))
    failed = [f"{c.subject} {c.name} ({c.value})" for c in checks if c.failed]
    doc = {
        "healthy": not failed,
        "checks": [c.as_dict() for c in checks],
        "failed": failed,
        "p99_method": METHOD,
    }
    rows = [[c.subject, c.name, c.value, c.target, c.verdict.upper()] for c in checks]

    def render(console: Any) -> None:
        console.print(table("etcd health", ["member", "check", "value", "target", "verdict"], rows))
        console.print(f"p99: {METHOD}", markup=False, style="dim")

    run.emit(doc, render)
    if failed:
        # the result is already printed: the failure is one line on stderr and the exit code
        log.error("%d health check(s) failed: %s", len(failed), "; ".join(failed))
        return exitcodes.ETCD
    return exitcodes.OK
