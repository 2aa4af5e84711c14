"""`etcdops daemon`: the schedule in one process, for hosts without systemd timers."""

from etcdops.cli.common import Invocation, command


@command
def daemon(run: Invocation) -> int:
    """Run the timers' jobs on their [schedule] periods until SIGTERM: snapshot (save, then
    prune) at the start of each period, maintain (compaction, defragmentation in its window)
    and, where [encryption] identity_file is set, the restore drill.

    One job at a time; a failed job is logged and the loop goes on. SIGTERM lets the running
    job finish ([schedule] stop_timeout at most) and exits 0; SIGHUP reloads the config.
    """
    from etcdops.unattended.daemon import Daemon

    return Daemon(run.config).run()
