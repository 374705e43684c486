"""Streaming sample-rate conversion between the call's 48 kHz and the rate an agent works at.

Opus runs at 48 kHz; speech models want 16 or 24 kHz. Every supported rate divides 48 kHz, so
conversion is by an integer factor: a windowed-sinc low-pass FIR, then keeping every Nth sample
(down), or zero-stuffing then the same filter (up). The filter's history is carried across
chunks, so 20 ms frames join without clicks, and its delay is under 2 ms. libsoxr was tried
first: its high-quality modes work in blocks and held back 20–40 ms per direction, too much for
a conversation; its quick mode is cubic interpolation, which aliases when downsampling.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 48_000
RATES = (8000, 16000, 24000, SAMPLE_RATE)
FRAME_MS = 20
_TAPS_PER_FACTOR = 24  # filter length grows with the factor to keep the same transition band
_KAISER_BETA = 8.0  # ≈ 80 dB stop-band attenuation


def frame_bytes(rate: int) -> int:
    """Bytes of one 20 ms PCM16 mono frame at ``rate``."""
    return rate * FRAME_MS // 1000 * 2


def check_rate(rate: int) -> int:
    if rate not in RATES:
        raise ValueError(f"unsupported sample rate {rate}; use one of {RATES}")
    return rate


def _low_pass(factor: int) -> np.ndarray:
    """Taps of a low-pass at 0.45 of the low rate's band, unity gain at DC."""
    count = _TAPS_PER_FACTOR * factor + 1
    n = np.arange(count) - (count - 1) / 2
    taps = np.sinc(0.9 * n / factor) * np.kaiser(count, _KAISER_BETA)
    return taps / taps.sum()


class Resampler:
    """PCM16 mono from ``source`` to ``target`` Hz, in chunks of any size, with state.

    Down, only the kept outputs matter, but one ``np.convolve`` over the chunk then a stride
    beats computing them one by one from Python. Up, the filter is split into its ``factor``
    phases (polyphase), so the zeros of the stuffed signal are never multiplied.
    """

    def __init__(self, source: int, target: int) -> None:
        self.source = check_rate(source)
        self.target = check_rate(target)
        if SAMPLE_RATE not in (source, target):
            raise ValueError(f"one side must be {SAMPLE_RATE} Hz, the codec's rate")
        self._factor = max(source, target) // min(source, target)
        self._down = source > target
        taps = _low_pass(self._factor)
        if self._down:
            self._phases = [taps]
        else:  # zero-stuffing divides the level by the factor: the phases get it back
            self._phases = [taps[p :: self._factor] * self._factor for p in range(self._factor)]
        self._history = np.zeros(max(len(p) for p in self._phases) - 1)
        self._skip = 0  # input samples to pass over before the next kept output (down)

    def convert(self, pcm: bytes) -> bytes:
        """The converted audio for ``pcm`` (a whole number of samples)."""
        if self._factor == 1 or not pcm:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        buffered = np.concatenate((self._history, samples))
        self._history = buffered[samples.size :]
        if self._down:
            out = np.convolve(buffered, self._phases[0], "valid")[self._skip :: self._factor]
            self._skip = (self._skip - samples.size) % self._factor
        else:
            out = np.empty(samples.size * self._factor)
            for phase, taps in enumerate(self._phases):
                start = self._history.size + 1 - taps.size  # every phase ends on the newest input
                out[phase :: self._factor] = np.convolve(buffered[start:], taps, "valid")
        return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()


class Framer:
    """Cuts a byte stream into fixed-size frames."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pending = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        self._pending += data
        count = len(self._pending) // self.size
        frames = [bytes(self._pending[i * self.size : (i + 1) * self.size]) for i in range(count)]
        del self._pending[: count * self.size]
        return frames
