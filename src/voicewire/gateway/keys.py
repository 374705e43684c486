"""Who may start a call: server API keys, and the short-lived ``ek_`` keys minted from them.

OpenAI's convention, which browser clients already follow: a backend holding an API key mints an
ephemeral key with ``POST /v1/realtime/client_secrets`` (optionally binding a ``session``
config to it) and hands it to the browser, which presents it as ``Authorization: Bearer ek_…``
when it posts its offer. API keys come from ``VOICEWIRE_API_KEYS``; with none configured the
gateway runs open (the embedded default on loopback, announced loudly at start).

Ephemeral keys live in this process only; several gateways need a shared store (DESIGN §8).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

MIN_TTL = 10
MAX_TTL = 7200
DEFAULT_TTL = 600
MAX_LIVE_KEYS = 100_000


class Unauthorized(Exception):
    """No key, or a key that is wrong or expired; the gateway answers 401."""


@dataclass(frozen=True, slots=True)
class EphemeralKey:
    value: str
    expires_at: float
    """Unix seconds."""
    session: dict[str, Any] = field(default_factory=dict)


class KeyStore:
    def __init__(self, api_keys: tuple[str, ...]) -> None:
        self._api_keys = tuple(key for key in api_keys if key)
        self._ephemeral: dict[str, EphemeralKey] = {}

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

    def authorize_call(self, authorization: str | None, now: float) -> dict[str, Any]:
        """Allow a call; return the session config bound to its ephemeral key, if any."""
        if self.open and not authorization:
            return {}
        token = _bearer(authorization)
        if token.startswith("ek_"):
            key = self._ephemeral.get(token)
            if key is None or key.expires_at <= now:
                raise Unauthorized("the ephemeral key is unknown or expired")
            return key.session
        if self.open or any(hmac.compare_digest(token, api) for api in self._api_keys):
            return {}
        raise Unauthorized("invalid API key")

    def mint(self, ttl: int, session: dict[str, Any], now: float) -> EphemeralKey:
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ValueError(f"expires_after.seconds must be {MIN_TTL}..{MAX_TTL}, not {ttl}")
        self._forget_expired(now)
        if len(self._ephemeral) >= MAX_LIVE_KEYS:
            raise OverflowError("too many live ephemeral keys")
        key = EphemeralKey("ek_" + secrets.token_urlsafe(24), now + ttl, session)
        self._ephemeral[key.value] = key
        return key

    def _forget_expired(self, now: float) -> None:
        expired = [value for value, key in self._ephemeral.items() if key.expires_at <= now]
        for value in expired:
            del self._ephemeral[value]


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <key>'")
    return token.strip()
