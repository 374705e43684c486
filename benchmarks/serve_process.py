"""A benchmark's server subprocess, its JSON log read by a thread: one class for the benchmarks.

setup_bench.py and turn_bench.py start their servers (``voicewire serve``, the aiortc echo
server) on loopback the same way: in a process group of their own, the JSON log on stderr kept in
memory and in a file, the URL taken from the ``serving`` line, the whole group killed at the end.
This module is that code, once, so that a fix to it reaches both; what differs between them is a
parameter: the command line (with optional ``taskset -c CPU`` pinning), the name, the log file and
a hook on every log record.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from processes import BenchError

START_TIMEOUT = 20.0  # a server prints its "serving" line within this
ERROR_LEVELS = ("error", "critical", "raw")  # "raw": a line that is not JSON


def serve_argv(*options: str) -> list[str]:
    """``voicewire serve`` with ``options``, listening on loopback ports of the kernel's choice."""
    argv = [sys.executable, "-m", "voicewire", "serve", *options]
    return argv + ["--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"]


class ServeProcess:
    """A server on loopback in its own process group; its JSON log drained and kept by a thread.

    ``cpu`` pins it (``taskset -c``); ``on_record`` sees every log record, in the reader thread
    and under the lock that guards ``records``.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        *,
        cpu: int | None = None,
        on_record: Callable[[dict], None] | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEWIRE_")}
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        self.name = name
        self.log_path = log_path
        self.records: list[dict] = []
        self.recent: deque[str] = deque(maxlen=30)
        self.url: str | None = None
        self._on_record = on_record
        self._serving = threading.Event()
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # one group: its helpers (relay workers) die with it
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.log_path.open("w") as out:
            for line in self.process.stderr:
                out.write(line)
                out.flush()
                self.recent.append(line.rstrip("\n"))
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"level": "raw", "msg": line.rstrip("\n")}
                if not isinstance(record, dict):
                    continue
                with self._lock:
                    self.records.append(record)
                    if self._on_record is not None:
                        self._on_record(record)
                if self.url is None and record.get("msg") == "serving":
                    self.url = record["url"]
                    self._serving.set()
        self._serving.set()  # stderr closed: the process is gone

    def wait_serving(self) -> str:
        if not self._serving.wait(START_TIMEOUT) or self.url is None:
            raise BenchError(f"{self.name} did not start within {START_TIMEOUT} s\n{self.tail()}")
        return self.url

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.process.returncode}\n{self.tail()}")

    def errors(self) -> list[dict]:
        """The records logged at error level or above, and the lines that were not JSON."""
        with self._lock:
            return [r for r in self.records if r.get("level") in ERROR_LEVELS]

    def check(self) -> None:
        """Alive, and nothing but info and warnings in its log."""
        self.check_alive()
        if bad := self.errors():
            shown = "\n".join(json.dumps(r) for r in bad[:5])
            raise BenchError(f"{self.name} logged errors:\n{shown}\n(log: {self.log_path})")

    def tail(self) -> str:
        return "\n".join(self.recent) + f"\n(full log: {self.log_path})"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for 10 s: killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything of its group left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self._reader.join(5)


def stop_all(servers: Iterable[ServeProcess]) -> None:
    """Stop every server: a benchmark's cleanup, whether its run finished, failed or was cut."""
    for server in servers:
        server.stop()
