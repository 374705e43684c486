"""The transceiver registry in Redis: which transceivers are alive, how loaded, and who owns a call.

Gateways are stateless replicas. To place a call one needs the live transceivers of its cluster
and their load; to hang one up, any replica needs the transceiver that owns it. Transceivers
publish their own records and Redis key expiry does the liveness check: a transceiver that
stops heartbeating (crash, SIGKILL, partition) leaves the pool within ``RECORD_TTL`` seconds
with no reaper process and no clock shared between hosts.

Key schema (``{c}`` is the cluster id, ``{id}`` a transceiver id: its advertised ``host:port``)::

    voicewire:transceivers:{c}      SET of transceiver ids that registered in cluster c; an index
                                    only: readers drop members whose record has expired
    voicewire:transceiver:{c}:{id}  STRING, JSON record, PX RECORD_TTL, rewritten every HEARTBEAT
                                    seconds and at once on a change (sessions, drain):
                                    {"id", "advertise": "host:port", "http": internal API base URL,
                                     "cluster_id", "sessions", "capacity", "draining"}
    voicewire:call:{call_id}        STRING, the owning transceiver's internal API base URL,
                                    EX CALL_TTL, written by the gateway that placed the call
    voicewire:ek:{sha256 hex}       ephemeral keys (``ephemeral_keys.py``)
    voicewire:flow:{c}:{client}     flow records: the transceiver owning a client address
                                    (``flows.py``)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass

from redis.asyncio import Redis

from voicewire.cluster.redis_client import unreachable_as

log = logging.getLogger("voicewire.cluster")

HEARTBEAT = 1.0  # seconds between a transceiver's record updates
RECORD_TTL = 3.0  # seconds a record outlives its last update: a dead transceiver is gone by then
CALL_TTL = 4 * 3600  # seconds a call's owner is remembered; longer than any call should last


class RegistryUnavailable(Exception):
    """Redis cannot be reached: the caller degrades (static list, 503, retry later)."""


@dataclass(frozen=True, slots=True)
class TransceiverRecord:
    id: str
    """Unique in the cluster: the advertised ``host:port``."""
    advertise: str
    """``host:port`` of the UDP socket relays send to (the address in its routing tokens)."""
    http: str
    """Base URL of its internal API, e.g. ``http://10.0.0.7:8081``."""
    cluster_id: int
    sessions: int
    capacity: int
    """``--max-sessions``: beyond it the transceiver answers 503."""
    draining: bool
    """True from SIGTERM on: it takes no new calls, but still owns its live ones."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TransceiverRecord | None:
        """The record, or None for one this version cannot read (it is skipped, not fatal)."""
        try:
            fields = json.loads(text)
            values = {name: fields[name] for name in _FIELD_TYPES}
        except (ValueError, TypeError, KeyError):
            return None
        if not all(isinstance(values[name], kind) for name, kind in _FIELD_TYPES.items()):
            return None
        return cls(**values)


_FIELD_TYPES = {
    "id": str,
    "advertise": str,
    "http": str,
    "cluster_id": int,
    "sessions": int,
    "capacity": int,
    "draining": bool,
}


class TransceiverRegistry:
    """One cluster's view of the registry. Every method raises only ``RegistryUnavailable``."""

    def __init__(self, redis: Redis, cluster_id: int) -> None:
        self._redis = redis
        self._cluster_id = cluster_id
        self._index = f"voicewire:transceivers:{cluster_id}"

    async def publish(self, record: TransceiverRecord) -> None:
        """Write (or refresh) a transceiver's record; it expires unless refreshed."""
        with unreachable_as(RegistryUnavailable, "cannot publish to the registry"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._record_key(record.id), record.to_json(), px=int(RECORD_TTL * 1000))
                pipe.sadd(self._index, record.id)
                await pipe.execute()

    async def withdraw(self, transceiver_id: str) -> None:
        """Remove a record at once (a drained transceiver on its way out)."""
        with unreachable_as(RegistryUnavailable, "cannot withdraw from the registry"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(self._record_key(transceiver_id))
                pipe.srem(self._index, transceiver_id)
                await pipe.execute()

    async def transceivers(self) -> list[TransceiverRecord]:
        """Every live record of this cluster, draining or not."""
        with unreachable_as(RegistryUnavailable, "cannot read the registry"):
            ids = sorted(await self._redis.smembers(self._index))
            if not ids:
                return []
            values = await self._redis.mget([self._record_key(i) for i in ids])
            expired = [i for i, value in zip(ids, values, strict=True) if value is None]
            if expired:
                await self._redis.srem(self._index, *expired)
        records = [TransceiverRecord.from_json(value) for value in values if value is not None]
        return [r for r in records if r is not None and r.cluster_id == self._cluster_id]

    async def remember_call(self, call_id: str, http: str) -> None:
        with unreachable_as(RegistryUnavailable, "cannot record the call's transceiver"):
            await self._redis.set(_call_key(call_id), http, ex=CALL_TTL)

    async def call_owner(self, call_id: str) -> str | None:
        """The internal API base URL of the call's transceiver, if it was recorded."""
        with unreachable_as(RegistryUnavailable, "cannot look the call up"):
            return await self._redis.get(_call_key(call_id))

    async def forget_call(self, call_id: str) -> None:
        with unreachable_as(RegistryUnavailable, "cannot forget the call"):
            await self._redis.delete(_call_key(call_id))

    def _record_key(self, transceiver_id: str) -> str:
        return f"voicewire:transceiver:{self._cluster_id}:{transceiver_id}"


def _call_key(call_id: str) -> str:
    return f"voicewire:call:{call_id}"
