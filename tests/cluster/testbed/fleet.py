"""Phase 2 on the bed: the whole voicewire cluster as real processes, and a caller to drive it.

:class:`Fleet` starts, kills and restarts the services in their hosts as DESIGN §8 deploys them:

- ``voicewire relay`` in vw-relay1 and vw-relay2: public :3478 behind the VIP, transceivers
  allowed from the internal network, ops on :9100; with ``recovery`` also ``--redis`` (shared
  flow recovery), when this voicewire has that flag;
- ``voicewire transceiver`` in vw-tx1 and vw-tx2: UDP :7000 advertised on the host's address,
  internal API :8081, the VIP as the relays' public address, Redis, the echo agent;
- ``voicewire gateway`` in vw-gw on :8080 (the VIP's TCP :8080 is forwarded there), and on demand
  a second one on :8090 with a static ``--transceivers`` list (VIP :8090 forwarded too);
- redis-server in vw-redis.

:class:`CallerProcess` runs ``call_client`` inside vw-client and speaks its JSON lines. The fault
tests (``test_cluster_faults.py``) and the fleet benchmark (``benchmarks/fleet_bench.py``) share
both, so the benchmark measures exactly what the tests prove works.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from tests.cluster.testbed import netns, probes, topology
from tests.cluster.testbed.bed import SECRETS, Bed, Service
from voicewire.wire.routing_token import RoutingKeys

REDIS_URL = f"redis://{topology.address('redis')}:{topology.REDIS_PORT}/0"
TX_UDP_PORT = 7000
TX_HTTP_PORT = 8081
STATIC_GATEWAY_PORT = 8090
GATEWAY_URL = f"http://{topology.VIP}:{topology.GATEWAY_PORT}"
STATIC_GATEWAY_URL = f"http://{topology.VIP}:{STATIC_GATEWAY_PORT}"
KEYS = RoutingKeys.parse(SECRETS)

TX_BY_ADDRESS = {(topology.address(h), TX_UDP_PORT): h for h in topology.TRANSCEIVERS}
RELAY_BY_ADDRESS = {topology.address(h): h for h in topology.RELAYS}


def owner_of(ufrag: str) -> str:
    """The transceiver host a call's answer routes to (the address in its routing token)."""
    return TX_BY_ADDRESS[KEYS.verify(ufrag).transceiver]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {"name{labels}": value} (comments skipped)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values


class Fleet:
    """The cluster's services on one bed; every start waits until the service is ready."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.relays: dict[str, Service] = {}
        self.recovery: dict[str, bool] = {}
        self.transceivers: dict[str, Service] = {}
        self.gateways: dict[int, Service] = {}
        self.redis: Service | None = None

    # ----- lifetime -----

    def up(self, *, recovery: bool) -> None:
        """Redis, both relays, both transceivers and the gateway, all ready and registered."""
        self.ensure(recovery=recovery)

    def ensure(self, *, recovery: bool, static_gateway: bool = False) -> None:
        """Bring back whatever a test stopped: every service running, relays with the wanted
        recovery setting, every relay in the load balancer, both transceivers registered."""
        if self.redis is None or not self.redis.alive():
            self.start_redis()
        for host in topology.RELAYS:
            running = host in self.relays and self.relays[host].alive()
            if running and self.recovery.get(host) != recovery:
                self.stop(self.relays.pop(host))
                running = False
            if not running:
                self.start_relay(host, recovery=recovery)
        self.bed.restore_relays()
        for host in topology.TRANSCEIVERS:
            if host not in self.transceivers or not self.transceivers[host].alive():
                self.start_transceiver(host)
        if (
            topology.GATEWAY_PORT not in self.gateways
            or not self.gateways[topology.GATEWAY_PORT].alive()
        ):
            self.start_gateway()
        if static_gateway and (
            STATIC_GATEWAY_PORT not in self.gateways
            or not self.gateways[STATIC_GATEWAY_PORT].alive()
        ):
            self.start_gateway(STATIC_GATEWAY_PORT, static=True)
        self.wait_registered(len(topology.TRANSCEIVERS))

    def down(self, grace: float = 3.0) -> None:
        """Stop everything: SIGTERM to all at once, then each is waited for (SIGKILL after
        ``grace``), so teardown takes the slowest stop, not the sum."""
        services = [*self.gateways.values(), *self.transceivers.values(), *self.relays.values()]
        if self.redis is not None:
            services.append(self.redis)
        for service in services:
            if service.alive():
                service.signal(signal.SIGTERM)
        for service in services:
            self.stop(service, grace=grace)
        self.gateways.clear()
        self.transceivers.clear()
        self.relays.clear()
        self.redis = None

    def stop(self, service: Service, grace: float = 5.0) -> int | None:
        """Stop a service (SIGTERM, then SIGKILL) and forget it; its exit status."""
        status = service.stop(grace=grace)
        if service in self.bed.services:
            self.bed.services.remove(service)
        return status

    # ----- services -----

    def start_redis(self) -> Service:
        self.redis = self.bed.start_redis()
        return self.redis

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.stop(self.redis)
        self.redis = None

    def start_relay(self, host: str, *, recovery: bool) -> Service:
        extra: list[str] = []
        if recovery:
            extra = ["--redis", REDIS_URL]
        service = self.bed.start_relay(host, extra=extra)
        self.relays[host] = service
        self.recovery[host] = recovery
        return service

    def kill_relay(self, host: str) -> None:
        """SIGKILL the relay's whole process group (supervisor and workers): a crash."""
        service = self.relays.pop(host)
        service.kill()
        if service in self.bed.services:
            self.bed.services.remove(service)

    def restart_relay(self, host: str) -> tuple[float, float]:
        """Stop the relay (SIGTERM) and start it again with the same flags.

        Returns (when it was stopped, when the new one answered /readyz)."""
        recovery = self.recovery[host]
        self.stop(self.relays.pop(host))
        stopped = time.monotonic()
        self.start_relay(host, recovery=recovery)
        return stopped, time.monotonic()

    def start_transceiver(self, host: str, *flags: str) -> Service:
        address = topology.address(host)
        argv = [
            "transceiver",
            "--udp",
            f"0.0.0.0:{TX_UDP_PORT}",
            "--advertise",
            f"{address}:{TX_UDP_PORT}",
            "--http",
            f"0.0.0.0:{TX_HTTP_PORT}",
            "--relay-public",
            f"{topology.VIP}:{topology.RELAY_PORT}",
            "--redis",
            REDIS_URL,
            "--agent",
            "echo",
            *flags,
        ]
        argv += ["--allow-relays", topology.INTERNAL_NET]
        service = self.bed.start_voicewire(
            host,
            "transceiver",
            argv,
            env={"VOICEWIRE_ROUTING_SECRETS": SECRETS},
            ready=lambda: self.status(host, TX_HTTP_PORT, "/readyz") == 200,
        )
        self.transceivers[host] = service
        return service

    def start_gateway(self, port: int = topology.GATEWAY_PORT, *, static: bool = False) -> Service:
        """A gateway in vw-gw on ``port``, published on the VIP's same TCP port."""
        argv = ["gateway", "--http", f"0.0.0.0:{port}", "--redis", REDIS_URL]
        if static:
            urls = [f"http://{topology.address(h)}:{TX_HTTP_PORT}" for h in topology.TRANSCEIVERS]
            argv += ["--transceivers", ",".join(urls)]
        if self.bed.lb.tcp_forwards.get(port) != (topology.address("gw"), port):
            self.bed.lb.tcp_forwards[port] = (topology.address("gw"), port)
            self.bed.lb.apply()
        service = self.bed.start_voicewire(
            "gw",
            f"gateway-{port}",
            argv,
            ready=lambda: self.status("gw", port, "/readyz") == 200,
        )
        self.gateways[port] = service
        return service

    # ----- looking at them -----

    def status(self, host: str, port: int, path: str) -> int:
        return self.bed.http_status(host, f"http://127.0.0.1:{port}{path}")

    def metrics(self, host: str) -> dict[str, float]:
        """A relay's (ops port) or a transceiver's (internal API) /metrics, parsed."""
        port = topology.OPS_PORT if host in topology.RELAYS else TX_HTTP_PORT
        status, body = self.bed.http_get(host, f"http://127.0.0.1:{port}/metrics")
        assert status == 200, f"/metrics of {host}: {status}"
        return parse_metrics(body.decode())

    def sessions(self, host: str) -> int:
        return int(self.metrics(host)["voicewire_transceiver_sessions"])

    def registered(self) -> dict[str, dict[str, Any]]:
        """The registry's live transceiver records, by host (read from vw-gw)."""
        from voicewire.cluster.redis_client import connect
        from voicewire.cluster.registry import TransceiverRegistry

        async def read() -> list:
            client = connect(REDIS_URL)
            try:
                return await TransceiverRegistry(client, 0).transceivers()
            finally:
                await client.aclose()

        records: list = self.bed.call("gw", lambda: asyncio.run(read()))  # type: ignore[assignment]
        hosts = {f"{address}:{port}": host for (address, port), host in TX_BY_ADDRESS.items()}
        return {
            hosts[r.advertise]: {"sessions": r.sessions, "draining": r.draining} for r in records
        }

    def wait_registered(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.registered()) >= count:
                    return
            except Exception:  # noqa: BLE001 (Redis still starting)
                pass
            if time.monotonic() > deadline:
                raise netns.BedError(f"{count} transceivers not registered after {timeout} s")
            time.sleep(0.1)

    def relay_of_ports(self) -> dict[int, str]:
        """Client port → the relay the load balancer's conntrack entries send it to.

        Only the conntrack mode keeps entries; in stateless mode this is empty."""
        if self.bed.lb.mode != "conntrack":
            return {}
        argv = ["conntrack", "-L", "-p", "udp", "--orig-dst", topology.VIP]
        text = self.bed.run("lb", argv, check=False)
        found = {}
        for line in text.splitlines():
            match = re.search(r"sport=(\d+) dport=\d+ (?:\[UNREPLIED\] )?src=(\S+)", line)
            if match and match.group(2) in RELAY_BY_ADDRESS:
                found[int(match.group(1))] = RELAY_BY_ADDRESS[match.group(2)]
        return found


def impair_signaling(bed: Bed, port: int = topology.GATEWAY_PORT, on: bool = True) -> None:
    """Send the client's TCP to and from VIP:``port`` (HTTP signaling) through the impairment
    hop too, so a POST costs a delayed, jittered, lossy round trip like the media's.

    The bed routes only UDP through the hop (it models the media path); a setup-time benchmark
    whose floor counts an HTTP round trip needs the signaling on the same path."""
    rules = [
        f"pref 98 iif {topology.IMPAIR_CLIENT_DEV} ipproto tcp dport {port} "
        f"lookup {topology.TABLE_UP}",
        f"pref 99 iif {topology.IMPAIR_LB_DEV} ipproto tcp sport {port} "
        f"lookup {topology.TABLE_DOWN}",
    ]
    verb = "add" if on else "del"
    netns.ip_batch(bed.ns("impair"), [f"rule {verb} {rule}" for rule in rules])


def measure_path(bed: Bed, flows: int = 10, per_flow: int = 50) -> probes.PathReport:
    """The client → VIP path as calls will see it: audio-paced probes through the hop to
    stand-in echo relays on :3478 (``probes.measure``). Run it while no real relay holds the
    port: the echoes start and stop here."""
    echoes = []
    try:
        for host in topology.RELAYS:
            echoes.append(bed.start_echo_relay(host))
        socks = [bed.udp_socket("client") for _ in range(flows)]
        try:
            return probes.measure(socks, per_flow=per_flow)
        finally:
            for sock in socks:
                sock.close()
    finally:
        for echo in echoes:
            echo.stop()
            if echo in bed.services:
                bed.services.remove(echo)


class CallerError(RuntimeError):
    """The caller process answered ``ok: false``, died or did not answer in time."""


class CallerProcess:
    """``call_client`` inside vw-client; one request at a time, JSON lines both ways."""

    def __init__(self, bed: Bed, gateway: str = GATEWAY_URL, ready_timeout: float = 60.0) -> None:
        self.bed = bed
        self.stalls: list[list[float]] = []
        self.log_path = bed.state_dir / "logs" / "client-caller.log"
        with open(self.log_path, "ab") as log:
            self.process = bed.popen(
                "client",
                [sys.executable, "-m", "tests.cluster.testbed.call_client", "--gateway", gateway],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next(ready_timeout)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise CallerError(f"the caller did not answer in {timeout} s") from None
        if not line:
            raise CallerError(f"the caller exited; its log ends:\n{self.log()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise CallerError(f"the caller failed: {reply.get('error')}\n{self.log()}")
        return reply

    def request(self, op: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self.process.stdin.flush()
        return self._next(timeout)

    def log(self, tail: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    # ----- the commands -----

    def start(self, count: int, **args: Any) -> list[dict[str, Any]]:
        return self.request("start", count=count, **args)["calls"]

    def gaps(
        self, since: float, until: float | None = None, calls: Iterable[int] | None = None
    ) -> dict[int, dict[str, Any]]:
        """Each call's longest gap in [since, until], not counting the time the caller or the
        impairment hop was frozen (those intervals are kept in :attr:`stalls`)."""
        ids = None if calls is None else list(calls)
        excused = self.bed.impair_stats().get("stalls", [])
        reply = self.request("gaps", since=since, until=until, calls=ids, excused=excused)
        self.stalls = reply["stalls"]
        return {c["id"]: c for c in reply["calls"]}

    def audio(self, since: float, calls: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
        ids = None if calls is None else list(calls)
        return {c["id"]: c for c in self.request("audio", since=since, calls=ids)["calls"]}

    def status(self, calls: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
        ids = None if calls is None else list(calls)
        return {c["id"]: c for c in self.request("status", calls=ids)["calls"]}

    def cpu_seconds(self) -> float:
        return self.request("status", calls=[])["cpu_s"]

    def rebind(self, call: int) -> dict[str, Any]:
        return self.request("rebind", call=call)

    def hangup(self, calls: Iterable[int] | None = None) -> dict[int, Any]:
        ids = None if calls is None else list(calls)
        return {c["id"]: c["status"] for c in self.request("hangup", calls=ids)["calls"]}

    def close(self, calls: Iterable[int] | None = None) -> None:
        self.request("close", calls=None if calls is None else list(calls))

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.request("quit", timeout=10)
            except (CallerError, OSError):
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(5)
