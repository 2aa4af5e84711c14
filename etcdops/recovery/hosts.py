"""The hosts of a recovery's members: commands run here, or through a member's `exec` prefix.

A prefix (`ssh root@cp-2`) gets one extra argument, the command as one shell line, as ssh takes
it (a kubectl or docker prefix ends with `sh -c`, and passes stdin on with `-i`); an empty prefix
runs the command here, without a shell. On another host the command runs under `timeout`, so it
stops at its timeout even when this side is gone: sshd does not signal a command whose client
went away, it only closes its pipes. Here, every command runs in a session of its own, and on a
timeout, Ctrl-C or SIGTERM every process of that session is ended (from /proc; GNU `timeout`
leaves the process group but not the session): no orphaned ssh, and a prefix that runs here
(`sh -c`) leaves nothing running.

What ending the local ssh cannot do is reach the remote command. A remote `etcdops restore -`
still reading its snapshot from stdin reads a truncated one and fails its checks, with nothing
changed. One that has read all of it (its etcdutl running) goes on: it finishes within its
`timeout` and swaps its data dir in, although dr run here was interrupted (the report and
state say step 1 did not finish, and a rerun restores that member again, moving the dir aside).

stdin is streamed from a file by the kernel (an 8 GiB snapshot never passes through memory),
stderr is reported line by line as it comes, prefixed by the member's name, and stdout, a
small result, is kept.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from etcdops.errors import (
    ConfigError,
    EtcdopsError,
    HostUnreachableError,
    Interrupted,
    ToolError,
    UsageError,
)
from etcdops.report import LogReporter, Reporter

# between SIGTERM and SIGKILL: a remote etcdops removes its scratch dir on SIGTERM
STOP_GRACE = 10.0
# how long past a remote command's own end (timeout and kill) ssh may take to bring it back
_REMOTE_MARGIN = 5.0
_STDERR_TAIL = 20
_PREFIX_FAILED = 255  # ssh's own failure: no connection, refused key, unknown host
_TIMED_OUT = (124, 137)  # `timeout` stopped the command (with SIGTERM, with SIGKILL)
_CANNOT_RUN = (126, 127)  # the shell's (and timeout's) not executable, not found
_USAGE = 2  # etcdops's exit code for arguments it does not take
_INTERRUPTED = 130  # etcdops's exit code for Ctrl-C and SIGTERM
_INTERRUPTS = ("Interrupted", "KeyboardInterrupt")  # the error types it then reports


@dataclass(frozen=True)
class Completed:
    """How a command ended: its exit code, its stdout, the last lines of its stderr."""

    returncode: int
    stdout: str
    stderr: str  # the last lines only; every line was reported as it came
    seconds: float

    @property
    def last_line(self) -> str:
        """The command's last word on stderr, for error messages."""
        return (self.stderr.strip().splitlines() or ["no output on stderr"])[-1]


@dataclass(frozen=True)
class HostProbe:
    """Whether a member's host answers through its prefix, and which etcdops it has."""

    name: str
    prefix: str
    reachable: bool
    etcdops_version: str | None  # None: etcdops did not run there
    problem: str | None
    hint: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.reachable and self.etcdops_version is not None

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a probe (dr run --dry-run)."""
        return {
            "name": self.name, "exec": self.prefix, "reachable": self.reachable,
            "etcdops_version": self.etcdops_version, "problem": self.problem,
            "hint": self.hint, "seconds": round(self.seconds, 3),
        }


class Host:
    """Where one member's commands run: this host (empty prefix) or through its prefix."""

    def __init__(
        self, name: str, prefix: str = "", etcdops: str = "etcdops", *,
        reporter: Reporter | None = None,
    ) -> None:
        self.name = name
        self.prefix = prefix.strip()
        self.etcdops = etcdops
        self.reporter = reporter or LogReporter()
        self._prefix = _split(self.prefix, f"the exec prefix of member {name}")
        self._etcdops = _split(etcdops, f"the etcdops command of member {name}")
        if not self._etcdops:
            raise ConfigError(f"the etcdops command of member {name} is empty",
                              'leave it out (default "etcdops") or give its path on that host')

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.prefix!r}, {self.etcdops!r})"

    @property
    def remote(self) -> bool:
        return bool(self._prefix)

    @property
    def where(self) -> str:
        """The member and how it is reached, for messages: 'cp-2 (ssh root@cp-2)'."""
        return f"{self.name} ({self.prefix if self.remote else 'this host'})"

    def command(self, argv: Sequence[str], timeout: float) -> list[str]:
        """What is executed here to run argv on the host within timeout seconds."""
        if not self.remote:
            return list(argv)
        # whole seconds: busybox's timeout takes no fractions
        limit = ["timeout", "-k", str(math.ceil(STOP_GRACE)), str(max(1, math.ceil(timeout)))]
        return [*self._prefix, shlex.join([*limit, *argv])]

    def run(
        self, argv: Sequence[str], *, stdin_path: Path | None = None, timeout: float
    ) -> Completed:
        """Run argv on the host, stdin streamed from stdin_path, stderr reported as it comes.

        Its exit code is the caller's to judge; raised here are only what kept it from running
        or ending: the prefix's own failure (HostUnreachableError) and the timeout (ToolError).
        """
        shown = shlex.join(argv)
        started = time.monotonic()
        # the remote `timeout` ends the command first; this side waits for ssh to say so
        limit = timeout + STOP_GRACE + _REMOTE_MARGIN if self.remote else timeout
        with _stdin(stdin_path) as stdin:
            try:
                process = subprocess.Popen(
                    self.command(argv, timeout), stdin=stdin, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, start_new_session=True,
                )
            except OSError as exc:
                raise self._cannot_start(exc, argv[0]) from exc
        try:
            stdout, tail = self._communicate(process, started + limit)
        except BaseException as exc:  # a timeout, Ctrl-C, SIGTERM: nothing of it may go on
            exited = process.poll() is not None
            _end_session(process)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise self._timed_out(shown, timeout, left_running=exited) from None
            raise
        completed = Completed(process.returncode, stdout, "\n".join(tail),
                              time.monotonic() - started)
        if self.remote and completed.returncode == _PREFIX_FAILED:
            raise HostUnreachableError(
                f"cannot reach member {self.name} through `{self.prefix}` (exit 255): "
                f"{completed.last_line}",
                f"check the member's exec prefix in the plan, the host's name, and its ssh key "
                f"and known_hosts entry; `{self.prefix} true` by hand must succeed",
            )
        if self.remote and completed.returncode in _TIMED_OUT and completed.seconds >= timeout:
            raise self._timed_out(shown, timeout, left_running=False)
        return completed

    def etcdops_json(
        self, args: Sequence[str], *, stdin_path: Path | None = None, timeout: float
    ) -> dict[str, Any]:
        """Run `etcdops -o json ARGS` on the host; its result, or its error raised here."""
        argv = [*self._etcdops, "-o", "json", *args]
        completed = self.run(argv, stdin_path=stdin_path, timeout=timeout)
        document = _json(completed.stdout)
        if document is not None and isinstance(document.get("error"), dict):
            raise self._remote_error(document["error"])
        if completed.returncode in _CANNOT_RUN:
            raise ToolError(
                f"on {self.where}: cannot run {self.etcdops}: {completed.last_line}",
                "install etcdops on that host, or give the member's etcdops as its path there",
            )
        if completed.returncode != 0 or document is None:
            raise ToolError(
                f"on {self.where}: `{shlex.join(argv)}` exited {completed.returncode} without "
                f"a JSON result: {completed.last_line}",
                "run the command there by hand to see what it says",
            )
        return document

    def probe(self, timeout: float) -> HostProbe:
        """Whether the host answers through its prefix and which etcdops it has, changing
        nothing (dr run --dry-run)."""
        started = time.monotonic()
        try:
            completed = self.run([*self._etcdops, "--version"], timeout=timeout)
        except EtcdopsError as exc:
            # through a prefix, no answer at all; here, the host is this one and etcdops failed
            return HostProbe(self.name, self.prefix, not self.remote, None, exc.message,
                             exc.hint, time.monotonic() - started)
        if completed.returncode != 0:
            return HostProbe(
                self.name, self.prefix, True, None,
                f"on {self.where}: `{self.etcdops} --version` exited {completed.returncode}: "
                f"{completed.last_line}",
                "install etcdops on that host, or give the member's etcdops as its path there",
                completed.seconds,
            )
        version = completed.stdout.strip().removeprefix("etcdops").strip()
        return HostProbe(self.name, self.prefix, True, version, None, None, completed.seconds)

    def _communicate(self, process: subprocess.Popen[bytes], deadline: float
                     ) -> tuple[str, list[str]]:
        """stdout, and stderr's last lines, once the command ends; TimeoutExpired past the
        deadline. Both pipes are read by threads so that neither can fill and block it."""
        assert process.stdout is not None and process.stderr is not None
        lines: queue.Queue[str | None] = queue.Queue()
        chunks: list[bytes] = []
        readers = [
            threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True),
            threading.Thread(target=lambda: chunks.append(process.stdout.read()), daemon=True),
        ]
        for reader in readers:
            reader.start()
        tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        # the reporter is called from this thread only: reporters need not be thread-safe
        while (line := _next_line(lines, deadline)) is not None:
            tail.append(line)
            if line.strip():
                self.reporter.event(f"{self.name}: {line}")
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for reader in readers:
            reader.join(timeout=max(0.0, deadline - time.monotonic()))
        if readers[1].is_alive():  # something the command left behind holds its stdout
            raise subprocess.TimeoutExpired(process.args, 0)
        return b"".join(chunks).decode(errors="replace"), list(tail)

    def _cannot_start(self, exc: OSError, program: str) -> EtcdopsError:
        reason = exc.strerror or str(exc)
        if self.remote:
            return HostUnreachableError(
                f"cannot reach member {self.name}: its exec prefix `{self.prefix}` does not run "
                f"here: {reason}",
                f"install {self._prefix[0]} on this host, or fix the member's exec prefix in the "
                "plan",
            )
        return ToolError(f"on {self.where}: cannot run {program}: {reason}",
                         "put it on PATH, or give its full path")

    def _timed_out(self, shown: str, timeout: float, *, left_running: bool) -> ToolError:
        if left_running:
            return ToolError(
                f"on {self.where}: `{shown}` exited, but what it started in the background held "
                f"its output open past {timeout:g}s and was stopped",
                "redirect the output of what it starts (>FILE 2>&1), or start it with systemctl",
            )
        return ToolError(
            f"on {self.where}: `{shown}` did not finish within {timeout:g}s and was stopped",
            "look at what it waits for on that host, or give the step a longer timeout",
        )

    def _remote_error(self, error: dict[str, Any]) -> EtcdopsError | Interrupted:
        """The remote etcdops's error as the same class here, so the exit code is the same."""
        message, hint = f"on {self.where}: {error.get('message')}", error.get("hint") or None
        if error.get("exit_code") == _INTERRUPTED or error.get("type") in _INTERRUPTS:
            # stopped there by Ctrl-C or SIGTERM: an interrupt here too (exit 130), not a failure
            return Interrupted(message, hint)
        # a type this etcdops lacks: click's own usage errors (NoSuchOption...) exit 2
        fallback = UsageError if error.get("exit_code") == _USAGE else ToolError
        cls = _error_classes().get(str(error.get("type")), fallback)
        return cls(message, hint)


def _split(text: str, what: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{what} cannot be parsed: {exc}: {text!r}",
                          "quote it as a shell would") from None


@contextlib.contextmanager
def _stdin(path: Path | None) -> Iterator[IO[bytes] | int]:
    """The child's stdin: the file itself (the kernel streams it), or nothing at all."""
    if path is None:
        yield subprocess.DEVNULL  # never the terminal: ssh would read it
        return
    with open(path, "rb") as file:  # closed here once the child has its own descriptor
        yield file


def _read_lines(pipe: IO[bytes], lines: queue.Queue[str | None]) -> None:
    try:
        for raw in pipe:
            lines.put(raw.decode(errors="replace").rstrip("\r\n"))
    finally:
        lines.put(None)


def _next_line(lines: queue.Queue[str | None], deadline: float) -> str | None:
    try:
        return lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        raise subprocess.TimeoutExpired("", 0) from None


def _end_session(process: subprocess.Popen[bytes]) -> None:
    """End every process of the command's session: SIGTERM, then SIGKILL after a grace.

    The session, not the process group: GNU `timeout` (a prefix's `sh -c` runs it here) moves
    itself and its command into a group of their own, but stays in the session."""
    try:
        _signal_session(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE)
        while _session_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # not our children: nothing to wait on but their going
    finally:
        # also after a second Ctrl-C during the grace, and for processes that outlived it
        _signal_session(process.pid, signal.SIGKILL)
        process.wait()


def _signal_session(sid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing left in the group
        os.killpg(sid, signum)  # the leader's group, also where /proc is not
    for pid in _session_members(sid):
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(pid, signum)


def _session_members(sid: int) -> list[int]:
    """The live processes of session sid, from /proc (none where there is no /proc)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:  # gone since the listing
                continue
            # after the command name: state, ppid, pgrp, session
            if fields[0] != b"Z" and int(fields[3]) == sid:
                found.append(int(entry.name))
    return found


def _json(text: str) -> dict[str, Any] | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _error_classes() -> dict[str, type[EtcdopsError]]:
    """Every error class by name (etcdops.errors' and those of loaded modules)."""
    found: dict[str, type[EtcdopsError]] = {}
    pending: list[type[EtcdopsError]] = [EtcdopsError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.__name__, cls)
        pending.extend(cls.__subclasses__())
    return found
