from __future__ import annotations

import pytest

from tests.cluster.services import Gateway, RedisServer, Service, Transceiver
from tests.relay.conftest import start_relay  # noqa: F401 (a fixture: relays a test starts)
from tests.relay.relay_process import RelayProcess


@pytest.fixture(scope="module")
def relay():
    """One real relay for a module's tests: it keeps no state a test could leave behind."""
    process = RelayProcess(
        "--listen", "127.0.0.1:0", "--internal", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
        "--allow-transceivers", "127.0.0.1/32",
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture
def redis():
    server = RedisServer()
    yield server
    server.stop()


class Cluster:
    """Starts transceivers and gateways on loopback, all at once, and stops them after the test."""

    def __init__(self, relay: RelayProcess, redis: RedisServer) -> None:
        self.relay = relay
        self.redis = redis
        self.services: list[Service] = []

    async def transceivers(self, count: int, *flags: str, redis: bool = True) -> list[Transceiver]:
        relay = "{}:{}".format(*self.relay.public)
        registry = ["--redis", self.redis.url] if redis else []
        started = [
            Transceiver(
                "transceiver",
                "--udp",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--relay-public",
                relay,
                "--agent",
                "echo",  # audio flowing back is how these tests see a call work
                *registry,
                *flags,
            )  # fmt: skip
            for _ in range(count)
        ]
        self.services += started
        return [await service.start() for service in started]

    async def gateways(
        self, count: int, *flags: str, redis: bool = True, env: dict[str, str] | None = None
    ) -> list[Gateway]:
        registry = ["--redis", self.redis.url] if redis else []
        started = [
            Gateway("gateway", "--http", "127.0.0.1:0", *registry, *flags, env=env)
            for _ in range(count)
        ]
        self.services += started
        return [await service.start() for service in started]

    def close(self) -> None:
        for service in self.services:
            service.stop()


@pytest.fixture
def cluster(relay, redis):
    running = Cluster(relay, redis)
    yield running
    running.close()


@pytest.fixture
def clusters(redis):
    """Clusters around relays a test starts itself (``start_relay``), to give them flags or
    restart them: the services only need the relay's public address, which a restart keeps."""
    made: list[Cluster] = []

    def make(relay: RelayProcess) -> Cluster:
        made.append(Cluster(relay, redis))
        return made[-1]

    yield make
    for running in made:
        running.close()
