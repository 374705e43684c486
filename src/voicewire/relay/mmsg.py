"""Batched UDP system calls for the relay worker: recvmmsg(2) and sendmmsg(2) through ctypes.

Why: a ``recvfrom`` and a ``sendto`` per datagram add a system call's entry and exit, file
lookup, address copy and socket locking to every datagram (about 2 µs on the benchmark VM, which
a C forwarder pays once per batch), and Python's standard library has no batched calls. One
``recvmmsg`` reads up to ``count`` datagrams and one ``sendmmsg`` sends the ones forwarded.

A ``Batch`` is laid out once and reused for every call:

- ``buffer``: ``count`` slots of ``headroom + capacity`` bytes. The kernel writes datagram i at
  ``offsets[i]``, ``headroom`` bytes into slot i, so the relay can write its header in front of
  it in place and send both without a copy.
- receive side: an mmsghdr array whose entry i points at slot i (one iovec) and at socket
  address storage i. Only what the kernel writes back is read, with ``struct`` over a memoryview
  of the array (a ctypes attribute read costs far more than the datagram's routing).
- send side: a second mmsghdr array whose entry k points at record k, an iovec followed by the
  destination address, so that queueing a datagram is one ``struct.pack_into``.

The layouts are glibc's on Linux: ``ctypes.Structure`` computes their padding, and the ``struct``
formats are derived from its field offsets.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from collections.abc import Iterator

MSG_TRUNC = 0x20  # linux/socket.h: in msg_flags, the datagram was longer than its buffer
_MSG_DONTWAIT = 0x40
SOCKADDR_SIZE = {socket.AF_INET: 16, socket.AF_INET6: 28}  # sizeof sockaddr_in, sockaddr_in6


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


class _Outgoing(ctypes.Structure):
    """What a send entry points at: its one iovec, then its destination address."""

    _fields_ = [("iov", _IoVec), ("name", ctypes.c_char * max(SOCKADDR_SIZE.values()))]


def _received_format() -> struct.Struct:
    """(msg_flags, msg_len) of one mmsghdr, skipping everything else."""
    flags = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_flags.offset
    length = _MMsgHdr.msg_len.offset
    assert flags + 4 <= length
    tail = ctypes.sizeof(_MMsgHdr) - length - 4
    return struct.Struct(f"={flags}xi{length - flags - 4}xI{tail}x")


_RECEIVED = _received_format()
_OUTGOING = struct.Struct(f"@PN{_Outgoing.name.size}s")  # iov_base, iov_len, name
assert _Outgoing.name.offset == struct.calcsize("@PN")  # the ctypes and struct layouts agree
_RECORD_SIZE = ctypes.sizeof(_Outgoing)

# int recvmmsg(int fd, struct mmsghdr *, unsigned int vlen, int flags, struct timespec *);
# int sendmmsg(int fd, struct mmsghdr *, unsigned int vlen, int flags).
# No argtypes: converting through them cost about 0.4 µs a call on the benchmark VM, twice per
# wake-up. Pointers go as prebuilt c_void_p, the small ints as C int (ctypes' default).
_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_sendmmsg = _libc.sendmmsg


class Batch:
    """Slots for ``count`` datagrams, read from a ``recv_family`` socket with one recvmmsg and
    sent on a ``send_family`` socket with one sendmmsg."""

    def __init__(
        self, count: int, capacity: int, headroom: int, recv_family: int, send_family: int
    ) -> None:
        slot = headroom + capacity
        self.count = count
        self.buffer = bytearray(count * slot)
        self.view = memoryview(self.buffer)
        self.offsets = [i * slot + headroom for i in range(count)]
        self._first = [self.offsets[:n] for n in range(count + 1)]
        # from_buffer pins the bytearray: it cannot be resized (moved) while this exists.
        self._pinned = (ctypes.c_char * len(self.buffer)).from_buffer(self.buffer)
        self._base = ctypes.addressof(self._pinned)

        # msg_namelen is value-result: the kernel writes back the length of the sender's address,
        # which for a socket of one family is always the size set here (an IPv6 socket reports
        # IPv4 senders as IPv4-mapped sockaddr_in6), so it is set once and never read.
        name_size = SOCKADDR_SIZE[recv_family]
        self._name = struct.Struct(f"{name_size}s")
        self._names = (ctypes.c_char * (count * name_size))()
        self._iovecs = (_IoVec * count)()
        self._incoming = (_MMsgHdr * count)()
        for i, entry in enumerate(self._incoming):
            self._iovecs[i].iov_base = self._base + self.offsets[i]
            self._iovecs[i].iov_len = capacity
            entry.msg_hdr.msg_name = ctypes.addressof(self._names) + i * name_size
            entry.msg_hdr.msg_namelen = name_size
            entry.msg_hdr.msg_iov = ctypes.addressof(self._iovecs[i])
            entry.msg_hdr.msg_iovlen = 1
        self._incoming_at = ctypes.c_void_p(ctypes.addressof(self._incoming))
        self._incoming_view = memoryview(self._incoming).cast("B")
        self._names_view = memoryview(self._names).cast("B")

        self._records = (_Outgoing * count)()
        self._outgoing = (_MMsgHdr * count)()
        for k, entry in enumerate(self._outgoing):
            record = ctypes.addressof(self._records[k])
            entry.msg_hdr.msg_name = record + _Outgoing.name.offset
            entry.msg_hdr.msg_namelen = SOCKADDR_SIZE[send_family]
            entry.msg_hdr.msg_iov = record + _Outgoing.iov.offset
            entry.msg_hdr.msg_iovlen = 1
        self._records_view = memoryview(self._records).cast("B")
        self._outgoing_at = [ctypes.c_void_p(ctypes.addressof(e)) for e in self._outgoing]

    def receive(self, fd: int) -> int:
        """Read up to ``count`` datagrams without blocking; return how many (0: none queued).

        recvmmsg returns what it read before the queue ran empty; an error after the first
        datagram is kept by the kernel for the next call. Other errors raise OSError.
        """
        received = _recvmmsg(fd, self._incoming_at, self.count, _MSG_DONTWAIT, None)
        if received >= 0:
            return received
        code = ctypes.get_errno()
        if code in (errno.EAGAIN, errno.EINTR):
            return 0
        raise OSError(code, errno.errorcode.get(code, "recvmmsg failed"))

    def received(self, n: int) -> Iterator[tuple[int, tuple[int, int], tuple[bytes]]]:
        """For each of the first ``n`` datagrams: its offset in ``buffer``, (msg_flags, length),
        and (sender's socket address,). A datagram with MSG_TRUNC in its flags was cut at
        ``capacity`` bytes.

        zip stops after the n offsets, before reading an (n+1)th entry from the unpackers, which
        run over every slot: no slicing, and no ``strict=`` keyword, which slows the call.
        """
        return zip(  # noqa: B905
            self._first[n],
            _RECEIVED.iter_unpack(self._incoming_view),
            self._name.iter_unpack(self._names_view),
        )

    def queue(self, k: int, start: int, length: int, destination: bytes) -> None:
        """Make send entry k the ``length`` bytes at ``buffer[start:]``, to ``destination`` (a
        socket address of the send family)."""
        _OUTGOING.pack_into(
            self._records_view, k * _RECORD_SIZE, self._base + start, length, destination
        )

    def send(self, fd: int, count: int) -> list[int]:
        """Send entries 0..count-1; return the indices the kernel refused.

        sendmmsg returns how many it sent, stopping at the first it could not send (that error
        is lost), or -1 when the very first failed. So a failure skips exactly one entry and the
        rest are retried, except EAGAIN/ENOBUFS: the socket's buffer is full and the rest of the
        batch would meet it too. Every call makes progress, so this never spins.
        """
        refused: list[int] = []
        sent = 0
        while sent < count:
            done = _sendmmsg(fd, self._outgoing_at[sent], count - sent, 0)
            if done > 0:
                sent += done
                continue
            if ctypes.get_errno() in (errno.EAGAIN, errno.ENOBUFS):
                refused.extend(range(sent, count))
                break
            refused.append(sent)
            sent += 1
        return refused
