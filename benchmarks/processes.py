"""The benchmarks' child processes: how they are started, read from /proc and ended, once.

Every benchmark starts servers, forwarders and load generators that must not outlive it (a
leftover relay worker would load the next run's cores), and reads their CPU time from /proc. Each
script used to carry its own copy of this; a fix to one copy (say, not killing a pid twice) did
not reach the others. What is here is the union of those copies' behaviour.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path


class BenchError(Exception):
    """The run is broken: no number from it may be reported."""


class Children:
    """Every process a benchmark starts, each in a session of its own, so it can end them all.

    A process started here leads its own session and process group (``start_new_session``), so
    one signal to the group reaches whatever it forked (``taskset`` exec'ing the server, a relay
    worker). A descendant that might leave the group is ``adopt``-ed, to be killed when it is
    still in the leader's session after the leader is gone.
    """

    def __init__(self, grace: float = 10.0) -> None:
        self.grace = grace  # seconds between SIGTERM and SIGKILL
        self._running: list[subprocess.Popen] = []
        self._descendants: dict[int, list[int]] = {}  # leader pid -> pids it started

    def start(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        self._running.append(process)
        return process

    def adopt(self, process: subprocess.Popen, pids: Iterable[int]) -> None:
        """Remember processes that ``process`` started, to end them should it die first.

        Adds to what was adopted before: a caller may learn its descendants in several steps.
        """
        self._descendants.setdefault(process.pid, []).extend(pids)

    def stop(self, process: subprocess.Popen, grace: float | None = None) -> None:
        """End ``process`` and its group (SIGTERM, then SIGKILL after ``grace`` seconds), then
        any adopted process still alive in its session."""
        if process.poll() is None:  # the leader is alive, so the group id is still ours
            signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(self.grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait()
        for pid in self._descendants.pop(process.pid, ()):
            # The leader is reaped: its pid may be reused, and is no descendant to kill.
            if pid != process.pid and session_of(pid) == process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        """Stop every process still running, the last started first (clients before servers)."""
        for process in reversed(list(self._running)):  # stop() removes from the list
            self.stop(process)


def signal_group(pgid: int, signum: int) -> None:
    """Signal a process group; start_new_session makes the leader's pid its group id."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces): index 0 is
    the state, 1 the parent pid, 3 the session; None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session_of(pid: int) -> int | None:
    """The session id of a process (a Children leader's pid for what it started); None if gone."""
    fields = stat_fields(pid)
    try:
        return None if fields is None else int(fields[3])
    except (IndexError, ValueError):
        return None


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of these processes, all their threads; a process that is gone counts 0."""
    ticks = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """The direct children of a process, whichever of its threads forked them."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(p) for p in (task / "children").read_text().split()]
    return children


def cmdline(pid: int) -> str:
    """The command line, arguments separated by spaces; empty when the process is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def command_of(pid: int) -> str:
    """The executable's short name (comm): "taskset" until taskset has exec'd its command."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
