"""Calls across a cluster: pick a transceiver, ask its internal API for the answer, and remember
where the call lives so any gateway replica can hang it up.

Gateways are stateless replicas behind an HTTP load balancer. The registry (Redis) says which
transceivers of the cluster are alive, how loaded and whether draining; a call goes to the
least-loaded one that is not draining (ties broken at random, so replicas do not all pick the
same). A transceiver that fails or answers 503 gets the call's next choice, once: a second
failure is the client's 503, not a long chain of timeouts.

Without the registry — no ``--redis``, or Redis down — a static list (``--transceivers``) still
places calls, round robin, and a hang-up whose owner is not recorded asks every transceiver it
knows (call ids are unguessable, so only the owner says yes). Without either the answer is a
clear 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from voicewire.cluster.registry import RegistryUnavailable, TransceiverRecord, TransceiverRegistry
from voicewire.gateway.errors import ApiError
from voicewire.transceiver.internal_api import SESSIONS

log = logging.getLogger("voicewire.gateway")

ATTEMPTS = 2  # a failed or full transceiver passes the call to the next choice, once
ANSWER_TIMEOUT = aiohttp.ClientTimeout(total=5.0, sock_connect=1.0)
HANG_UP_TIMEOUT = aiohttp.ClientTimeout(total=3.0, sock_connect=1.0)
CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ClusterSignaling:
    """A ``CallSignaling`` over the transceivers of one cluster."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        registry: TransceiverRegistry | None,
        static: tuple[str, ...] = (),
    ) -> None:
        self._http = http
        self._registry = registry
        self._static = static
        self._rotation = 0
        self.metrics = CollectorRegistry()
        self._placements = Counter(
            "voicewire_gateway_placements",
            "Attempts to place a call on a transceiver, by outcome.",
            ["outcome"],
            registry=self.metrics,
        )

    async def answer(self, offer_text: str, session_config: dict[str, Any]) -> tuple[str, str]:
        body = {"sdp": offer_text, "session": session_config}
        for url in (await self._choices())[:ATTEMPTS]:
            answered = await self._ask(url, body)
            if answered is not None:
                await self._remember(answered[0], url)
                return answered
        raise ApiError(503, "no transceiver could take the call; try again")

    async def hang_up(self, call_id: str) -> bool:
        if not CALL_ID.fullmatch(call_id):
            return False  # not an id any transceiver minted: no need to ask around
        owner = None
        if self._registry is not None:
            try:
                owner = await self._registry.call_owner(call_id)
            except RegistryUnavailable:
                log.warning("registry unreachable: asking every transceiver to hang up")
        urls = [owner] if owner else await self._everyone()
        results = await asyncio.gather(*(self._end(url, call_id) for url in urls))
        if True in results:
            if owner:
                await self._forget(call_id)
            return True
        if None in results:
            raise ApiError(503, "the transceiver holding the call did not answer; try again")
        return False

    async def _choices(self) -> list[str]:
        """Transceiver URLs to ask, best first."""
        if self._registry is not None:
            try:
                best = least_loaded(await self._registry.transceivers())
            except RegistryUnavailable:
                self._placements.labels("registry_unreachable").inc()
                if not self._static:
                    raise ApiError(
                        503, "the transceiver registry is unreachable; try again"
                    ) from None
                log.warning("registry unreachable: placing the call from --transceivers")
            else:
                if best or not self._static:
                    return [record.http for record in best]
        if not self._static:
            return []
        self._rotation = (self._rotation + 1) % len(self._static)
        return list(self._static[self._rotation :] + self._static[: self._rotation])

    async def _everyone(self) -> list[str]:
        """Every transceiver that might own a call: the registry's (draining too), the static."""
        known = list(self._static)
        if self._registry is not None:
            try:
                known += [record.http for record in await self._registry.transceivers()]
            except RegistryUnavailable:
                if not known:
                    raise ApiError(
                        503, "the transceiver registry is unreachable; try again"
                    ) from None
        return list(dict.fromkeys(known))

    async def _ask(self, url: str, body: dict[str, Any]) -> tuple[str, str] | None:
        """The transceiver's (call id, answer); None to try the next; ApiError for the client."""
        try:
            async with self._http.post(url + SESSIONS, json=body, timeout=ANSWER_TIMEOUT) as reply:
                status, content = reply.status, await reply.json(content_type=None)
            if status == 201:
                self._placements.labels("placed").inc()
                return str(content["call_id"]), str(content["sdp"])
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, KeyError) as exc:
            self._placements.labels("transceiver_failed").inc()
            log.warning("transceiver failed", extra={"transceiver": url, "error": repr(exc)})
            return None
        message = _error_message(content)
        if status >= 500:
            self._placements.labels("transceiver_refused").inc()
            log.info("transceiver refused", extra={"transceiver": url, "error": message})
            return None
        raise ApiError(status, message)  # the offer itself is wrong: no other transceiver helps

    async def _end(self, url: str, call_id: str) -> bool | None:
        """True: ended; False: not there; None: the transceiver did not answer."""
        try:
            async with self._http.delete(
                f"{url}{SESSIONS}/{call_id}", timeout=HANG_UP_TIMEOUT
            ) as reply:
                if reply.status in (204, 404):
                    return reply.status == 204
                log.warning("hang-up failed", extra={"transceiver": url, "status": reply.status})
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("hang-up failed", extra={"transceiver": url, "error": repr(exc)})
        return None

    async def _remember(self, call_id: str, url: str) -> None:
        if self._registry is None:
            return
        try:
            await self._registry.remember_call(call_id, url)
        except RegistryUnavailable:
            log.warning(
                "call not recorded: its hang-up will ask every transceiver",
                extra={"call_id": call_id, "transceiver": url},
            )

    async def _forget(self, call_id: str) -> None:
        assert self._registry is not None
        with contextlib.suppress(RegistryUnavailable):  # else it expires after CALL_TTL
            await self._registry.forget_call(call_id)


def least_loaded(records: list[TransceiverRecord]) -> list[TransceiverRecord]:
    """Transceivers that take calls now, least loaded (sessions per capacity) first."""
    usable = [r for r in records if not r.draining and r.sessions < r.capacity]
    return sorted(usable, key=lambda r: (r.sessions / r.capacity, random.random()))


def _error_message(content: Any) -> str:
    """The message of a JSON error from a transceiver, whatever shape it came in."""
    try:
        return str(content["error"]["message"])
    except (TypeError, KeyError):
        return "the transceiver refused the call"
