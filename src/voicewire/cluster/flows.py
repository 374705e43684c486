"""Flow records in Redis: which transceiver owns a client address, for relays that lost their flows.

A relay learns a client's flow from its STUN checks (the token in USERNAME) or from downstream
traffic (DESIGN §4). A relay that restarts, or takes over another relay's clients when the load
balancer moves them, gets their SRTP before either and would drop it until the next consent
check, seconds away (RFC 7675 §5.1). So a transceiver started with ``--redis`` writes, for every
client address ICE validated, the address of its own UDP socket; a relay started with ``--redis``
looks up a client it has no flow for (``relay/flow_recovery.py``) and resumes the call within a
lookup's time.

Key (``{c}`` is the cluster id; addresses are ``host:port`` with IPv6 hosts in brackets, and an
IPv4 client is dotted even when a dual-stack socket saw it IPv4-mapped: the relay header's view)::

    voicewire:flow:{c}:{client}   STRING, the owning transceiver's advertised ``host:port`` (the
                                  address in its routing tokens), PX ttl (2 × the consent timeout,
                                  60 s), rewritten every ttl / 4 while the session lives and
                                  deleted (only if still naming this transceiver) when it ends

A record is advice, never authority: a relay forwards to the address it names only inside its
``--allow-transceivers``, exactly as for a token's, so whoever can write Redis still cannot aim a
relay outside the transceiver networks. A stale record (a transceiver that died) costs nothing
worse than the drop it replaced.

The transceiver never waits for Redis: ``FlowPublisher.announce`` and ``forget`` only note the
change (the media path calls them), and a background task writes the notes, folded per client,
in one pipeline. Redis being away is logged once per outage; the notes are kept and retried, and
the periodic rewrite restores every live record once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from voicewire.cluster.flow_keys import address_text, flow_key
from voicewire.cluster.outage import OutageLog

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("voicewire.cluster")

RETRY = 1.0  # seconds before writing again after Redis failed
MAX_PENDING = 10_000  # changes kept through an outage; beyond it deletes go (records expire)
CLOSE_TIMEOUT = 1.0  # seconds the last writes (the closing sessions' deletes) may take at exit

# Delete a client's record only while it still names this transceiver: the client may have been
# placed on another transceiver since, from the same address, and its record is that one's now.
_DELETE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class FlowPublisher:
    """One transceiver's flow records, written in the background.

    ``announce`` when ICE validates a client address, ``forget`` when the session that owns it
    ends; ``run`` writes, ``close`` writes what is left. Owning an address is the endpoint's
    business (a reused client port moves to the newest session): the publisher writes what it
    is told, folding the changes to one address into the last.
    """

    def __init__(self, redis: Redis, cluster_id: int, owner: tuple[str, int], ttl: float) -> None:
        self._redis = redis
        self._cluster_id = cluster_id
        self._owner = address_text(owner)
        self._ttl_ms = int(ttl * 1000)
        self._refresh = ttl / 4
        self._live: set[str] = set()
        self._pending: dict[str, bool] = {}  # key → write (True) or delete (False), in order
        self._wake = asyncio.Event()
        self._outage = OutageLog(
            log,
            "flow records unwritable: calls go on, writes keep retrying",
            "flow records writable again",
        )
        self._stopped = False

    def announce(self, client: tuple[str, int]) -> None:
        """This transceiver owns ``client`` now. Costs a dict write: the media path calls it."""
        key = flow_key(self._cluster_id, client)
        self._live.add(key)
        self._note(key, True)

    def forget(self, client: tuple[str, int]) -> None:
        """The session that owned ``client`` ended."""
        key = flow_key(self._cluster_id, client)
        self._live.discard(key)
        self._note(key, False)

    def _note(self, key: str, write: bool) -> None:
        self._pending.pop(key, None)  # re-insert: the last change to a key is written last
        self._pending[key] = write
        self._wake.set()

    def stop(self) -> None:
        """End ``run`` after the write in flight (a cancel inside redis-py can be lost: see
        ``Heartbeat.stop``); ``close`` then writes what is left."""
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        """Write changes as they come, and every live record each ttl / 4, until stopped."""
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + self._refresh
        while not self._stopped:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as
            # the event is set, and exit does just that (the last sessions' forgets, then cancel).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, refresh_at - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopped:
                return
            refresh = loop.time() >= refresh_at
            if refresh:
                refresh_at = loop.time() + self._refresh
            if not await self._write(refresh):
                await asyncio.sleep(RETRY)
                if self._pending:
                    self._wake.set()

    async def close(self) -> None:
        """Write what is left (the deletes of the sessions just ended), if Redis answers soon."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._write(refresh=False), CLOSE_TIMEOUT)

    async def _write(self, refresh: bool) -> bool:
        """One pipeline: the pending changes, plus every live record on a refresh. False if
        Redis failed; the changes stay pending (a newer change to the same key wins)."""
        changes, self._pending = self._pending, {}
        writes = self._live if refresh else [key for key, write in changes.items() if write]
        deletes = [key for key, write in changes.items() if not write]
        if not writes and not deletes:
            return True
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in writes:
                    pipe.set(key, self._owner, px=self._ttl_ms)
                for key in deletes:
                    pipe.eval(_DELETE_IF_OWNED, 1, key, self._owner)
                await pipe.execute()
        except asyncio.CancelledError:
            self._keep(changes)  # the last writes at exit are close()'s to make
            raise
        except (RedisError, OSError) as exc:
            self._keep(changes)
            self._outage.failed(f"{type(exc).__name__}: {exc}")
            return False
        self._outage.succeeded()
        return True

    def _keep(self, changes: dict[str, bool]) -> None:
        """Put unwritten changes back under the ones made since (newer changes win). A long
        outage with many calls ending could grow them without end: past ``MAX_PENDING`` the
        deletes are given up, since those records expire by themselves within the ttl."""
        self._pending = {**changes, **self._pending}
        if len(self._pending) > MAX_PENDING:
            self._pending = {key: write for key, write in self._pending.items() if write}
