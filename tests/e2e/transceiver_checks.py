"""What e2e tests ask of the embedded stack's transceiver after a call ends."""

from __future__ import annotations

import asyncio
import time

from voicewire.serve import EmbeddedStack


async def sessions_ended(stack: EmbeddedStack, timeout: float) -> float:
    """Wait until the transceiver holds no session, at most ``timeout`` s; the seconds waited."""
    started = time.monotonic()
    while stack.transceiver.session_count and time.monotonic() - started < timeout:
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def closed_count(stack: EmbeddedStack, reason: str) -> float | None:
    """How many sessions ended for ``reason`` (the transceiver's metric)."""
    return stack.transceiver.metrics.registry.get_sample_value(
        "voicewire_transceiver_sessions_closed_total", {"reason": reason}
    )
