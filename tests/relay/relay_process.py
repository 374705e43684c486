"""Start ``voicewire relay`` as a user does, in its own process, and talk to it over loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

SECRETS = "1:" + bytes(range(32)).hex()


class RelayProcess:
    def __init__(self, *flags: str, secrets: str | None = SECRETS) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEWIRE_")}
        if secrets is not None:
            env["VOICEWIRE_ROUTING_SECRETS"] = secrets
        self.flags = flags
        self.spawned_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicewire", "relay", *flags],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started = self._wait_for_log("relay started")
        self.public = tuple(self.started["listen"])
        self.internal = [tuple(address) for address in self.started["internal"]]
        self.metrics_url = "http://{}:{}".format(*self.started["metrics"])
        self._wait_ready()

    def _wait_for_log(self, message: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError(f"relay exited with {self.process.wait()} before {message!r}")
            record = json.loads(line)
            if record["msg"] == message:
                return record
        raise TimeoutError(message)

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(self.metrics_url + "/readyz", timeout=1).status == 200:
                    self.ready_at = time.monotonic()  # its workers are serving from here on
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.01)  # a close ready_at: restart tests measure from it
        raise TimeoutError("relay never became ready")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = urllib.request.urlopen(self.metrics_url + "/metrics", timeout=2).read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_metric(self, name: str, expected: float, timeout: float = 3.0, **labels: str) -> None:
        """Counters reach the supervisor a few times a second: poll until they arrive."""
        deadline = time.monotonic() + timeout
        value = self.metric(name, **labels)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            value = self.metric(name, **labels)
        assert value == expected, f"{name}{labels} = {value}, expected {expected}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(10)
        finally:
            self.process.stderr.close()


def udp(host: str = "127.0.0.1", timeout: float = 2.0, buffer: int = 4 << 20) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    sock.bind((host, 0))
    sock.settimeout(timeout)
    return sock


def nothing_arrives(sock: socket.socket, wait: float = 0.3) -> bool:
    sock.settimeout(wait)
    try:
        sock.recvfrom(65535)
    except TimeoutError:
        return True
    return False
