"""Sample-rate conversion: a tone keeps its level and shape, chunking does not change the
result, and what cannot be represented at the lower rate is filtered out, not folded in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicewire.agents.resample import RATES, Framer, Resampler, frame_bytes


def tone(freq: float, rate: int, seconds: float = 0.3, level: float = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype("<i2")


def convert_in_chunks(resampler: Resampler, pcm: np.ndarray, sizes: list[int]) -> np.ndarray:
    data, out, at = pcm.tobytes(), [], 0
    for size in sizes:
        out.append(resampler.convert(data[at : at + 2 * size]))
        at += 2 * size
    out.append(resampler.convert(data[at:]))
    return np.frombuffer(b"".join(out), dtype="<i2")


PAIRS = [(48000, rate) for rate in RATES] + [(rate, 48000) for rate in RATES[:-1]]


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_a_tone_comes_out_as_the_same_tone_at_the_new_rate(source, target):
    chunks = [source // 50] * 14
    out = convert_in_chunks(Resampler(source, target), tone(440, source), chunks).astype(float)
    expected = tone(440, target).astype(float)
    assert len(out) == len(expected)
    best = max(
        range(0, 80),
        key=lambda d: float(np.dot(out[200 : len(out) - 100], expected[200 - d : -100 - d])),
    )
    error = out[200:-100] - expected[200 - best : -100 - best]
    snr = 10 * np.log10(np.sum(expected[200 - best : -100 - best] ** 2) / (np.sum(error**2) + 1e-9))
    assert snr > 60
    assert best <= 80  # the filter delays by under 2 ms


@pytest.mark.parametrize("target", [8000, 16000, 24000])
def test_what_the_lower_rate_cannot_carry_is_filtered_not_aliased(target):
    out = np.frombuffer(
        Resampler(48000, target).convert(tone(0.8 * target, 48000).tobytes()), "<i2"
    )
    assert np.sqrt(np.mean(out[100:].astype(float) ** 2)) < 8  # ~ -60 dB from 8000 peak


@settings(max_examples=50)
@given(
    pair=st.sampled_from(PAIRS),
    sizes=st.lists(st.integers(0, 700), max_size=12),
)
def test_chunking_does_not_change_the_result(pair, sizes):
    source, target = pair
    pcm = tone(300, source, 0.2)
    whole = np.frombuffer(Resampler(source, target).convert(pcm.tobytes()), "<i2")
    chunked = convert_in_chunks(Resampler(source, target), pcm, sizes)
    assert np.array_equal(whole, chunked)


def test_the_framer_cuts_exact_frames_and_keeps_the_rest():
    framer = Framer(frame_bytes(16000))
    assert framer.push(bytes(500)) == []
    frames = framer.push(bytes(900))
    assert [len(f) for f in frames] == [640, 640]
    assert framer.push(bytes(520)) == [bytes(640)]


def test_unsupported_rates_are_refused():
    with pytest.raises(ValueError, match="unsupported sample rate 44100"):
        Resampler(48000, 44100)
    with pytest.raises(ValueError, match="48000"):
        Resampler(16000, 24000)
