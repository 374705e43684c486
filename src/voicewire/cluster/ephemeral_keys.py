"""Ephemeral ``ek_`` keys in Redis, so a key minted through one gateway replica works on all.

A browser mints through whichever replica the load balancer picks and posts its offer through
another. Keys are stored under the SHA-256 of their value (``voicewire:ek:{hex}``, JSON
``{"expires_at", "session"}``), so reading Redis does not hand out usable keys, and expire in
Redis when they do for clients (PX = the key's remaining lifetime). Redis bounds their number by
its memory; ``MAX_LIVE_KEYS`` applies only to the in-process store.
"""

from __future__ import annotations

import hashlib
import json
import math

from redis.asyncio import Redis

from voicewire.cluster.redis_client import unreachable_as
from voicewire.gateway.keys import EphemeralKey, KeysUnavailable

UNREACHABLE = "the key store (Redis) is unreachable; try again"


class RedisEphemeralKeys:
    """An ``EphemeralKeyStore`` shared by every gateway replica."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def add(self, key: EphemeralKey, now: float) -> None:
        lifetime_ms = max(1, math.ceil((key.expires_at - now) * 1000))
        record = json.dumps({"expires_at": key.expires_at, "session": key.session})
        with unreachable_as(KeysUnavailable, UNREACHABLE):
            await self._redis.set(_name(key.value), record, px=lifetime_ms)

    async def get(self, value: str) -> EphemeralKey | None:
        with unreachable_as(KeysUnavailable, UNREACHABLE):
            stored = await self._redis.get(_name(value))
        if stored is None:
            return None
        record = json.loads(stored)
        return EphemeralKey(value, record["expires_at"], record["session"])


def _name(value: str) -> str:
    return "voicewire:ek:" + hashlib.sha256(value.encode()).hexdigest()
