"""The relay's parent process: owns the sockets, runs the workers, serves metrics and health.

The supervisor binds every socket itself and passes them down, so a worker that crashes is
replaced on the very same sockets (no datagram is refused while it restarts; the kernel queues
them) and keeps its place in the SO_REUSEPORT group. Workers are fresh interpreters
(``python -m voicewire.relay.worker``), not forks, so no thread or lock of this process leaks
into them; their configuration, secrets included, goes over a pipe, never argv.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from voicewire.ops_http import OpsServer
from voicewire.relay.allow_list import AllowList
from voicewire.relay.metrics import RelayCollector
from voicewire.relay.sockets import bind_internal, bind_public
from voicewire.relay.stats_board import StatsBoard
from voicewire.wire.routing_token import RoutingKeys

log = logging.getLogger("voicewire.relay")

STOP_GRACE = 5.0  # seconds a worker gets to finish after SIGTERM before it is killed
_RESPAWN_BACKOFF = (0.1, 30.0)  # first and longest wait before replacing a crashed worker


@dataclass(frozen=True)
class RelayConfig:
    listen: tuple[str, int]
    """Public UDP address clients send to: the one candidate in every SDP answer."""
    internal: tuple[str, int]
    """Internal UDP address for transceiver traffic; worker i uses port + i."""
    workers: int
    """Worker processes sharing the public port."""
    allow: AllowList
    """Transceiver networks: the only internal peers the relay sends to or accepts from."""
    keys: RoutingKeys
    """Routing secrets that verify tokens."""
    idle_timeout: float
    """Seconds after which a silent flow is forgotten (consent checks refresh it)."""
    metrics: tuple[str, int] | None
    """HTTP address for /metrics, /healthz and /readyz, or None for none."""
    socket_buffer: int
    """SO_RCVBUF/SO_SNDBUF bytes: small enough that overload sheds instead of queueing."""
    log_level: str = "info"
    redis: str | None = None
    """Redis URL of the flow records to recover unknown clients from, or None: no lookups."""
    cluster_id: int = 0
    """The cluster whose flow records are read."""


class _WorkerHandle:
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.backoff = _RESPAWN_BACKOFF[0]
        self.respawn_at = 0.0
        self.spawned_sequence = 0
        """Its stats slot's sequence when it was started: once that moves, it is serving."""


class RelaySupervisor:
    def __init__(self, config: RelayConfig) -> None:
        """Bind every socket now, so a busy port fails before anything starts."""
        self.config = config
        self.public = bind_public(config.listen, config.workers, config.socket_buffer)
        try:
            self.internal = bind_internal(config.internal, config.workers, config.socket_buffer)
        except Exception:
            for sock in self.public:
                sock.close()
            raise
        self.board = StatsBoard(config.workers)
        self._workers = [_WorkerHandle(slot) for slot in range(config.workers)]
        self._stop = threading.Event()
        self._ops: OpsServer | None = None
        if config.metrics is not None:
            registry = CollectorRegistry()
            registry.register(RelayCollector(self.board, self.workers_alive))
            self._ops = OpsServer(config.metrics, registry, self.ready)

    @property
    def public_address(self) -> tuple[str, int]:
        return self.public[0].getsockname()[:2]

    def internal_addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self.internal]

    def workers_alive(self) -> int:
        return sum(1 for w in self._workers if w.process is not None and w.process.poll() is None)

    def ready(self) -> bool:
        """Every worker is in its loop: it has published counters since it was started. A
        worker is alive some 50 ms before then, importing. With ``--redis`` its lookup thread
        imports redis-py meanwhile (~0.1 s), and the first lookups wait for it: forwarding on
        known flows and STUN does not."""
        return not self._stop.is_set() and all(self._serving(w) for w in self._workers)

    def _serving(self, worker: _WorkerHandle) -> bool:
        return (
            worker.process is not None
            and worker.process.poll() is None
            and self.board.sequence(worker.slot) != worker.spawned_sequence
        )

    def stop(self) -> None:
        self._stop.set()

    def run(self, install_signals: bool = True) -> None:
        """Start the workers and keep them running until ``stop()`` (or SIGTERM/SIGINT).

        Embedded in another service (``voicewire serve``) it runs on a thread and leaves signals
        to its host, which calls ``stop()``.
        """
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self._stop.set())
        for worker in self._workers:
            self._spawn(worker)
        if self._ops is not None:
            self._ops.start()
        log.info(
            "relay started",
            extra={
                "listen": self.public_address,
                "internal": self.internal_addresses(),
                "workers": len(self._workers),
                "allow": str(self.config.allow),
                "key_ids": self.config.keys.key_ids,
                "metrics": self._ops.address if self._ops else None,
                "flow_recovery": self.config.redis is not None,
            },
        )
        try:
            while not self._stop.wait(0.1):
                self._replace_dead_workers()
        finally:
            self._shutdown()

    def _spawn(self, worker: _WorkerHandle) -> None:
        fds = (
            self.public[worker.slot].fileno(),
            self.internal[worker.slot].fileno(),
            self.board.fd,
        )
        config = {
            "slot": worker.slot,
            "parent": os.getpid(),
            "slots": len(self._workers),
            "public_fd": fds[0],
            "internal_fd": fds[1],
            "board_fd": fds[2],
            "secrets": [
                [kid, self.config.keys.secret(kid).hex()] for kid in self.config.keys.key_ids
            ],
            "allow": str(self.config.allow),
            "idle_timeout": self.config.idle_timeout,
            "log_level": self.config.log_level,
            "redis": self.config.redis,  # may hold a password: the pipe, never argv
            "cluster_id": self.config.cluster_id,
        }
        worker.spawned_sequence = self.board.sequence(worker.slot)  # before it can publish
        process = subprocess.Popen(
            [sys.executable, "-m", "voicewire.relay.worker"], stdin=subprocess.PIPE, pass_fds=fds
        )
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(config).encode())
            process.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; _replace_dead_workers will see it
        worker.process = process
        worker.started = time.monotonic()

    def _replace_dead_workers(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if self._stop.is_set():  # Ctrl-C reaches the workers too: don't restart them
                return
            process = worker.process
            if process is not None and process.poll() is not None:
                log.error(
                    "worker died; replacing it",
                    extra={"slot": worker.slot, "status": process.returncode},
                )
                if now - worker.started > 60:  # it had been healthy: start over gently
                    worker.backoff = _RESPAWN_BACKOFF[0]
                worker.respawn_at = now + worker.backoff
                worker.backoff = min(worker.backoff * 2, _RESPAWN_BACKOFF[1])
                worker.process = None
            if worker.process is None and now >= worker.respawn_at:
                self._spawn(worker)

    def _shutdown(self) -> None:
        log.info("relay stopping")
        if self._ops is not None:
            self._ops.close()
        running = [w.process for w in self._workers if w.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for sock in (*self.public, *self.internal):
            sock.close()
        log.info("relay stopped")
