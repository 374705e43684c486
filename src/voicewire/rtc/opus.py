"""Opus for the media path: 48 kHz, 20 ms frames, PCM16 mono in and out, through libopus.

Why a ctypes binding of our own
-------------------------------
Each echo session encodes and decodes 50 frames/s each way, so what Python adds around libopus
per frame is paid 10,000 times a second on a core carrying 100 sessions, and DESIGN §9 wants all
non-codec work under a quarter of the codec work. Per 20 ms frame, on the target class of
machine (AMD EPYC, Debian libopus 1.3.1, 500 frames of synthetic voiced speech, 32 kb/s,
complexity 5, best of 10 runs, each binding in the same run as the C loop it is compared with):

==========================  ========  ========  ==============================================
binding                     encode    decode    notes
==========================  ========  ========  ==============================================
libopus called from C       138 µs    29 µs     the codec work itself: the bound
this module (ctypes)        +1.1 µs   +2.3 µs   0.4 / 0.65 µs of it is the call and the copy
                                                (libopus stubbed out); the rest is the loop
opuslib 3.0.1 (ctypes)      +2.5 µs   +40 µs    allocates and zeroes 15 kB per decode; its
                                                `inband_fec` setter is broken
PyAV 18 (FFmpeg + libopus)  +15 µs    +10 µs    an AVFrame or AVPacket per call and FFmpeg's
                                                frame queue; no way to ask for PLC or FEC
==========================  ========  ========  ==============================================

So the module calls libopus itself through `ctypes`, and it reaches the two calls a receiver
needs that PyAV does not expose: packet-loss concealment and in-band FEC decoding (`opus_decode`
with no data, and with `decode_fec=1`). The codec states live in Python-owned buffers
(`opus_*_init` on memory from `ctypes.create_string_buffer`), so nothing has to be freed by hand
and no finalizer runs at interpreter exit.

libopus comes from the operating system: Debian's `libopus0` package (`libopus.so.0`), or
Homebrew's `opus` on macOS (`libopus.0.dylib`).
"""

from __future__ import annotations

import ctypes

from voicewire.rtc.errors import LocalError, ParseError

SAMPLE_RATE = 48000
"""Opus always runs its RTP clock at 48 kHz, whatever the audio bandwidth (RFC 7587 §4.1)."""
FRAME_SAMPLES = 960
"""Samples in one 20 ms frame at 48 kHz: the packet duration the transceiver sends and expects."""
FRAME_BYTES = FRAME_SAMPLES * 2
"""Bytes of PCM16 mono in one 20 ms frame."""

_MAX_PACKET = 1500
"""Room for one encoded 20 ms packet: one frame is at most 1275 bytes (RFC 6716 §3.4 [R2])."""
_MAX_DECODED_SAMPLES = 5760
"""120 ms, the longest packet Opus allows (RFC 6716 §3.2.1), so any ptime the peer uses decodes."""

_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_DTX = 4016
_SET_SIGNAL = 4024
_SIGNAL_VOICE = 3001


def _load_libopus() -> ctypes.CDLL:
    for name in ("libopus.so.0", "libopus.0.dylib"):
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        break
    else:
        raise ImportError("libopus not found: install Debian's libopus0 (or Homebrew's opus)")
    # No `argtypes` on the per-frame calls: every argument passed to them is a ctypes buffer
    # (passed as a pointer), bytes or None (a pointer or NULL), or a small int, which ctypes'
    # default conversions pass as C would, and the checked conversion would add 0.45 µs to each
    # encode and decode. The variadic `opus_encoder_ctl` does get its fixed arguments typed:
    # ctypes then passes the rest the variadic way, which differs from a plain call on Apple arm64.
    library.opus_encoder_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int]
    library.opus_strerror.restype = ctypes.c_char_p
    return library


_libopus = _load_libopus()


def _error(status: int) -> str:
    return _libopus.opus_strerror(status).decode()


class OpusEncoder:
    """Encodes our outbound speech: 20 ms PCM16 mono frames at 48 kHz into Opus packets.

    The settings, and why:

    - Application VOIP: libopus tunes its mode decisions and high-pass filtering for speech.
    - `bitrate` 32 kb/s: within RFC 7587 §3.1.1's 28-40 kb/s for fullband speech. 24 and
      32 kb/s cost the same CPU; 40 kb/s costs 30 % more (libopus gives CELT a larger share).
    - `complexity` 3: the encoder dominates each session's CPU (decode is ~29 µs whatever the
      settings) and the transceiver must carry 100+ of them per core. Per 20 ms frame, libopus
      1.3.1 on the target machine class (32 kb/s, FEC on, 5 % expected loss; best of 10 runs):

      ==========  ====  ====  ====  ====  ====  ====  ====  ====  ====  ====  ====
      complexity     0     1     2     3     4     5     6     7     8     9    10
      encode µs     66    78   101   109   138   138   180   201   255   345   346
      ==========  ====  ====  ====  ====  ====  ====  ====  ====  ====  ====  ====

      One echo session's codec work (an encode and a decode, 50 times a second) is then 8.4 ms/s
      at complexity 5, a bound of 120 sessions per core before any other work, and 6.9 ms/s at 3,
      a bound of 145: DESIGN §9 asks for 100 sessions and 0.8x the bound, which 5 cannot meet
      here and 3 can. What 4-5 add is a finer SILK analysis (two delayed-decision states instead
      of one, warped noise shaping, interpolated NLSFs: `silk_setup_complexity`); their quality
      gain is not measured here. Raise it on faster cores.
    - In-band FEC on, with `expected_loss` percent: libopus only spends bits on the LBRR copy
      of the previous frame when it expects loss, so the session feeds it the loss the peer
      reports in RTCP (`set_expected_loss`); the default starts with a little protection. The
      LBRR copy and the VOICE hint below cost no measurable encoder time (< 1 µs).
    - DTX off: the agent's audio is paced at a steady 50 packets/s, which keeps the relay's flow
      and the client's NAT binding fresh and lets a restarted relay relearn the session from the
      next downstream packet (DESIGN §4); DTX would save bandwidth, not CPU.
    - Signal hint VOICE: tells the mode decision the input is speech, never music.
    """

    __slots__ = ("_state", "_packet", "_frame_bytes")

    def __init__(
        self,
        *,
        bitrate: int = 32000,
        complexity: int = 3,
        fec: bool = True,
        expected_loss: int = 5,
        channels: int = 1,
    ) -> None:
        """Set up an encoder; `channels=2` exists only so tests can make a browser-like stream."""
        self._state = ctypes.create_string_buffer(_libopus.opus_encoder_get_size(channels))
        _check(_libopus.opus_encoder_init(self._state, SAMPLE_RATE, channels, _APPLICATION_VOIP))
        self._packet = ctypes.create_string_buffer(_MAX_PACKET)
        self._frame_bytes = FRAME_BYTES * channels
        self._control(_SET_BITRATE, bitrate)
        self._control(_SET_COMPLEXITY, complexity)
        self._control(_SET_INBAND_FEC, int(fec))
        self._control(_SET_PACKET_LOSS_PERC, expected_loss)
        self._control(_SET_DTX, 0)
        self._control(_SET_SIGNAL, _SIGNAL_VOICE)

    def set_expected_loss(self, percent: int) -> None:
        """Tell the encoder how much loss to protect against with FEC, 0-100 (from RTCP)."""
        self._control(_SET_PACKET_LOSS_PERC, percent)

    def encode(self, pcm: bytes) -> bytes:
        """One Opus packet from one 20 ms frame of native-endian PCM16, `FRAME_BYTES` a channel."""
        if len(pcm) != self._frame_bytes:  # libopus would read past the end of a short one
            raise LocalError(f"a frame is {self._frame_bytes} bytes, got {len(pcm)}")
        size = _libopus.opus_encode(self._state, pcm, FRAME_SAMPLES, self._packet, _MAX_PACKET)
        if size < 0:
            raise LocalError(f"opus_encode: {_error(size)}")
        return self._packet[:size]  # type: ignore[return-value]  # bytes: c_char array slice

    def _control(self, request: int, value: int) -> None:
        _check(_libopus.opus_encoder_ctl(self._state, request, value))


class OpusDecoder:
    """Decodes the peer's Opus packets to PCM16 mono at 48 kHz, and covers for lost ones.

    Browsers negotiate `opus/48000/2` but send mono content; a decoder made for one channel
    downmixes any stereo packet itself (libopus decodes every stream to the channel count it was
    created with), so the caller always gets mono.

    Errors: a packet libopus cannot read raises `ParseError`, like any bad network input.
    """

    __slots__ = ("_state", "_pcm")

    def __init__(self) -> None:
        self._state = ctypes.create_string_buffer(_libopus.opus_decoder_get_size(1))
        _check(_libopus.opus_decoder_init(self._state, SAMPLE_RATE, 1))
        self._pcm = ctypes.create_string_buffer(_MAX_DECODED_SAMPLES * 2)

    def decode(self, payload: bytes) -> bytes:
        """PCM16 mono for one packet: `FRAME_BYTES` for the usual 20 ms packet."""
        if not payload:  # RFC 6716 §3.4 [R1]: a packet is at least one byte
            raise ParseError("empty Opus packet")
        return self._run(payload, len(payload), _MAX_DECODED_SAMPLES, 0)

    def conceal(self, samples: int = FRAME_SAMPLES) -> bytes:
        """Packet-loss concealment for `samples` of missing audio (a multiple of 2.5 ms)."""
        _check_duration(samples)
        return self._run(None, 0, samples, 0)

    def decode_fec(self, next_payload: bytes, samples: int = FRAME_SAMPLES) -> bytes:
        """The lost frame before `next_payload`, rebuilt from the FEC data that packet carries.

        RFC 7587 §3.2 / RFC 6716 §2.1.7: a SILK or hybrid packet may carry a low-bitrate copy
        of the previous frame. libopus conceals instead when it carries none, so this always
        returns `samples` of audio (a multiple of 2.5 ms). Decode `next_payload` itself
        afterwards, as usual.
        """
        _check_duration(samples)
        if not next_payload:
            raise ParseError("empty Opus packet")
        return self._run(next_payload, len(next_payload), samples, 1)

    def _run(self, data: bytes | None, size: int, samples: int, fec: int) -> bytes:
        decoded = _libopus.opus_decode(self._state, data, size, self._pcm, samples, fec)
        if decoded < 0:
            raise ParseError(f"opus_decode: {_error(decoded)}")
        return self._pcm[: decoded * 2]  # type: ignore[return-value]  # bytes, as above


def _check_duration(samples: int) -> None:
    # libopus writes `samples` into our buffer, so it must fit; it refuses other than 2.5 ms steps.
    if not 0 < samples <= _MAX_DECODED_SAMPLES or samples % (SAMPLE_RATE // 400):
        raise LocalError(f"{samples} samples is not a whole number of 2.5 ms steps up to 120 ms")


def _check(status: int) -> None:
    if status < 0:
        raise LocalError(f"libopus: {_error(status)}")
