"""Who may start a call: server API keys, and the short-lived ``ek_`` keys minted from them.

OpenAI's convention, which browser clients already follow: a backend holding an API key mints an
ephemeral key with ``POST /v1/realtime/client_secrets`` (optionally binding a ``session``
config to it) and hands it to the browser, which presents it as ``Authorization: Bearer ek_…``
when it posts its offer. API keys come from ``VOICEWIRE_API_KEYS``; with none configured the
gateway runs open (the embedded default on loopback, announced loudly at start).

Ephemeral keys live where an ``EphemeralKeyStore`` keeps them: in this process for ``serve``
(``MemoryEphemeralKeys``), in Redis for gateway replicas (``cluster/ephemeral_keys.py``), so a
key minted by one replica works on every other.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

MIN_TTL = 10
MAX_TTL = 7200
DEFAULT_TTL = 600
MAX_LIVE_KEYS = 100_000
API_KEYS_ENV = "VOICEWIRE_API_KEYS"

log = logging.getLogger("voicewire.gateway")


class Unauthorized(Exception):
    """No key, or a key that is wrong or expired; the gateway answers 401."""


class KeysUnavailable(Exception):
    """The shared store of ephemeral keys cannot be reached; the gateway answers 503."""


@dataclass(frozen=True, slots=True)
class EphemeralKey:
    value: str
    expires_at: float
    """Unix seconds."""
    session: dict[str, Any] = field(default_factory=dict)


class EphemeralKeyStore(Protocol):
    """Where minted keys live until they expire; raises ``KeysUnavailable`` when unreachable."""

    async def add(self, key: EphemeralKey, now: float) -> None: ...
    async def get(self, value: str) -> EphemeralKey | None: ...


class MemoryEphemeralKeys:
    """This process's keys: enough for one gateway (``serve``), bounded by ``MAX_LIVE_KEYS``."""

    def __init__(self) -> None:
        self._keys: dict[str, EphemeralKey] = {}

    async def add(self, key: EphemeralKey, now: float) -> None:
        self._forget_expired(now)
        if len(self._keys) >= MAX_LIVE_KEYS:
            raise OverflowError("too many live ephemeral keys")
        self._keys[key.value] = key

    async def get(self, value: str) -> EphemeralKey | None:
        return self._keys.get(value)

    def _forget_expired(self, now: float) -> None:
        expired = [value for value, key in self._keys.items() if key.expires_at <= now]
        for value in expired:
            del self._keys[value]


class KeyStore:
    def __init__(
        self, api_keys: tuple[str, ...], ephemeral: EphemeralKeyStore | None = None
    ) -> None:
        self._api_keys = tuple(key for key in api_keys if key)
        self._ephemeral = MemoryEphemeralKeys() if ephemeral is None else ephemeral

    @property
    def open(self) -> bool:
        """True when no API key is configured: every request is allowed."""
        return not self._api_keys

    def check_api_key(self, authorization: str | None) -> None:
        """Minting needs a server API key (never an ephemeral one)."""
        if self.open:
            return
        token = _bearer(authorization)
        if not any(hmac.compare_digest(token, key) for key in self._api_keys):
            raise Unauthorized("a server API key is required")

    async def authorize_call(self, authorization: str | None, now: float) -> dict[str, Any]:
        """Allow a call; return the session config bound to its ephemeral key, if any."""
        if self.open and not authorization:
            return {}
        token = _bearer(authorization)
        if token.startswith("ek_"):
            key = await self._ephemeral.get(token)
            if key is None or key.expires_at <= now:
                raise Unauthorized("the ephemeral key is unknown or expired")
            return key.session
        if self.open or any(hmac.compare_digest(token, api) for api in self._api_keys):
            return {}
        raise Unauthorized("invalid API key")

    async def mint(self, ttl: int, session: dict[str, Any], now: float) -> EphemeralKey:
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ValueError(f"expires_after.seconds must be {MIN_TTL}..{MAX_TTL}, not {ttl}")
        key = EphemeralKey("ek_" + secrets.token_urlsafe(24), now + ttl, session)
        await self._ephemeral.add(key, now)
        return key

    def warn_if_open(self, http: tuple[str, int]) -> None:
        """Say loudly at start that anyone who can reach ``http`` may call and mint."""
        if self.open:
            log.warning(
                "signaling is open: no API keys are set (VOICEWIRE_API_KEYS), so anyone who can "
                "reach the HTTP address can start calls and mint keys; keep it on loopback",
                extra={"http": http},
            )


def api_keys_from_environment() -> tuple[str, ...]:
    """Server API keys, comma-separated in ``VOICEWIRE_API_KEYS`` (never a flag: argv is public)."""
    return tuple(key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip())


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <key>'")
    return token.strip()
