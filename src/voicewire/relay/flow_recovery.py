"""Flow recovery: a relay worker asks Redis who owns a client it has no flow for, without waiting.

DESIGN §4 step 3. A relay that restarts, or inherits another relay's clients from the load
balancer, gets their SRTP before any STUN check or downstream packet teaches it their flows.
Transceivers write which client addresses they own (``cluster/flows.py``); with ``--redis``, a
non-STUN datagram from a client without a flow starts a lookup, and the answer installs the flow
through ``Router.adopt``: only inside the transceiver allow-list, as for a token's address, so a
poisoned record cannot make the relay a reflector.

Threading: the worker's loop never waits for Redis. It hands the client's socket address to one
lookup thread per worker through a queue; the thread takes everything queued (up to
``MAX_BATCH``) into one MGET on a blocking client with short timeouts, reads each record into an
address, appends the answers to a deque and writes an eventfd that sits in the worker's epoll
set beside its sockets, so answers are read between batches of datagrams like everything else.
The thread holds the GIL only to build one command and read its reply per batch; the loop gives
it up in every epoll wait and batched system call. Importing redis-py takes a tenth of a second,
so the thread does it while the worker already serves: a restarted relay forwards STUN and
learns flows at once, and its first lookups wait for the import (measured: audio back about
0.25 s after the process started, against 0.33 s when the import came first).

While a lookup is pending, the client's first ``HOLD`` datagrams are held (copied) and forwarded
once the answer installs the flow; later ones are dropped, counted as ``recovering``. Holding,
not dropping, because a lookup takes about a millisecond and a voice client sends every 20 ms:
held, a restart costs a live call no packet at all, where dropping would cost each call its
first. ``HOLD`` copies for each of at most ``MAX_PENDING`` clients bound what junk can make the
worker keep (4 MiB at the longest datagrams).

Junk cannot become a Redis flood: a client whose lookup found nothing usable, or failed, is not
asked about again for ``NEGATIVE_TTL`` (its datagrams are dropped as ``unknown_flow``, as without
Redis), and a token bucket allows each worker ``RATE`` lookups a second, ``BURST`` at once, with
at most ``MAX_PENDING`` in flight; past that datagrams are dropped as ``lookup_rate_limited``
(the client's next datagram, 20 ms later, asks again). A restarted worker with a thousand live
calls recovers them all within the burst: those past ``MAX_PENDING`` on their next datagram.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from voicewire.cluster.flow_keys import flow_key, parse_address
from voicewire.cluster.outage import OutageLog
from voicewire.relay.counters import Drop
from voicewire.relay.router import Route, Router, SockAddr, header_of
from voicewire.wire import relay_header

log = logging.getLogger("voicewire.relay.worker")

HOLD = 4  # datagrams kept per client while its lookup is pending
MAX_PENDING = 512  # lookups in flight per worker
RATE = 2000.0  # lookups a second per worker, sustained …
BURST = 1000  # … and at once
NEGATIVE_TTL = 1.0  # seconds a client whose lookup found nothing is not asked about again
MAX_BATCH = 256  # keys per MGET


class NoOwner(enum.Enum):
    """Why a lookup named no transceiver."""

    MISSING = "miss"  # no record
    UNREADABLE = "unreadable"  # a record that is no address: refused, as a forbidden one is
    FAILED = "error"  # Redis did not answer


# What the lookup thread answers for one client: the owner its record names, or why none.
Answer = tuple[SockAddr, tuple[str, int] | NoOwner]


class FlowRecovery:
    """The worker's side: which clients to ask about, what to hold meanwhile, and the answers."""

    def __init__(
        self, router: Router, lookups: RedisLookups, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._router = router
        self._lookups = lookups
        self._clock = clock
        self.fd = lookups.fd
        """Readable when answers have arrived: then call ``answered``."""
        self._pending: dict[SockAddr, list[bytes]] = {}  # client → the datagrams held for it
        # Clients recently asked about in vain → until when they are not asked about again:
        # two generations, the older dropped whole every NEGATIVE_TTL (never a scan).
        self._missed: dict[SockAddr, float] = {}
        self._missed_before: dict[SockAddr, float] = {}
        self._next_generation = 0.0
        self._tokens = float(BURST)
        self._filled_at = clock()

    def unknown(self, datagram: bytes | memoryview, client: SockAddr) -> None:
        """A non-STUN datagram from a client without a flow: hold it and ask, or drop it."""
        counters = self._router.counters
        held = self._pending.get(client)
        if held is not None:
            if len(held) < HOLD:
                held.append(bytes(datagram))
            else:
                counters.drops[Drop.RECOVERING] += 1
            return
        now = self._clock()
        if self._recently_missed(client, now):
            counters.drops[Drop.UNKNOWN_FLOW] += 1
        elif len(self._pending) >= MAX_PENDING or not self._spend_token(now):
            counters.drops[Drop.LOOKUP_RATE_LIMITED] += 1
        else:
            self._pending[client] = [bytes(datagram)]
            counters.lookups += 1
            self._lookups.ask(client)

    def answered(self) -> list[tuple[Route, list[bytes]]]:
        """Apply the answers that arrived; return each installed flow with the datagrams held
        for it, for the worker to forward."""
        ready = []
        drops = self._router.counters.drops
        for client, owner in self._lookups.answers():
            held = self._pending.pop(client, [])
            # A STUN check or a downstream packet may have taught the flow meanwhile: it is
            # fresher than any record, so the record is not even looked at.
            route = self._router.flows.get(client) or self._judge(client, owner)
            if isinstance(route, Drop):
                drops[route] += len(held)
            else:
                ready.append((route, held))
        return ready

    def _judge(self, client: SockAddr, owner: tuple[str, int] | NoOwner) -> Route | Drop:
        """Install the flow a record names, or say why not (and do not ask again for a while)."""
        counters = self._router.counters
        if owner is NoOwner.FAILED:
            counters.lookup_errors += 1
            route: Route | Drop = Drop.UNKNOWN_FLOW
        elif owner is NoOwner.MISSING:
            counters.lookup_misses += 1
            route = Drop.UNKNOWN_FLOW
        else:
            route = (
                Drop.NOT_ALLOWED
                if owner is NoOwner.UNREADABLE
                else self._router.adopt(client, owner)
            )
            if not isinstance(route, Drop):
                counters.lookup_hits += 1
                return route
            counters.lookup_refused += 1
        self._missed[client] = self._clock() + NEGATIVE_TTL
        return route

    def _recently_missed(self, client: SockAddr, now: float) -> bool:
        if now >= self._next_generation:
            self._missed_before, self._missed = self._missed, {}
            self._next_generation = now + NEGATIVE_TTL
        until = self._missed.get(client) or self._missed_before.get(client)
        return until is not None and now < until

    def _spend_token(self, now: float) -> bool:
        self._tokens = min(BURST, self._tokens + (now - self._filled_at) * RATE)
        self._filled_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class RedisLookups:
    """The lookup thread: flow records read in batches, answered through an eventfd."""

    def __init__(self, url: str, cluster_id: int) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._url = url
        self._cluster_id = cluster_id
        self._questions: queue.SimpleQueue[SockAddr | None] = queue.SimpleQueue()
        self._answers: deque[Answer] = deque()
        self._outage = OutageLog(
            log,
            "flow records unreadable: clients without a flow wait for STUN",
            "flow records readable again",
        )
        self._thread = threading.Thread(target=self._serve, name="flow-lookups", daemon=True)
        self._thread.start()

    def ask(self, client: SockAddr) -> None:
        self._questions.put(client)

    def answers(self) -> list[Answer]:
        """Every answer that has arrived (the eventfd is read first, so an answer appended
        after it only wakes the worker once more)."""
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        taken = []
        while self._answers:
            taken.append(self._answers.popleft())
        return taken

    def close(self) -> None:
        """Stop the thread (it finishes the batch in hand, within Redis's timeouts)."""
        self._questions.put(None)
        self._thread.join(timeout=2)
        os.close(self.fd)

    def _serve(self) -> None:
        # redis-py is imported here, on this thread: importing it takes a tenth of a second,
        # which the worker spends serving instead (questions queue up meanwhile).
        from voicewire.cluster.redis_client import connect_blocking

        self._redis = connect_blocking(self._url)  # used by this thread alone
        self._ask(self._redis.ping)  # connect now, not on the first lookup
        while (batch := self._next_batch()) is not None:
            keys = [flow_key(self._cluster_id, _named(c)) for c in batch]
            records = self._ask(self._redis.mget, keys)
            if records is None:
                owners: list[tuple[str, int] | NoOwner] = [NoOwner.FAILED] * len(batch)
            else:  # latin-1 decodes any bytes; parse_address refuses what is not ASCII
                owners = [
                    NoOwner.MISSING
                    if record is None
                    else parse_address(record.decode("latin-1")) or NoOwner.UNREADABLE
                    for record in records
                ]
            self._answers.extend(zip(batch, owners, strict=True))
            os.eventfd_write(self.fd, 1)
        self._redis.close()

    def _next_batch(self) -> list[SockAddr] | None:
        """Wait for a question, then take what else is queued (None: closed)."""
        batch = [self._questions.get()]
        while len(batch) < MAX_BATCH and batch[-1] is not None:
            try:
                batch.append(self._questions.get_nowait())
            except queue.Empty:
                break
        if batch[-1] is None:
            return None  # the worker is stopping: nobody waits for these answers
        return batch  # type: ignore[return-value]

    def _ask(self, command: Callable[..., object], *args: object) -> object:
        """Run one Redis command; None when it fails, logged once per outage. Any exception
        counts: the thread must outlive every failure, or the worker's lookups stall."""
        try:
            reply = command(*args)
        except Exception as exc:
            self._outage.failed(f"{type(exc).__name__}: {exc}")
            return None
        self._outage.succeeded()
        return reply


def _named(client: SockAddr) -> tuple[str, int]:
    """The client as its relay header names it (IPv4-mapped as IPv4): the transceivers' key."""
    _, host, port, _ = relay_header.decode(header_of(client))
    return host, port
