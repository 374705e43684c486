"""A transceiver's presence in the registry: its record rewritten every second and on each change.

The periodic write is the liveness signal (the record expires without it); the write on a change
(a session opened or ended, drain began) keeps the load gateways see current, so calls placed a
moment apart spread instead of piling onto the transceiver that looked idle a second ago. Pokes
that arrive while a write is in flight fold into the next one.

Redis being away must never hurt live calls: a failed write is logged once per outage and
retried on the next beat, while sessions go on untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from voicewire.cluster.outage import OutageLog
from voicewire.cluster.registry import (
    HEARTBEAT,
    RegistryUnavailable,
    TransceiverRecord,
    TransceiverRegistry,
)

log = logging.getLogger("voicewire.cluster")


class Heartbeat:
    def __init__(
        self, registry: TransceiverRegistry, record: Callable[[], TransceiverRecord]
    ) -> None:
        self._registry = registry
        self._record = record
        self._changed = asyncio.Event()
        self._outage = OutageLog(
            log,
            "registry unreachable: live calls go on, heartbeats keep retrying",
            "registry reachable again",
        )
        self._stopped = False

    def poke(self) -> None:
        """Something a gateway should know changed: write the record now, not at the next beat."""
        self._changed.set()

    def stop(self) -> None:
        """End ``run`` after the write in flight. A flag, not only a cancel: a cancel that lands
        inside a redis-py command can be lost (redis/redis-py#2028, #2551), and a transceiver
        that drained must not then hang on its heartbeat."""
        self._stopped = True
        self._changed.set()

    async def run(self) -> None:
        """Publish until stopped."""
        while not self._stopped:
            self._changed.clear()
            await self._publish()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as
            # the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    await self._changed.wait()

    async def withdraw(self) -> None:
        """Leave the registry at once (after a drain); a failure only means it expires instead."""
        try:
            await self._registry.withdraw(self._record().id)
        except RegistryUnavailable as exc:
            log.warning("could not leave the registry", extra={"error": str(exc.__cause__)})

    async def _publish(self) -> None:
        try:
            await self._registry.publish(self._record())
        except RegistryUnavailable as exc:
            self._outage.failed(f"{exc}: {exc.__cause__}")
        else:
            self._outage.succeeded()
