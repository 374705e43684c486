"""Real cluster parts for tests: a redis-server, and voicewire services as their own processes.

Every wait here is async (polling), so a test can wait for a process while an aiortc call runs
on the same event loop without starving it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import aiohttp

from tests.relay.relay_process import SECRETS
from voicewire.wire.routing_token import RoutingKeys

ROUTING_KEYS = RoutingKeys.parse(SECRETS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """``redis-server`` on a loopback port of its own, nothing saved; stoppable and restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


class Service:
    """``python -m voicewire SERVICE …`` with its JSON log lines collected as they come."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("VOICEWIRE_")}
        self.argv = argv
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicewire", *argv],
            env={**clean, "VOICEWIRE_ROUTING_SECRETS": SECRETS, **(env or {})},
            stderr=subprocess.PIPE,
            text=True,
        )
        self.records: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.started: dict[str, Any] = {}

    def _read(self) -> None:
        for line in self.process.stderr:
            try:
                self.records.append(json.loads(line))
            except ValueError:
                self.records.append({"msg": line.rstrip()})

    async def wait_log(self, msg: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for record in list(self.records):
                if record.get("msg") == msg and all(record.get(k) == v for k, v in fields.items()):
                    return record
            if self.process.poll() is not None:
                self._reader.join(1)
                if not any(record.get("msg") == msg for record in self.records):
                    raise AssertionError(f"{self.argv[0]} exited before {msg!r}: {self.records}")
            assert time.monotonic() < deadline, f"no {msg!r} from {self.argv[0]}: {self.records}"
            await asyncio.sleep(0.02)

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"{self.argv[0]} still running after {timeout} s"
            await asyncio.sleep(0.02)
        return self.process.returncode

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)
        self._reader.join(2)


class Transceiver(Service):
    async def start(self) -> Transceiver:
        self.started = await self.wait_log("transceiver started")
        self.advertise = tuple(self.started["advertise"])
        self.url = self.started["advertise_http"]
        return self

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as response:
            return response.status, await response.text()

    async def sessions(self) -> float:
        _, text = await self.get("/metrics")
        line = next(x for x in text.splitlines() if x.startswith("voicewire_transceiver_sessions "))
        return float(line.split()[1])


class Gateway(Service):
    async def start(self) -> Gateway:
        self.started = await self.wait_log("gateway started")
        self.url = "http://{}:{}".format(*self.started["http"])
        return self


def owner_of(answer: str) -> tuple[str, int]:
    """The transceiver a call's answer routes to: the address in its ufrag's routing token."""
    ufrag = next(line for line in answer.splitlines() if line.startswith("a=ice-ufrag:"))[12:]
    return ROUTING_KEYS.verify(ufrag.strip()).transceiver
