from __future__ import annotations

import pytest

from tests.relay.relay_process import RelayProcess, udp


@pytest.fixture
def transceiver():
    """A stand-in transceiver: one UDP socket on loopback."""
    sock = udp("127.0.0.1")
    yield sock
    sock.close()


@pytest.fixture
def start_relay():
    started: list[RelayProcess] = []

    def start(*flags: str, **kwargs) -> RelayProcess:
        defaults = {
            "--listen": "127.0.0.1:0",
            "--internal": "127.0.0.1:0",
            "--metrics": "127.0.0.1:0",
            "--allow-transceivers": "127.0.0.1/32",
        }
        given = set(flags[::2])
        extra = [
            item for key, value in defaults.items() if key not in given for item in (key, value)
        ]
        relay = RelayProcess(*flags, *extra, **kwargs)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()
