"""A service that cannot work says why in one line on stderr and exits non-zero, at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.relay.relay_process import SECRETS

RELAY = ["--relay-public", "127.0.0.1:3478"]
LOOPBACK = ["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", *RELAY]

CASES = {
    "no-relay-public": (["transceiver", "--udp", "127.0.0.1:0"], {}, 2, "give --relay-public"),
    "wildcard-udp": (["transceiver", *RELAY], {}, 2, "give --advertise"),
    "no-secrets": (
        ["transceiver", *LOOPBACK],
        {"VOICEWIRE_ROUTING_SECRETS": ""},
        2,
        "no routing secrets",
    ),
    "bad-redis-url": (
        ["transceiver", *LOOPBACK, "--redis", "http://x"],
        {},
        2,
        "is not a Redis URL",
    ),
    "bad-allow-relays": (
        ["transceiver", *LOOPBACK],
        {"VOICEWIRE_ALLOW_RELAYS": "10.0.0.0/33"},
        2,
        "--allow-relays: not a network",
    ),
    "advertise-not-an-ip": (
        ["transceiver", *LOOPBACK, "--advertise", "transceiver.local:7000"],
        {},
        2,
        "is not an IPv4 or IPv6 address",
    ),
    "drain-grace-from-env": (
        ["transceiver", *LOOPBACK],
        {"VOICEWIRE_DRAIN_GRACE": "-1"},
        2,
        "not a positive number",
    ),
    "gateway-nothing-to-ask": (["gateway", "--http", "127.0.0.1:0"], {}, 2, "give --redis"),
    "gateway-bad-transceivers": (
        ["gateway", "--transceivers", "http://10.0.0.1:8081,nonsense"],
        {},
        2,
        "'nonsense' is not an http:// or https:// URL",
    ),
}


@pytest.fixture(scope="module")
def busy_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_bad_configuration_is_one_line_and_a_non_zero_exit(busy_udp):
    cases = {
        **CASES,
        "busy-udp-port": (
            ["transceiver", "--udp", busy_udp, "--http", "127.0.0.1:0", *RELAY],
            {},
            1,
            "cannot bind UDP",
        ),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOICEWIRE_")}
    running = {  # all at once: each is a Python start-up, and they do not interfere
        name: subprocess.Popen(
            [sys.executable, "-m", "voicewire", *argv],
            env={**clean, "VOICEWIRE_ROUTING_SECRETS": SECRETS, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (argv, env, _, _) in cases.items()
    }
    for name, process in running.items():
        argv, _, status, words = cases[name]
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == status, f"{name}: exit {process.returncode}: {stderr}"
        assert stderr.count("\n") == 1, f"{name}: not one line: {stderr!r}"
        assert stderr.startswith(f"voicewire {argv[0]}: error: "), f"{name}: {stderr!r}"
        assert words in stderr, f"{name}: {stderr!r}"
