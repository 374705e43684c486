"""Voice-activity detection that marks the user's turns, offline and in a few microseconds a frame.

Each 20 ms frame gets a speech/non-speech verdict from the WebRTC project's VAD (a GMM over
sub-band energies, through the ``webrtcvad`` binding) gated by a level floor, so line noise
and comfort noise never count as speech. Verdicts become turns by hysteresis, in the shape of
OpenAI's ``server_vad``:

- speech starts when ``START_FRAMES`` of the last ``START_WINDOW`` frames are speech: 60 ms of
  voice, which keeps barge-in fast (the budget from onset to silence is 150 ms) while a click
  or a cough does not start a turn; ``audio_start_ms`` is the first voiced frame, moved back by
  ``prefix_padding_ms`` so a consumer that cuts the turn out keeps the soft onset;
- speech stops after ``silence_duration_ms`` without a voiced frame; ``audio_end_ms`` is the
  end of the last voiced frame.

``threshold`` (0–1, as in OpenAI's API) picks the VAD's aggressiveness: higher means a frame
needs to be more clearly speech. Sans-IO: frames in, events out, time is the audio's own.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import webrtcvad

from voicewire.rtc.opus import FRAME_BYTES, SAMPLE_RATE

FRAME_MS = 20
START_WINDOW = 4
START_FRAMES = 3
LEVEL_FLOOR_DBFS = -55.0
"""Frames quieter than this are silence whatever the VAD says (comfort noise, hiss)."""

DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}
"""OpenAI's ``server_vad`` defaults; a session's settings override them field by field."""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int


TurnEvent = SpeechStarted | SpeechStopped


class TurnDetector:
    def __init__(self, settings: dict[str, Any]) -> None:
        merged = {**DEFAULTS, **settings}
        self.settings = merged
        self._vad = webrtcvad.Vad(min(3, int(4 * merged["threshold"])))
        self._prefix_ms = merged["prefix_padding_ms"]
        self._silence_frames = max(1, math.ceil(merged["silence_duration_ms"] / FRAME_MS))
        self._recent: deque[tuple[int, bool]] = deque(maxlen=START_WINDOW)
        self._speaking = False
        self._last_voiced_end = 0
        self._quiet_frames = 0

    @property
    def speaking(self) -> bool:
        return self._speaking

    def feed(self, pcm: bytes, start_ms: int) -> TurnEvent | None:
        """Judge one 20 ms frame of PCM16 mono 48 kHz that starts at ``start_ms``."""
        voiced = len(pcm) == FRAME_BYTES and self._voiced(pcm)
        if not self._speaking:
            self._recent.append((start_ms, voiced))
            if sum(v for _, v in self._recent) < START_FRAMES:
                return None
            onset = next(ms for ms, v in self._recent if v)
            self._speaking = True
            self._recent.clear()
            self._quiet_frames = 0
            self._last_voiced_end = start_ms + FRAME_MS
            return SpeechStarted(max(0, onset - self._prefix_ms))
        if voiced:
            self._quiet_frames = 0
            self._last_voiced_end = start_ms + FRAME_MS
            return None
        self._quiet_frames += 1
        if self._quiet_frames < self._silence_frames:
            return None
        self._speaking = False
        return SpeechStopped(self._last_voiced_end)

    def _voiced(self, pcm: bytes) -> bool:
        return level_dbfs(pcm) > LEVEL_FLOOR_DBFS and self._vad.is_speech(pcm, SAMPLE_RATE)


def level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 audio in dB below full scale (−inf for digital silence)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if not samples.size:
        return -math.inf
    power = float(np.dot(samples, samples)) / samples.size
    return -math.inf if power == 0 else 10 * math.log10(power / 32768.0**2)
