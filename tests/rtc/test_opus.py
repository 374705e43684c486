"""Opus through libopus: speech survives the round trip, losses are covered, bad packets refused."""

import math
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.opus import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder


def sine(frequency: float, frames: int, amplitude: float = 10000.0) -> array:
    count = frames * FRAME_SAMPLES
    return array(
        "h",
        (
            int(amplitude * math.sin(2 * math.pi * frequency * n / SAMPLE_RATE))
            for n in range(count)
        ),
    )


def voiced(frames: int) -> array:
    """A vowel-like signal: harmonics of a 150 Hz voice, loudest near the first formant."""
    harmonics = [(h, 3000 * math.exp(-(((h * 150 - 700) / 400) ** 2)) + 200) for h in range(1, 12)]
    return array(
        "h",
        (
            int(
                sum(
                    weight * math.sin(2 * math.pi * h * 150 * n / SAMPLE_RATE)
                    for h, weight in harmonics
                )
            )
            for n in range(frames * FRAME_SAMPLES)
        ),
    )


def frames_of(signal: array, channels: int = 1) -> list[bytes]:
    size = FRAME_SAMPLES * channels
    return [signal[start : start + size].tobytes() for start in range(0, len(signal), size)]


def best_correlation(reference: array, decoded: array) -> float:
    """Normalised correlation of the two signals at the lag (the codec's delay) that fits best."""
    start, stop, step = SAMPLE_RATE // 10, len(reference) - 1000, 7  # skip the codec's ramp-up

    def correlation(lag: int) -> float:
        pairs = [(reference[n], decoded[n + lag]) for n in range(start, stop, step)]
        dot = sum(x * y for x, y in pairs)
        return dot / math.sqrt(sum(x * x for x, _ in pairs) * sum(y * y for _, y in pairs))

    return max(correlation(lag) for lag in range(0, 600, 2))


def relative_error(reference: bytes, decoded: bytes) -> float:
    want, got = array("h", reference), array("h", decoded)
    return sum((x - y) ** 2 for x, y in zip(want, got, strict=True)) / sum(x * x for x in want)


def test_a_sine_comes_back_as_the_same_sine() -> None:
    signal = sine(440, frames=25)
    encoder, decoder = OpusEncoder(), OpusDecoder()

    decoded = array("h")
    for frame in frames_of(signal):
        packet = encoder.encode(frame)
        assert 0 < len(packet) < 200  # about 32 kb/s: 80 octets a frame
        pcm = decoder.decode(packet)
        assert len(pcm) == FRAME_BYTES
        decoded.frombytes(pcm)

    assert best_correlation(signal, decoded) > 0.95


def test_a_browser_stereo_stream_decodes_to_mono() -> None:
    mono = sine(440, frames=25)
    stereo = array("h", (sample for sample in mono for _ in range(2)))  # same on both channels
    encoder, decoder = OpusEncoder(channels=2), OpusDecoder()

    decoded = array("h")
    for frame in frames_of(stereo, channels=2):
        packet = encoder.encode(frame)
        assert packet[0] & 0x04  # RFC 6716 §3.1: the TOC's stereo flag
        decoded.frombytes(decoder.decode(packet))

    assert len(decoded) == len(mono)
    assert best_correlation(mono, decoded) > 0.95


def test_concealment_fills_a_lost_frame_of_the_right_length() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    for frame in frames_of(sine(440, frames=5)):
        decoder.decode(encoder.encode(frame))

    assert len(decoder.conceal()) == FRAME_BYTES
    assert len(decoder.conceal(samples=FRAME_SAMPLES // 2)) == FRAME_BYTES // 2


def test_fec_rebuilds_a_lost_frame_far_better_than_concealment() -> None:
    frames = frames_of(voiced(frames=30))
    encoder = OpusEncoder(expected_loss=20)  # libopus adds the LBRR copy only if told of loss
    packets = [encoder.encode(frame) for frame in frames]
    lost = 20

    def decode_with(cover: str) -> bytes:
        decoder = OpusDecoder()
        for packet in packets[:lost]:
            decoder.decode(packet)
        if cover == "fec":
            return decoder.decode_fec(packets[lost + 1])
        return decoder.conceal()

    reference = OpusDecoder()
    expected = [reference.decode(packet) for packet in packets[: lost + 1]][lost]
    rebuilt, concealed = decode_with("fec"), decode_with("plc")

    assert len(rebuilt) == FRAME_BYTES
    assert relative_error(expected, rebuilt) < 0.5 * relative_error(expected, concealed)


def test_the_settings_reach_libopus() -> None:
    frames = frames_of(voiced(frames=10))

    def octets(bitrate: int) -> int:
        encoder = OpusEncoder(bitrate=bitrate)
        return sum(len(encoder.encode(frame)) for frame in frames)

    assert octets(16000) < 0.6 * octets(32000)
    with pytest.raises(LocalError):
        OpusEncoder(complexity=11)


def test_expected_loss_can_change_mid_stream() -> None:
    encoder = OpusEncoder(expected_loss=0)
    frames = frames_of(voiced(frames=4))
    encoder.encode(frames[0])
    encoder.set_expected_loss(30)

    assert encoder.encode(frames[1])


@pytest.mark.parametrize("size", [0, FRAME_BYTES - 2, FRAME_BYTES + 2, 2 * FRAME_BYTES])
def test_a_frame_of_the_wrong_size_is_our_mistake(size: int) -> None:
    with pytest.raises(LocalError):
        OpusEncoder().encode(bytes(size))


@pytest.mark.parametrize("samples", [0, 100, 5760 + 120])
def test_concealing_a_duration_libopus_cannot_make_is_our_mistake(samples: int) -> None:
    with pytest.raises(LocalError):
        OpusDecoder().conceal(samples)
    with pytest.raises(LocalError):
        OpusDecoder().decode_fec(b"\x78\x00", samples)


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(b"", id="empty"),  # RFC 6716 §3.4 [R1]
        pytest.param(b"\x03\x00", id="code-3-no-frames"),  # [R5]
        pytest.param(b"\x03\x31", id="code-3-over-120-ms"),  # [R5]
        pytest.param(b"\x01\x00\x00\x00", id="code-1-odd-length"),  # [R3]
    ],
)
def test_malformed_packets_raise_parse_error(packet: bytes) -> None:
    with pytest.raises(ParseError):
        OpusDecoder().decode(packet)
    with pytest.raises(ParseError):
        OpusDecoder().decode_fec(packet)


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_whole_samples_or_raise_parse_error(packet: bytes) -> None:
    try:
        pcm = OpusDecoder().decode(packet)
    except ParseError:
        return
    assert len(pcm) % 2 == 0 and len(pcm) <= 5760 * 2
