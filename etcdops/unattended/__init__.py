"""Running unattended: the daemon and the jobs that the timers and the daemon share."""
