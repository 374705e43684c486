"""``voicewire relay`` as a running service: real processes, real UDP sockets on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.relay.relay_process import SECRETS, RelayProcess, nothing_arrives, udp
from tests.relay.stun_requests import binding_request
from voicewire.wire import relay_header
from voicewire.wire.routing_token import RoutingKeys

KEYS = RoutingKeys.parse(SECRETS)
WRONG_KEYS = RoutingKeys.parse("1:" + bytes(range(1, 33)).hex())
DTLS = b"\x16\xfe\xfd" + bytes(60)  # RFC 7983: first byte 20-63
RTP = b"\x80\x6f" + bytes(170)  # first byte 128-191


def forge_mac(ufrag: str) -> str:
    """Change one character inside the MAC (not a padding bit: that would be non-canonical)."""
    return ufrag[:-3] + ("B" if ufrag[-3] != "B" else "C") + ufrag[-2:]


def receive_from_relay(transceiver: socket.socket) -> tuple[tuple, bytes, tuple]:
    """One encapsulated datagram: (client named in the header, payload, relay worker address)."""
    data, relay_address = transceiver.recvfrom(65535)
    _, host, port, offset = relay_header.decode(data)
    return (host, port), data[offset:], relay_address


def test_stun_with_valid_token_opens_a_flow_both_ways(start_relay, transceiver):
    relay = start_relay()
    client = udp()
    stun = binding_request(KEYS.issue(transceiver.getsockname()))
    client.sendto(stun, relay.public)
    named, payload, worker = receive_from_relay(transceiver)
    assert named == client.getsockname()  # the client's true address
    assert payload == stun  # untouched
    assert worker == relay.internal[0]

    for datagram in (DTLS, RTP):
        client.sendto(datagram, relay.public)
        assert receive_from_relay(transceiver)[:2] == (client.getsockname(), datagram)

    transceiver.sendto(relay_header.encode(*client.getsockname()) + DTLS, worker)
    reply, source = client.recvfrom(65535)
    assert (reply, source) == (DTLS, relay.public)  # from the public port, header stripped

    relay.wait_metric("voicewire_relay_packets_total", 3, direction="upstream")
    relay.wait_metric("voicewire_relay_packets_total", 1, direction="downstream")
    relay.wait_metric("voicewire_relay_bytes_total", len(DTLS), direction="downstream")
    relay.wait_metric("voicewire_relay_flows_learned_total", 1, source="stun")
    relay.wait_metric("voicewire_relay_flows", 1)


@pytest.mark.parametrize(
    "ufrag",
    [
        WRONG_KEYS.issue(("127.0.0.1", 9)),
        KEYS.issue(("127.0.0.1", 9))[:30],
        forge_mac(KEYS.issue(("127.0.0.1", 9))),
        "complete-garbage-that-is-no-token",
    ],
    ids=["wrong-key", "truncated", "forged-mac", "garbage"],
)
def test_untrusted_tokens_forward_nothing(start_relay, transceiver, ufrag):
    relay = start_relay()
    client = udp()
    client.sendto(binding_request(ufrag), relay.public)
    client.sendto(RTP, relay.public)
    assert nothing_arrives(transceiver)
    relay.wait_metric("voicewire_relay_drops_total", 1, reason="bad_token")
    relay.wait_metric("voicewire_relay_drops_total", 1, reason="unknown_flow")
    assert relay.metric("voicewire_relay_flows") == 0
    assert nothing_arrives(client, 0.05)  # the relay never answers a client itself


def test_token_naming_a_transceiver_outside_the_allow_list_is_refused(start_relay):
    relay = start_relay("--allow-transceivers", "127.0.0.1/32")
    elsewhere = udp("127.0.0.2")
    client = udp()
    client.sendto(binding_request(KEYS.issue(elsewhere.getsockname())), relay.public)
    assert nothing_arrives(elsewhere)
    relay.wait_metric("voicewire_relay_drops_total", 1, reason="not_allowed")


def test_non_stun_and_malformed_from_unknown_clients_are_counted(start_relay, transceiver):
    relay = start_relay()
    client = udp()
    for datagram in (DTLS, RTP, b"", b"\x00\x01\x00\x00", b"\x01\x01" + bytes(18)):
        client.sendto(datagram, relay.public)
    assert nothing_arrives(transceiver)
    relay.wait_metric("voicewire_relay_drops_total", 2, reason="unknown_flow")
    relay.wait_metric("voicewire_relay_drops_total", 2, reason="not_stun")
    relay.wait_metric("voicewire_relay_drops_total", 1, reason="malformed")


def test_encapsulated_datagrams_from_a_stranger_are_dropped(start_relay):
    relay = start_relay("--allow-transceivers", "127.0.0.1/32")
    client = udp()
    stranger = udp("127.0.0.3")
    stranger.sendto(relay_header.encode(*client.getsockname()) + DTLS, relay.internal[0])
    assert nothing_arrives(client)
    relay.wait_metric("voicewire_relay_drops_total", 1, reason="not_allowed")
    assert relay.metric("voicewire_relay_flows") == 0


def test_restarted_relay_relearns_the_flow_from_the_first_downstream_datagram(
    start_relay, transceiver
):
    relay = start_relay("--listen", "127.0.0.1:0", "--internal", "127.0.0.1:0")
    client = udp()
    client.sendto(binding_request(KEYS.issue(transceiver.getsockname())), relay.public)
    _, _, worker = receive_from_relay(transceiver)
    public, internal = relay.public, relay.internal[0]

    relay.kill()  # SIGKILL: no goodbye; its worker must die with it and free the ports
    restarted = start_relay(
        "--listen", "{}:{}".format(*public), "--internal", "{}:{}".format(*internal)
    )
    client.sendto(RTP, restarted.public)  # unknown to the new relay: dropped
    assert nothing_arrives(transceiver)

    transceiver.sendto(relay_header.encode(*client.getsockname()) + DTLS, worker)
    assert client.recvfrom(65535)[0] == DTLS
    client.sendto(RTP, restarted.public)  # no new STUN needed
    assert receive_from_relay(transceiver)[:2] == (client.getsockname(), RTP)
    restarted.wait_metric("voicewire_relay_flows_learned_total", 1, source="downstream")
    assert restarted.metric("voicewire_relay_flows_learned_total", source="stun") == 0


def test_idle_flows_expire(start_relay, transceiver):
    relay = start_relay("--flow-idle-timeout", "0.8")
    client = udp()
    client.sendto(binding_request(KEYS.issue(transceiver.getsockname())), relay.public)
    receive_from_relay(transceiver)
    for _ in range(5):  # traffic keeps it alive past the timeout
        time.sleep(0.3)
        client.sendto(RTP, relay.public)
        receive_from_relay(transceiver)
    time.sleep(1.3)  # idle for longer than timeout + one rotation (0.8 / 4)
    client.sendto(RTP, relay.public)
    assert nothing_arrives(transceiver)
    relay.wait_metric("voicewire_relay_flows_expired_total", 1)
    relay.wait_metric("voicewire_relay_flows", 0)


def test_ipv6_clients(start_relay, transceiver):
    relay = start_relay("--listen", "[::1]:0")
    client = udp("::1")
    client.sendto(binding_request(KEYS.issue(transceiver.getsockname())), relay.public)
    named, _, worker = receive_from_relay(transceiver)
    assert named == client.getsockname()[:2]
    header = relay_header.encode(*named)
    assert len(header) == 20
    transceiver.sendto(header + DTLS, worker)
    assert client.recvfrom(65535)[0] == DTLS


def test_dual_stack_listener_serves_ipv4_clients_as_ipv4(start_relay, transceiver):
    relay = start_relay("--listen", "[::]:0")
    client = udp()
    client.sendto(
        binding_request(KEYS.issue(transceiver.getsockname())), ("127.0.0.1", relay.public[1])
    )
    named, _, worker = receive_from_relay(transceiver)
    assert named == client.getsockname()
    transceiver.sendto(relay_header.encode(*named) + DTLS, worker)
    assert client.recvfrom(65535) == (DTLS, ("127.0.0.1", relay.public[1]))


def test_two_workers_deliver_every_datagram_of_200_flows_in_order(start_relay, transceiver):
    """Flows spread over both workers, and each flow's datagrams arrive complete and in order.

    The client sends in batches of two datagrams per flow and waits for each batch, so socket
    buffers never overflow however slow a loaded machine makes the workers: a loss here is the
    relay's, not the test's.
    """
    relay = start_relay("--workers", "2")
    assert len(relay.internal) == 2
    clients = [udp(buffer=65536) for _ in range(200)]
    stun = binding_request(KEYS.issue(transceiver.getsockname()))
    transceiver.settimeout(5)
    workers = set()
    for client in clients:
        client.sendto(stun, relay.public)
    for _ in clients:
        workers.add(receive_from_relay(transceiver)[2])
    seen: dict[tuple, list[int]] = {client.getsockname(): [] for client in clients}
    rounds, per_batch = 30, 2
    for first in range(0, rounds, per_batch):
        for sequence in range(first, first + per_batch):
            for client in clients:
                client.sendto(b"\x80" + sequence.to_bytes(2, "big") + bytes(157), relay.public)
        for _ in range(len(clients) * per_batch):
            named, payload, worker = receive_from_relay(transceiver)
            workers.add(worker)
            seen[named].append(int.from_bytes(payload[1:3], "big"))
    assert all(sequences == list(range(rounds)) for sequences in seen.values())
    assert workers == set(relay.internal)  # the kernel spread the flows over both workers
    relay.wait_metric("voicewire_relay_workers", 2)
    relay.wait_metric("voicewire_relay_flows", 200)


def test_health_and_readiness(start_relay):
    import urllib.request

    relay = start_relay()
    assert urllib.request.urlopen(relay.metrics_url + "/healthz").read() == b"ok\n"
    assert urllib.request.urlopen(relay.metrics_url + "/readyz").status == 200


def test_sigterm_stops_cleanly(start_relay):
    relay = start_relay("--workers", "2")
    started = time.monotonic()
    assert relay.stop() == 0
    assert time.monotonic() - started < 3


def run_relay(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "voicewire", "relay", *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize(
    "args, env, status, message",
    [
        (["--workers", "zero"], {"VOICEWIRE_ROUTING_SECRETS": SECRETS}, 2, "--workers"),
        (["--listen", "nonsense"], {"VOICEWIRE_ROUTING_SECRETS": SECRETS}, 2, "HOST:PORT"),
        (
            ["--allow-transceivers", "10.0.0.0/33"],
            {"VOICEWIRE_ROUTING_SECRETS": SECRETS},
            2,
            "not a network",
        ),
        ([], {}, 2, "no routing secrets"),
        (["--redis", "http://x"], {"VOICEWIRE_ROUTING_SECRETS": SECRETS}, 2, "is not a Redis URL"),
        ([], {"VOICEWIRE_ROUTING_SECRETS": "1:abcd"}, 2, "at least 16 bytes"),
        (["--secrets-file", "/nonexistent"], {}, 2, "cannot read secrets file"),
        (
            [],
            {"VOICEWIRE_ROUTING_SECRETS": SECRETS, "VOICEWIRE_RELAY_WORKERS": "-1"},
            2,
            "--workers",
        ),
    ],
)
def test_bad_configuration_is_one_clear_line(args, env, status, message):
    result = run_relay("--listen", "127.0.0.1:0", *args, env=env)
    assert result.returncode == status
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stderr.startswith("voicewire relay: error:")


def test_busy_port_is_one_clear_line(start_relay):
    relay = start_relay()
    result = run_relay(
        "--listen", "{}:{}".format(*relay.public), env={"VOICEWIRE_ROUTING_SECRETS": SECRETS}
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith("Address already in use")
    assert result.stderr.count("\n") == 1


def test_secrets_file(tmp_path, transceiver):
    path = tmp_path / "secrets"
    path.write_text("# the signing key first\n" + SECRETS + "\n")
    relay = RelayProcess(
        "--listen",
        "127.0.0.1:0",
        "--internal",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--secrets-file",
        str(path),
        secrets=None,
    )
    try:
        client = udp()
        client.sendto(binding_request(KEYS.issue(transceiver.getsockname())), relay.public)
        assert receive_from_relay(transceiver)[0] == client.getsockname()
    finally:
        relay.stop()
