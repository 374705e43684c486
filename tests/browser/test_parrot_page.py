"""A conversation with ``parrot`` on the demo page: Chromium's microphone says a sentence and
pauses, again and again; the parrot says each turn back, and the next sentence talks over the
reply. The page's event log shows the whole exchange, barge-in included."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import expect

from tests import speech
from tests.browser.test_demo_page import INBOUND_AUDIO, SILENCE, connect

if TYPE_CHECKING:
    from tests.browser.conftest import Demo

SENTENCE = "The parrot says every turn back to you."
EVENT_TYPES = "() => window.voicewire.events.map((e) => e.data && e.data.type)"


@pytest.fixture
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 2.5 s of speech then 1.5 s of silence, looped: the pause ends each turn, and the
    parrot's reply (the turn, ~2.8 s) is still playing when the next sentence starts."""
    return speech.speech_wav(
        SENTENCE,
        tmp_path_factory.mktemp("turns"),
        name="turns",
        effects=("pad", "0", "1.5", "repeat", "4"),
    )


@pytest.fixture
def demo_url(parrot_url: str) -> str:
    return parrot_url


async def test_talk_hear_the_turn_back_and_interrupt_it(demo: Demo) -> None:
    await demo.open()
    await connect(demo)

    # A turn: speech marked by turn detection, committed, answered with audio.
    for kind in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.created",
        "output_audio_buffer.started",
    ):
        await demo.wait_for(f"() => ({EVENT_TYPES})().includes('{kind}')", timeout=10.0)
    loudest = 0.0
    for _ in range(40):
        inbound = await demo.page.evaluate(INBOUND_AUDIO)
        loudest = max(loudest, inbound["audioLevel"])
        if loudest > SILENCE:
            break
        await demo.page.wait_for_timeout(50)
    assert loudest > SILENCE, f"the reply was silent (loudest audioLevel {loudest})"

    # The next sentence starts while the reply plays: barge-in.
    await demo.wait_for(
        f"() => ({EVENT_TYPES})().includes('output_audio_buffer.cleared')", timeout=10.0
    )
    types = await demo.page.evaluate(EVENT_TYPES)
    cleared = types.index("output_audio_buffer.cleared")
    assert "input_audio_buffer.speech_started" in types[cleared:], types
    await expect(demo.page.locator("#events")).to_contain_text("output_audio_buffer.cleared")
    assert demo.problems == []
