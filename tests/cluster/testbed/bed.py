"""The multi-host test bed: build the namespaces, links, routes, load balancer and impairment hop;
start services inside hosts; tear everything down again, even what a crashed run left behind.

A :class:`Bed` is a handle on namespaces named ``<prefix><host>``. ``up()`` always starts by
removing every namespace with the prefix (and every process inside one), so a run that died
half way never poisons the next; ``down()`` does the same removal and is safe to call any number
of times, from any process, with no memory of what ``up()`` did.

Services are processes started through ``ip netns exec`` in their own session (process group),
so stopping one stops its children too (a relay's workers). Phase 2 adds transceivers, gateways
and Redis with :meth:`Bed.start_voicewire` / :meth:`Bed.start_service`; nothing else changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.testbed import netns, topology
from tests.cluster.testbed.impair import Impairment
from tests.cluster.testbed.lb import LoadBalancer

REPO = Path(__file__).resolve().parents[3]
STATE_ROOT = Path("/tmp/voicewire-testbed")
SECRETS = "1:" + bytes(range(32)).hex()
"""Routing secrets the bed's services share (the same test key as tests/relay)."""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Service:
    """A process the bed started inside one of its hosts."""

    name: str
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Signal the whole process group (the service and any workers it started)."""
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; return the exit status."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                return self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.signal(signal.SIGKILL)
        try:
            return self.process.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the group at once: a crash, not a drain."""
        self.signal(signal.SIGKILL)
        self.process.wait(5)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""


@dataclass
class Bed:
    """The bed named by ``prefix``: its namespaces, load balancer, impairment and services."""

    prefix: str = field(default_factory=topology.default_prefix)
    impairment: Impairment = field(default_factory=Impairment.symmetric)
    lb_mode: str = "auto"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}-", self.prefix):
            # down() deletes every namespace starting with the prefix: never let it be "" or "v".
            raise ValueError(f"bed prefix {self.prefix!r} must look like 'vw-' (letters, then -)")
        self.up_seconds = 0.0
        self.state_dir = STATE_ROOT / self.prefix.rstrip("-")
        self.services: list[Service] = []
        self.lb = LoadBalancer(
            self.ns("lb"),
            [topology.address(relay) for relay in topology.RELAYS],
            mode=self.lb_mode,
            tcp_forwards={topology.GATEWAY_PORT: (topology.address("gw"), topology.GATEWAY_PORT)},
        )
        self.impair_service: Service | None = None

    # ----- names -----

    def ns(self, host: str) -> str:
        """The namespace of ``host`` (``relay1`` → ``vw-relay1``)."""
        if host not in topology.HOSTS:
            raise KeyError(f"the bed has no host {host!r}; hosts: {', '.join(topology.HOSTS)}")
        return self.prefix + host

    def namespaces(self) -> list[str]:
        """The bed's namespaces that exist right now."""
        return [name for name in netns.list_namespaces() if name.startswith(self.prefix)]

    # ----- lifetime -----

    def up(self) -> None:
        """Build the whole bed from nothing (after removing any leftovers) and start the hop."""
        started = time.monotonic()
        self.down()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        (self.state_dir / "logs").mkdir(parents=True)
        try:
            self._create_namespaces()
            self._create_links()
            self._configure_hosts()
            self.lb.apply()
            self.start_impair()
        except BaseException:
            self.down()
            raise
        self.up_seconds = time.monotonic() - started

    def down(self) -> None:
        """Stop every service, then delete every namespace with the prefix and what runs in it."""
        for service in reversed(self.services):
            service.stop(grace=3.0)
        self.services.clear()
        self.impair_service = None
        for name in self.namespaces():
            netns.delete_namespace(name)

    def _create_namespaces(self) -> None:
        netns.ip_batch(None, [f"netns add {self.ns(host)}" for host in topology.HOSTS])
        for host in topology.HOSTS:
            # rp_filter off before any device exists: the TUN hop re-injects packets whose
            # source is reached through another interface, which strict filtering would drop.
            self._sysctl(
                host,
                {
                    "net.ipv4.conf.all.rp_filter": 0,
                    "net.ipv4.conf.default.rp_filter": 0,
                    "net.ipv4.ip_forward": int(host in topology.ROUTERS),
                    "net.ipv6.conf.all.disable_ipv6": 1,
                    "net.ipv6.conf.default.disable_ipv6": 1,
                },
            )

    def _create_links(self) -> None:
        """Every veth is created inside a bed namespace with its peer sent straight to another,
        so the host's own (root) namespace never holds a bed device, not even for a moment."""
        impair, lb, switch = self.ns("impair"), self.ns("lb"), self.ns("switch")
        netns.ip_batch(
            self.ns("client"),
            [
                f"link add {topology.HOST_DEV} type veth peer name {topology.IMPAIR_CLIENT_DEV} "
                f"netns {impair}"
            ],
        )
        netns.ip_batch(
            impair,
            [
                f"link add {topology.IMPAIR_LB_DEV} type veth peer name {topology.LB_PUBLIC_DEV} "
                f"netns {lb}",
                f"tuntap add dev {topology.TUN_UP} mode tun",
                f"tuntap add dev {topology.TUN_DOWN} mode tun",
            ],
        )
        switch_commands = [
            f"link add {topology.BRIDGE} type bridge",
            f"link set {topology.BRIDGE} up",
            f"link add lb type veth peer name {topology.LB_INTERNAL_DEV} netns {lb}",
            f"link set lb master {topology.BRIDGE}",
            "link set lb up",
        ]
        for host in topology.INTERNAL_HOSTS:
            switch_commands += [
                f"link add {host.name} type veth peer name {topology.HOST_DEV} "
                f"netns {self.ns(host.name)}",
                f"link set {host.name} master {topology.BRIDGE}",
                f"link set {host.name} up",
            ]
        netns.ip_batch(switch, switch_commands)

    def _configure_hosts(self) -> None:
        for host in topology.HOSTS:
            netns.ip_batch(self.ns(host), ["link set lo up"])
        netns.ip_batch(
            self.ns("client"),
            [
                f"addr add {topology.CLIENT}/24 dev {topology.HOST_DEV}",
                f"link set {topology.HOST_DEV} up",
                f"route add default via {topology.IMPAIR_CLIENT_SIDE}",
            ],
        )
        netns.ip_batch(
            self.ns("impair"),
            [
                f"addr add {topology.IMPAIR_CLIENT_SIDE}/24 dev {topology.IMPAIR_CLIENT_DEV}",
                f"addr add {topology.IMPAIR_LB_SIDE}/24 dev {topology.IMPAIR_LB_DEV}",
                f"link set {topology.IMPAIR_CLIENT_DEV} up",
                f"link set {topology.IMPAIR_LB_DEV} up",
                f"link set {topology.TUN_UP} up",
                f"link set {topology.TUN_DOWN} up",
                f"route add {topology.PUBLIC_NET} via {topology.LB_PUBLIC}",
                # UDP only goes through the userspace line; TCP (HTTP signaling), ICMP and the
                # rest are routed plainly, so signaling is neither slowed nor lost.
                f"route add default dev {topology.TUN_UP} table {topology.TABLE_UP}",
                f"route add default dev {topology.TUN_DOWN} table {topology.TABLE_DOWN}",
                f"rule add pref 100 iif {topology.IMPAIR_CLIENT_DEV} ipproto udp "
                f"lookup {topology.TABLE_UP}",
                f"rule add pref 101 iif {topology.IMPAIR_LB_DEV} ipproto udp "
                f"lookup {topology.TABLE_DOWN}",
            ],
        )
        netns.ip_batch(
            self.ns("lb"),
            [
                f"addr add {topology.LB_PUBLIC}/24 dev {topology.LB_PUBLIC_DEV}",
                f"addr add {topology.LB_INTERNAL}/24 dev {topology.LB_INTERNAL_DEV}",
                f"link set {topology.LB_PUBLIC_DEV} up",
                f"link set {topology.LB_INTERNAL_DEV} up",
                f"route add {topology.CLIENT_NET} via {topology.IMPAIR_LB_SIDE}",
            ],
        )
        for host in topology.INTERNAL_HOSTS:
            netns.ip_batch(
                self.ns(host.name),
                [
                    f"addr add {host.address}/24 dev {topology.HOST_DEV}",
                    f"link set {topology.HOST_DEV} up",
                    f"route add default via {topology.LB_INTERNAL}",
                ],
            )
        for host, devices in (
            (
                "impair",
                (
                    topology.IMPAIR_CLIENT_DEV,
                    topology.IMPAIR_LB_DEV,
                    topology.TUN_UP,
                    topology.TUN_DOWN,
                ),
            ),
            ("lb", (topology.LB_PUBLIC_DEV, topology.LB_INTERNAL_DEV)),
        ):
            self._sysctl(host, {f"net.ipv4.conf.{dev}.rp_filter": 0 for dev in devices})

    def _sysctl(self, host: str, values: Mapping[str, int]) -> None:
        settings = [f"{key}={value}" for key, value in values.items()]
        netns.run(netns.exec_argv(self.ns(host), ["sysctl", "-q", "-w", *settings]))

    # ----- the impairment hop -----

    @property
    def impair_config_path(self) -> Path:
        return self.state_dir / "impair.json"

    @property
    def impair_stats_path(self) -> Path:
        return self.state_dir / "impair-stats.json"

    def start_impair(self) -> Service:
        """Start the userspace line in vw-impair; until it runs, client UDP goes nowhere."""
        self.impair_config_path.write_text(self.impairment.to_json())
        self.impair_stats_path.unlink(missing_ok=True)
        stats = self.impair_stats_path
        service = self.start_python(
            "impair",
            "impair",
            [
                "-m",
                "tests.cluster.testbed.impair",
                "--config",
                str(self.impair_config_path),
                "--stats",
                str(stats),
                "--up",
                topology.TUN_UP,
                "--down",
                topology.TUN_DOWN,
            ],
            ready=stats.exists,
        )
        self.impair_service = service
        return service

    def set_impairment(self, impairment: Impairment) -> None:
        """Change delay, jitter or loss on the running hop (takes effect within a millisecond)."""
        self.impairment = impairment
        tmp = self.impair_config_path.with_suffix(".tmp")
        tmp.write_text(impairment.to_json())
        os.replace(tmp, self.impair_config_path)
        if self.impair_service is not None and self.impair_service.alive():
            self.impair_service.process.send_signal(signal.SIGHUP)
            return
        # A bed brought up by another process (the CLI): the hop writes its pid in its stats.
        try:
            pid = int(self.impair_stats()["pid"])
        except (OSError, KeyError, ValueError) as exc:
            raise netns.BedError(f"the impairment hop is not running: {exc}") from None
        if pid not in netns.namespace_pids(self.ns("impair")):
            raise netns.BedError("the impairment hop is not running")
        os.kill(pid, signal.SIGHUP)

    def impair_stats(self) -> dict:
        """Packets passed and dropped per direction (refreshed by the hop about once a second)."""
        return json.loads(self.impair_stats_path.read_text())

    # ----- the load balancer, by host name -----

    def remove_relay(self, host: str, *, flush: bool = True) -> None:
        """Take relay ``host`` out of the load balancer; its flows move to the other relays
        (with ``flush``, at once; see :meth:`LoadBalancer.set_live`)."""
        self.lb.remove(topology.address(host), flush=flush)

    def restore_relays(self) -> None:
        """Every relay back in the load balancer."""
        self.lb.restore()

    # ----- processes and sockets inside hosts -----

    def popen(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        **kwargs: object,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host`` in a new session; the caller owns the process.

        The environment is this process's minus every ``VOICEWIRE_*`` variable (a developer's
        own settings must not leak into the bed), plus ``env``.
        """
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEWIRE_")}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        full_env.update(env or {})
        kwargs.setdefault("cwd", str(REPO))
        return subprocess.Popen(  # type: ignore[call-overload]
            netns.exec_argv(self.ns(host), argv),
            env=full_env,
            start_new_session=True,
            **kwargs,
        )

    def run(self, host: str, argv: Sequence[str], *, check: bool = True) -> str:
        """Run a short command inside ``host`` and return its stdout."""
        return netns.run(netns.exec_argv(self.ns(host), argv), check=check)

    def start_service(
        self,
        host: str,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready: Callable[[], bool] | None = None,
        timeout: float = 15.0,
    ) -> Service:
        """Start a long-running process in ``host``, its output in the bed's log directory;
        wait until ``ready()`` is true (if given). The bed stops it on ``down()``."""
        log_path = self.state_dir / "logs" / f"{host}-{name}.log"
        with open(log_path, "ab") as log:
            process = self.popen(
                host, argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        service = Service(name, host, process, log_path)
        self.services.append(service)
        if ready is not None:
            self._wait_ready(service, ready, timeout)
        return service

    def start_python(self, host: str, name: str, args: Sequence[str], **kwargs: object) -> Service:
        """Start this venv's interpreter in ``host`` (``args`` after ``python``)."""
        return self.start_service(host, name, [sys.executable, *args], **kwargs)  # type: ignore[arg-type]

    def start_echo_relay(self, host: str) -> Service:
        """A stand-in relay in ``host``: a UDP echo on the relay port that names itself."""
        return self.start_python(
            host,
            "udp-echo",
            ["-m", "tests.cluster.testbed.udp_echo", "--name", host]
            + ["--port", str(topology.RELAY_PORT)],
            ready=lambda: self.udp_answers(host, topology.RELAY_PORT),
        )

    def start_voicewire(
        self, host: str, name: str, args: Sequence[str], **kwargs: object
    ) -> Service:
        """Start ``voicewire <args>`` in ``host``: the relay now, transceivers and gateways in
        phase 2 (``start_voicewire("tx1", "transceiver", ["transceiver", ...])``)."""
        return self.start_python(host, name, ["-m", "voicewire", *args], **kwargs)

    def start_relay(
        self,
        host: str,
        *,
        workers: int = 1,
        secrets: str = SECRETS,
        extra: Sequence[str] = (),
    ) -> Service:
        """``voicewire relay`` as deployed: public port 3478 behind the VIP, internal socket on
        its bed address, transceivers allowed from the internal network, ops on port 9100."""
        address = topology.address(host)
        flags = [
            "--listen",
            f"0.0.0.0:{topology.RELAY_PORT}",
            "--internal",
            f"{address}:{topology.RELAY_INTERNAL_PORT}",
            "--allow-transceivers",
            topology.INTERNAL_NET,
            "--metrics",
            f"0.0.0.0:{topology.OPS_PORT}",
            "--workers",
            str(workers),
            *extra,
        ]
        return self.start_voicewire(
            host,
            "relay",
            ["relay", *flags],
            env={"VOICEWIRE_ROUTING_SECRETS": secrets},
            ready=lambda: (
                self.http_status(host, f"http://127.0.0.1:{topology.OPS_PORT}/readyz") == 200
            ),
        )

    def start_redis(self, host: str = "redis") -> Service:
        """redis-server on the host's bed address, no persistence (phase 2's registry)."""
        if shutil.which("redis-server") is None:
            raise netns.BedError("redis-server is not installed (Debian package redis-server)")
        address = topology.address(host)
        argv = [
            "redis-server",
            "--bind",
            address,
            "--port",
            str(topology.REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        return self.start_service(
            host,
            "redis",
            argv,
            ready=lambda: self.tcp_open(host, (address, topology.REDIS_PORT)),
        )

    def _wait_ready(self, service: Service, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not service.alive():
                raise netns.BedError(
                    f"{service.name} in {service.host} exited with {service.process.returncode} "
                    f"before it was ready; its log ends:\n{service.log()}"
                )
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise netns.BedError(
            f"{service.name} in {service.host} was not ready after {timeout} s; its log ends:\n"
            f"{service.log()}"
        )

    def call(self, host: str, fn: Callable[..., object], *args: object) -> object:
        """Run ``fn(*args)`` with the network of ``host`` (on a thread that joins it)."""
        return netns.in_netns(self.ns(host), fn, *args)

    def udp_answers(self, host: str, port: int) -> bool:
        """True once something inside ``host`` answers a datagram sent to its own ``port``."""

        def probe() -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.2)
                sock.sendto(b"probe", ("127.0.0.1", port))
                try:
                    sock.recvfrom(2048)
                    return True
                except OSError:
                    return False

        return bool(self.call(host, probe))

    def udp_socket(
        self, host: str, bind: tuple[str, int] = ("0.0.0.0", 0), timeout: float = 2.0
    ) -> socket.socket:
        """A UDP socket living in ``host``'s network, usable from any thread of this process."""

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(bind)
            sock.settimeout(timeout)
            return sock

        return netns.in_netns(self.ns(host), make)

    def http_get(self, host: str, url: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """GET ``url`` from inside ``host`` (never through a proxy from the environment)."""

        def get() -> tuple[int, bytes]:
            try:
                with _NO_PROXY.open(url, timeout=timeout) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        return netns.in_netns(self.ns(host), get)

    def http_status(self, host: str, url: str) -> int:
        try:
            return self.http_get(host, url, timeout=1.0)[0]
        except (urllib.error.URLError, OSError):
            return 0

    def tcp_open(self, host: str, address: tuple[str, int]) -> bool:
        """True when a TCP connect from ``host`` to ``address`` succeeds."""

        def connect() -> bool:
            try:
                socket.create_connection(address, timeout=1.0).close()
                return True
            except OSError:
                return False

        return netns.in_netns(self.ns(host), connect)

    # ----- reporting -----

    def status(self) -> str:
        """What exists right now: namespaces, their processes, the LB table, the hop's counters."""
        names = sorted(self.namespaces())
        if not names:
            return f"test bed {self.prefix}*: down (no namespaces)\n"
        lines = [f"test bed {self.prefix}*: {len(names)} namespaces"]
        for name in names:
            host = name[len(self.prefix) :]
            where = topology.ADDRESSES.get(host, "")
            pids = netns.namespace_pids(name)
            lines.append(f"  {name:<14} {where:<12} processes: {len(pids)}")
            for pid in pids:
                lines.append(f"      {pid} {_cmdline(pid)}")
        lb = self.ns("lb")
        if lb in names:
            lines.append("load balancer (nft, in " + lb + "):")
            lines += ["  " + line for line in self.lb.listing().splitlines()]
        if self.impair_stats_path.exists():
            lines.append(f"impairment hop counters: {self.impair_stats_path.read_text()}")
        if self.impair_config_path.exists():
            config = json.loads(self.impair_config_path.read_text())
            lines.append(f"impairment config: {json.dumps(config)}")
        return "\n".join(lines) + "\n"


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]
