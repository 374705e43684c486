"""recvmmsg/sendmmsg batches against the real kernel, on loopback sockets."""

from __future__ import annotations

import ctypes
import errno
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.relay.relay_process import udp
from voicewire.relay import mmsg
from voicewire.relay.mmsg import MSG_TRUNC, Batch
from voicewire.relay.router import to_sockaddr

V4, V6 = socket.AF_INET, socket.AF_INET6


def nonblocking(host: str) -> socket.socket:
    """A socket as the relay binds it: an IPv6 one serves IPv4 peers too."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def received(batch: Batch, sock: socket.socket) -> list[tuple[bytes, int, bytes]]:
    """(payload, flags, sender) for each datagram one recvmmsg returned."""
    n = batch.receive(sock.fileno())
    return [
        (bytes(batch.view[offset : offset + size]), flags, sender)
        for offset, (flags, size), (sender,) in batch.received(n)
    ]


@pytest.mark.parametrize(
    "listen, sender_host, v6",
    [("127.0.0.1", "127.0.0.1", False), ("::1", "::1", True), ("::", "127.0.0.1", True)],
    ids=["ipv4", "ipv6", "dual-stack"],
)
def test_one_call_reads_every_queued_datagram_with_its_sender(listen, sender_host, v6):
    sock = nonblocking(listen)
    senders = [udp(sender_host), udp(sender_host)]
    port = sock.getsockname()[1]
    for index in range(5):
        senders[index % 2].sendto(bytes([index]) * (index * 100), (sender_host, port))
    batch = Batch(8, 2048, 20, sock.family, V4)
    expected = [
        (bytes([index]) * (index * 100), 0, to_sockaddr(*senders[index % 2].getsockname()[:2], v6))
        for index in range(5)
    ]
    assert received(batch, sock) == expected  # the kernel's sockaddr bytes, IPv4-mapped on "::"
    assert batch.receive(sock.fileno()) == 0  # nothing left: no error, no blocking


def test_a_datagram_longer_than_a_slot_is_flagged_truncated():
    sock, sender = nonblocking("127.0.0.1"), udp()
    sender.sendto(bytes(100), sock.getsockname())
    sender.sendto(bytes(101), sock.getsockname())
    [fits, cut] = received(Batch(4, 100, 8, V4, V4), sock)
    assert fits[:2] == (bytes(100), 0)
    assert cut[1] & MSG_TRUNC and len(cut[0]) == 100


def test_at_most_count_datagrams_per_call_and_the_rest_on_the_next():
    sock, sender = nonblocking("127.0.0.1"), udp()
    for index in range(7):
        sender.sendto(bytes([index]), sock.getsockname())
    batch = Batch(4, 64, 0, V4, V4)
    assert [payload for payload, _, _ in received(batch, sock)] == [bytes([i]) for i in range(4)]
    assert [payload for payload, _, _ in received(batch, sock)] == [bytes([i]) for i in range(4, 7)]


def test_receive_on_a_bad_descriptor_raises():
    with pytest.raises(OSError) as failure:
        Batch(4, 64, 0, V4, V4).receive(-1)
    assert failure.value.errno == errno.EBADF


@pytest.mark.parametrize("family, host", [(V4, "127.0.0.1"), (V6, "::1")])
def test_queued_slices_of_the_buffer_go_to_their_destinations_in_one_call(family, host):
    out, first, second = nonblocking(host), udp(host), udp(host)
    batch = Batch(4, 64, 8, family, family)
    to = [to_sockaddr(*sock.getsockname()[:2], family == V6) for sock in (first, second)]
    for k, offset in enumerate(batch.offsets[:3]):
        batch.buffer[offset - 8 : offset + 10] = b"header" + bytes([k]) * 12
        batch.queue(k, offset - 8, 18, to[k % 2])
    assert batch.send(out.fileno(), 3) == []
    assert first.recv(100) == b"header" + bytes([0]) * 12
    assert first.recv(100) == b"header" + bytes([2]) * 12
    assert second.recv(100) == b"header" + bytes([1]) * 12


def test_a_refused_datagram_is_reported_and_the_rest_still_sent():
    out, sink = nonblocking("127.0.0.1"), udp()
    batch = Batch(4, 64, 0, V4, V4)
    to_sink = to_sockaddr(*sink.getsockname(), v6=False)
    port_zero = to_sockaddr("127.0.0.1", 0, v6=False)  # Linux refuses UDP to port 0: EINVAL
    for k, destination in enumerate([to_sink, port_zero, to_sink]):
        batch.buffer[batch.offsets[k]] = k
        batch.queue(k, batch.offsets[k], 1, destination)
    assert batch.send(out.fileno(), 3) == [1]
    assert [sink.recv(10), sink.recv(10)] == [b"\x00", b"\x02"]


class ScriptedSendmmsg:
    """Stands in for libc's sendmmsg: each call returns the next scripted result."""

    def __init__(self, batch: Batch, results: list[int | str]) -> None:
        self.first_entries: list[int] = []
        self._results = results
        self._entries = batch._outgoing_at

    def __call__(self, fd: int, entries: ctypes.c_void_p, count: int, flags: int) -> int:
        self.first_entries.append([entry.value for entry in self._entries].index(entries.value))
        result = self._results.pop(0)
        if isinstance(result, str):
            ctypes.set_errno(getattr(errno, result))
            return -1
        return min(result, count)


@pytest.mark.parametrize(
    "results, refused, calls",
    [
        ([6], [], [0]),
        ([2, 4], [], [0, 2]),  # a partial send: the rest follows from where it stopped
        ([2, "EINVAL", 3], [2], [0, 2, 3]),  # the one that failed is skipped
        (
            ["EPERM", "EPERM", "EPERM", "EPERM", "EPERM", "EPERM"],
            [0, 1, 2, 3, 4, 5],
            [0, 1, 2, 3, 4, 5],
        ),
        ([3, "EAGAIN"], [3, 4, 5], [0, 3]),  # buffer full: the rest of the batch is dropped
        (["ENOBUFS"], [0, 1, 2, 3, 4, 5], [0]),
    ],
)
def test_partial_sends_and_errors_never_spin(monkeypatch, results, refused, calls):
    batch = Batch(8, 64, 0, V4, V4)
    scripted = ScriptedSendmmsg(batch, results)
    monkeypatch.setattr(mmsg, "_sendmmsg", scripted)
    assert batch.send(3, 6) == refused
    assert scripted.first_entries == calls
    assert batch.send(3, 0) == [] and len(scripted.first_entries) == len(calls)  # no call at all


@settings(max_examples=40)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=12))
def test_every_datagram_arrives_whole_or_flagged(sizes):
    sock, sender = nonblocking("127.0.0.1"), udp()
    try:
        for index, size in enumerate(sizes):
            sender.sendto(bytes([index]) * size, sock.getsockname())
        batch = Batch(16, 200, 20, V4, V4)
        got = received(batch, sock)
        assert len(got) == len(sizes)
        for index, (size, (payload, flags, _)) in enumerate(zip(sizes, got, strict=True)):
            assert payload == bytes([index]) * min(size, 200)
            assert bool(flags & MSG_TRUNC) == (size > 200)
    finally:
        sock.close()
        sender.close()
