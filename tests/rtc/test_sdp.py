"""The SDP offer parser and answer builder, against real offers and real peers.

Fixtures in `fixtures/`: the two Chromium offers were captured from Chromium 156 (headless, on this
project's machine) with `addTransceiver` and `createDataChannel`; the Firefox offer is composed in
the shape Firefox 128 writes (session-level fingerprint and direction, `a=extmap:2/recvonly`,
hex ICE credentials, `max-message-size:1073741823`). The strongest checks hand our answers to
peers that must apply them: aiortc always, and Chromium when it is installed.
"""

import ast
import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from hypothesis import given, settings
from hypothesis import strategies as st

from voicewire.rtc import sdp
from voicewire.rtc.errors import LocalError, ParseError
from voicewire.rtc.sdp import (
    AnswerParams,
    RtpFormat,
    SdpError,
    answer_setup,
    build_answer,
    parse_offer,
)

FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = "chromium-audio-datachannel.sdp"
CHROMIUM_VIDEO = "chromium-video-audio-datachannel.sdp"
FIREFOX = "firefox-audio-datachannel.sdp"

FINGERPRINT = ":".join(f"{byte:02X}" for byte in range(32))
PARAMS = AnswerParams(
    ice_ufrag="AQEAAX8AAAEOdgkLDQ8REhMUFRYXGBkaGxw",
    ice_pwd="Zm9yIHRoZSByZWxheSBwd2Q+/",
    fingerprint=("sha-256", FINGERPRINT),
    candidate_ip="203.0.113.7",
    candidate_port=3478,
    session_id=4611686018427387904,
    session_version=2,
    ssrc=0x11223344,
    cname="vw-cname-1",
)

# A small offer in Chromium's shape; error cases below edit one line of it. Line numbers:
# 6 m=audio, 8 ice-ufrag, 9 ice-pwd, 11 fingerprint, 12 setup, 15 rtcp-mux, 16 rtpmap opus,
# 19 m=application, 26 sctp-port.
BASE = f"""v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111 110
c=IN IP4 0.0.0.0
a=ice-ufrag:Ab3x
a=ice-pwd:0123456789abcdefghijklmn
a=ice-options:trickle
a=fingerprint:sha-256 {FINGERPRINT.lower()}
a=setup:actpass
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:110 telephone-event/48000
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=ice-ufrag:Ab3x
a=ice-pwd:0123456789abcdefghijklmn
a=fingerprint:sha-256 {FINGERPRINT}
a=setup:actpass
a=mid:1
a=sctp-port:5000
"""


def fixture(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode()


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new)


def answer_lines(answer: str) -> list[str]:
    assert answer.endswith("\r\n")
    return answer.removesuffix("\r\n").split("\r\n")


def sections(answer: str) -> list[list[str]]:
    """The answer's m-sections, each as its lines from the m= line on."""
    result: list[list[str]] = []
    for line in answer_lines(answer):
        if line.startswith("m="):
            result.append([])
        if result:
            result[-1].append(line)
    return result


# --- Reading real offers -------------------------------------------------------------------------


def test_chromium_offer() -> None:
    offer = parse_offer(fixture(CHROMIUM))

    assert offer.ice_ufrag == "o1EI"
    assert offer.ice_pwd == "J8gEZ02XMIX23aqu3fEk+2nO"
    assert offer.ice_options == ("trickle",)
    assert offer.fingerprints == (
        (
            "sha-256",
            "FB:88:64:80:EF:4D:4A:4C:99:9A:56:E0:49:8C:D8:E8:"
            "37:D0:C6:7C:F8:71:A2:02:54:B1:57:89:41:6E:49:93",
        ),
    )
    assert offer.setup == "actpass"
    assert offer.bundle_groups == (("0", "1"),)
    assert [(m.kind, m.mid, m.port) for m in offer.media] == [
        ("audio", "0", 9),
        ("application", "1", 9),
    ]

    audio = offer.audio
    assert audio is offer.media[0]
    assert (audio.proto, audio.direction, audio.rtcp_mux, audio.rtcp_rsize) == (
        "UDP/TLS/RTP/SAVPF",
        "sendrecv",
        True,
        True,
    )
    assert audio.formats == ("111", "63", "9", "0", "8", "13", "110", "126")
    assert audio.audio is not None
    assert audio.audio.opus_payload_type == 111
    assert audio.audio.opus_fmtp == "minptime=10;useinbandfec=1"
    assert audio.audio.telephone_event_payload_type == 110  # the 48 kHz one, not 126 (8 kHz)
    assert [(e.id, e.uri.rsplit("/", 1)[-1]) for e in audio.audio.extmaps] == [
        (1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        (2, "abs-send-time"),
        (3, "draft-holmer-rmcat-transport-wide-cc-extensions-01"),
        (4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ]
    assert audio.audio.ssrc == 2812234727
    assert audio.audio.cname == "YKsrmhAuDCOLAH9J"
    assert audio.audio.msid == "- cd8ab15b-e147-449f-9970-fd4f5c28a430"

    data = offer.data_channel
    assert data is offer.media[1]
    assert data.data_channel == sdp.DataChannelParameters(sctp_port=5000, max_message_size=262144)
    assert data.audio is None


def test_firefox_offer_inherits_session_level_values() -> None:
    offer = parse_offer(fixture(FIREFOX))

    # The fingerprint and the direction are only at the session level in Firefox's offers.
    assert offer.fingerprints[0][0] == "sha-256"
    assert offer.fingerprints[0][1].startswith("4E:0B:91:3A")
    assert (offer.ice_ufrag, offer.ice_pwd) == ("9f4a2c71", "d27c1e4bb90f3a6e5c8427f0e16ad953")
    assert offer.audio.direction == "sendrecv"
    assert offer.audio.rtcp_rsize is False
    assert offer.audio.audio is not None
    assert offer.audio.audio.opus_payload_type == 109
    assert offer.audio.audio.opus_fmtp == "maxplaybackrate=48000;stereo=1;useinbandfec=1"
    assert offer.audio.audio.telephone_event_payload_type is None  # only telephone-event/8000
    assert [e.id for e in offer.audio.audio.extmaps] == [1, 2, 3]  # 2 carries a direction
    assert offer.audio.audio.msid == (
        "{4a7e2f1c-9b3d-4e85-a610-c2f7d8e93b54} {e19c5b72-0d4a-4f3e-b867-5a2c91d0f4e8}"
    )
    assert offer.audio.audio.cname == "{b8d2e6f0-7c41-4a93-95e2-1f6d3c08a7b9}"
    assert offer.data_channel is not None
    assert offer.data_channel.data_channel == sdp.DataChannelParameters(5000, 1073741823)


def test_video_first_offer_keeps_the_video_section_as_bundle_tag() -> None:
    offer = parse_offer(fixture(CHROMIUM_VIDEO))

    assert [m.kind for m in offer.media] == ["video", "audio", "application"]
    assert offer.media[0].audio is None
    assert (offer.audio_index, offer.data_channel_index) == (1, 2)
    assert offer.bundle_groups == (("0", "1", "2"),)
    # The video section stays, inactive, echoing VP8 (the first format, RFC 3264 §6.1).
    assert offer.inactive == ((0, RtpFormat(96, "VP8/90000", None)),)
    assert offer.ice_ufrag == "gn5C"


@pytest.mark.parametrize("name", [CHROMIUM, CHROMIUM_VIDEO, FIREFOX])
def test_line_endings_do_not_matter(name: str) -> None:
    text = fixture(name)
    assert "\r\n" in text

    assert parse_offer(text.replace("\r\n", "\n")) == parse_offer(text)


def test_transport_values_come_from_the_bundle_tag() -> None:
    # RFC 8843 §7.3.1 and §7.4: the first accepted mid of the group is the tag, and its values
    # apply to the whole group; the copies in other sections are not read.
    lines = edit("BUNDLE 0 1", "BUNDLE 1 0").split("\n")
    assert lines[20] == "a=ice-ufrag:Ab3x"
    lines[20] = "a=ice-ufrag:Dat1"  # line 21, in the data channel section

    assert parse_offer("\n".join(lines)).ice_ufrag == "Dat1"
    assert parse_offer(BASE.replace("a=ice-ufrag:Ab3x", "a=ice-ufrag:Aud1", 1)).ice_ufrag == "Aud1"


def test_media_level_values_override_session_level() -> None:
    text = edit("t=0 0\n", "t=0 0\na=ice-ufrag:Sess\na=setup:passive\na=recvonly\n")
    offer = parse_offer(text)

    assert offer.ice_ufrag == "Ab3x"
    assert offer.setup == "actpass"
    assert offer.audio.direction == "sendrecv"
    assert offer.data_channel is not None
    assert offer.data_channel.direction == "recvonly"


def test_session_level_values_fill_in() -> None:
    text = "\n".join(
        line
        for line in BASE.splitlines()
        if not line.startswith(("a=ice-", "a=fingerprint", "a=setup"))
    )
    text = edit(
        "t=0 0\n",
        f"t=0 0\na=ice-ufrag:Sess\na=ice-pwd:0123456789abcdefghijklmn\n"
        f"a=fingerprint:SHA-256 {FINGERPRINT}\na=setup:passive\n",
        text + "\n",
    )
    offer = parse_offer(text)

    assert (offer.ice_ufrag, offer.setup, offer.ice_options) == ("Sess", "passive", ())
    assert offer.fingerprints == (("sha-256", FINGERPRINT),)


def test_fingerprints_are_normalised_and_all_kept() -> None:
    text = edit(
        "a=setup:actpass\na=mid:0", f"a=fingerprint:sha-1 {'ab:' * 19}cd\na=setup:actpass\na=mid:0"
    )
    offer = parse_offer(text)

    assert offer.fingerprints == (("sha-256", FINGERPRINT), ("sha-1", "AB:" * 19 + "CD"))


def test_missing_setup_means_active() -> None:
    offer = parse_offer(BASE.replace("a=setup:actpass\n", ""))

    assert offer.setup == "active"  # RFC 4145 §4
    assert answer_setup(offer, PARAMS) == "passive"


def test_defaults_for_data_channel_and_optional_audio_values() -> None:
    text = BASE.replace("a=sctp-port:5000\n", "").replace(
        "a=fmtp:111 minptime=10;useinbandfec=1\n", ""
    )
    offer = parse_offer(text.replace("a=rtpmap:110 telephone-event/48000\n", ""))

    assert offer.data_channel is not None
    assert offer.data_channel.data_channel == sdp.DataChannelParameters(5000, 65536)
    assert offer.audio.audio == sdp.AudioParameters(
        opus_payload_type=111,
        opus_fmtp="",
        telephone_event_payload_type=None,
        extmaps=(),
        ssrc=None,
        cname=None,
        msid=None,
    )


def test_opus_is_found_case_insensitively_and_in_format_order() -> None:
    text = edit("111 110\n", "96 111 110\n").replace(
        "a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus/48000/2\na=rtpmap:96 OPUS/48000/2"
    )

    audio = parse_offer(text).audio.audio
    assert audio is not None
    assert audio.opus_payload_type == 96


def test_first_live_audio_section_wins() -> None:
    disabled = "m=audio 0 UDP/TLS/RTP/SAVPF 111\na=mid:x\na=rtpmap:111 opus/48000/2\na=rtcp-mux\n"
    offer = parse_offer(edit("m=audio 9", disabled + "m=audio 9"))

    assert [m.port for m in offer.media] == [0, 9, 9]
    assert offer.audio_index == 1


@pytest.mark.parametrize("profile", ["RTP/AVP", "RTP/SAVPF", "TCP/DTLS/RTP/SAVPF"])
def test_legacy_and_tcp_profiles_are_answered_in_kind(profile: str) -> None:
    # RFC 8829 §5.1.2: accept them, answer with the same; the fingerprint means DTLS-SRTP.
    text = edit("m=audio 9 UDP/TLS/RTP/SAVPF", f"m=audio 9 {profile}")
    text = edit("UDP/DTLS/SCTP", "TCP/DTLS/SCTP", text)
    offer = parse_offer(text)

    assert offer.data_channel is not None
    audio, data = sections(build_answer(offer, PARAMS))
    assert audio[0] == f"m=audio 3478 {profile} 111"
    assert data[0] == "m=application 3478 TCP/DTLS/SCTP webrtc-datachannel"


def test_bundle_only_section_with_port_zero_is_live() -> None:
    text = edit("m=application 9", "m=application 0").replace(
        "a=sctp-port", "a=bundle-only\na=sctp-port"
    )
    offer = parse_offer(text)

    assert offer.data_channel is not None
    assert offer.data_channel.bundle_only


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param(BASE.replace("a=group:BUNDLE 0 1\n", ""), "no bundle", id="no-bundle"),
        pytest.param(
            edit("BUNDLE 0 1", "BUNDLE 0\na=group:BUNDLE 1"), "two groups", id="two-groups"
        ),
        pytest.param(edit("m=application 9", "m=application 0"), "disabled", id="disabled"),
        pytest.param(
            edit("UDP/DTLS/SCTP webrtc-datachannel", "DTLS/SCTP 5000"), "legacy", id="legacy-sctp"
        ),
    ],
)
def test_data_channel_outside_the_audio_bundle_is_not_taken(text: str, why: str) -> None:
    offer = parse_offer(text)

    assert offer.data_channel is None, why
    assert offer.audio_index == 0


def test_other_sections_keep_their_m_line() -> None:
    offer = parse_offer(fixture(CHROMIUM_VIDEO))

    assert offer.media[0].formats[:3] == ("96", "97", "102")
    assert offer.media[0].rtcp_mux


# --- Errors: each says what is wrong and where ---------------------------------------------------

ERRORS = [
    ("", "the offer is empty"),
    ("x" * (64 * 1024 + 1), "larger than 65536 bytes"),
    ("v=0\n" + "é" * 40000, "larger than 65536 bytes"),
    ("v=0\n" * 2001, "more than 2000 lines"),
    (edit("s=-", "s=" + "x" * 4095), "line 3: longer than 4096 characters"),
    (edit("a=mid:0", "a=mid:0\n\n"), "line 14: not an SDP line"),
    (edit("s=-", "s"), "line 3: not an SDP line"),
    (edit("a=mid:0", "x=1"), "line 13: unknown line type 'x'"),
    (edit("a=mid:0", "a=mid:\x00"), "line 13: a= has a control or non-ASCII character"),
    (edit("a=mid:0", "a=mid:é"), "line 13: a= has a control or non-ASCII character"),
    (edit("a=mid:0", "a=mid:0\rx"), "line 13: a= has a control or non-ASCII character"),
    (edit("s=-", "s=\x00"), "line 3: s= has a control or non-ASCII character"),
    ("o=- 1 1 IN IP4 0.0.0.0\n", "line 1: expected v= here"),
    ("v=0\n", "the offer: expected o= here"),
    (edit("s=-\n", ""), "line 3: expected s= here"),
    (edit("v=0", "v=1"), "line 1: only SDP version 0"),
    (edit("o=- 4611731400430051336 2", "o=- x 2"), "line 2: o= is not"),
    (edit("t=0 0", "t=3034423619 3042462419"), "line 4: t=3034423619 3042462419 bounds"),
    (edit("t=0 0\n", ""), "no t= line"),
    (edit("t=0 0", "t=0 0\ns=again"), "line 5: a second s= line"),
    (edit("a=mid:0", "t=0 0"), "line 13: t= belongs before the first m= line"),
    (edit("a=mid:0", "a=:0"), "line 13: a=:0 is not an attribute name"),
    (edit("a=rtpmap:111 opus/48000/2\n", ""), "the offer has no audio section with Opus"),
    (edit("m=audio 9", "m=audio 0"), "the offer has no audio section with Opus"),
    (edit("opus/48000/2", "opus/48000"), "line 16: Opus must be described as opus/48000/2"),
    (edit("UDP/TLS/RTP/SAVPF", "RTP/XAVP"), "line 6: the audio section uses RTP/XAVP"),
    (edit("a=rtcp-mux\n", ""), "line 6: the audio section has no a=rtcp-mux"),
    (
        edit("111 110", "72 110").replace("a=rtpmap:111", "a=rtpmap:72"),
        "line 16: payload type 72 collides with RTCP",
    ),
    (
        "\n".join(line for line in BASE.splitlines() if "ice-ufrag" not in line),
        "no ICE credentials (a=ice-ufrag/a=ice-pwd) for the m-section on line 6",
    ),
    (edit("a=ice-ufrag:Ab3x", "a=ice-ufrag:Ab3"), "line 8: a=ice-ufrag must be 4-256 ice-chars"),
    (edit("a=ice-ufrag:Ab3x", "a=ice-ufrag:Ab-3x"), "line 8: a=ice-ufrag must be 4-256"),
    (edit("a=ice-pwd:0123456789abcdefghijklmn", "a=ice-pwd:short"), "line 9: a=ice-pwd must be"),
    (edit("a=ice-ufrag:Ab3x", "a=ice-ufrag"), "line 8: a=ice-ufrag has no value"),
    (
        edit("a=ice-options:trickle", "a=ice-ufrag:Ab3y"),
        "line 10: a second a=ice-ufrag in the same section (the first is on line 8)",
    ),
    (
        edit(f"a=fingerprint:sha-256 {FINGERPRINT.lower()}", "a=fingerprint:sha-256"),
        "line 11: a=fingerprint has no hash value",
    ),
    (
        edit(f"a=fingerprint:sha-256 {FINGERPRINT.lower()}", "a=fingerprint:sha-256 AB:CD:E"),
        "line 11: the a=fingerprint value is not hex pairs",
    ),
    (
        edit(
            f"a=fingerprint:sha-256 {FINGERPRINT.lower()}", f"a=fingerprint:sha@256 {FINGERPRINT}"
        ),
        "line 11: 'sha@256' is not a hash function name",
    ),
    (
        "\n".join(line for line in BASE.splitlines() if "fingerprint" not in line),
        "no DTLS fingerprint (a=fingerprint) for the m-section on line 6",
    ),
    (
        edit("a=setup:actpass", "a=setup:holdconn", BASE),
        "line 12: a=setup:holdconn cannot be answered",
    ),
    (
        edit("a=setup:actpass", "a=setup:both"),
        "line 12: a=setup:both is not actpass, active or passive",
    ),
    (edit("t=0 0", "t=0 0\na=ice-lite"), "the client is ICE-lite (a=ice-lite)"),
    (
        edit("a=sendrecv", "a=sendrecv\na=recvonly"),
        "line 15: a second direction attribute a=recvonly",
    ),
    (edit("a=mid:1", "a=mid:0"), "line 19: mid '0' is also the mid of the m-section on line 6"),
    (edit("a=mid:0", "a=mid:{0}:"), "line 13: a=mid:{0}: is not a token"),
    (edit("BUNDLE 0 1", "BUNDLE 0 1 2"), "line 5: a=group:BUNDLE names mid '2'"),
    (edit("BUNDLE 0 1", "BUNDLE 0 1\na=group:BUNDLE 1"), "line 6: mid '1' is in two BUNDLE groups"),
    (
        edit("m=audio 9 UDP/TLS/RTP/SAVPF 111 110", "m=audio 9 UDP/TLS/RTP/SAVPF"),
        "line 6: m= is not",
    ),
    (edit("m=audio 9 UDP", "m=audio  9 UDP"), "line 6: m= is not"),
    (edit("m=audio 9", "m=audio 70000"), "line 6: port '70000' is not 0-65535"),
    (edit("m=audio 9", "m=audio 9/2"), "line 6: port counts"),
    (edit("m=audio 9", "m=aud:io 9"), "line 6: media type 'aud:io' is not a token"),
    (edit("UDP/TLS/RTP/SAVPF", "udp/tls/rtp/savpf"), "line 6: 'udp/tls/rtp/savpf' is not a WebRTC"),
    (edit("111 110\n", "111 abc\n"), "line 6: 'abc' is not an RTP payload type"),
    (edit("111 110\n", "111 128\n"), "line 6: '128' is not an RTP payload type"),
    (edit("SCTP webrtc-datachannel", "SCTP web:rtc"), "line 19: a format is not a token"),
    (edit("a=rtpmap:110 telephone-event/48000", "a=rtpmap:110"), "line 18: a=rtpmap:110 is not"),
    (
        edit("a=rtpmap:110 telephone-event/48000", "a=rtpmap:111 PCMU/8000"),
        "line 18: a second a=rtpmap for payload type 111 (the first is on line 16)",
    ),
    (edit("a=fmtp:111 minptime", "a=fmtp:opus minptime"), "line 17: a=fmtp:opus minptime"),
    (
        edit("a=rtpmap:110 telephone-event/48000", "a=fmtp:111 stereo=1"),
        "line 18: a second a=fmtp for payload type 111 (the first is on line 17)",
    ),
    (edit("a=mid:0", "a=mid:0\na=extmap:x urn:x"), "line 14: a=extmap:x urn:x is not"),
    (edit("a=mid:0", "a=mid:0\na=extmap:1/sideways urn:x"), "line 14: a=extmap:1/sideways"),
    (edit("a=mid:0", "a=mid:0\na=extmap:0 urn:x"), "line 14: a=extmap id 0 is out of range"),
    (edit("a=mid:0", "a=mid:0\na=ssrc:4294967296 cname:x"), "line 14: a=ssrc:4294967296 cname:x"),
    (edit("a=mid:0", "a=mid:0\na=ssrc:cname"), "line 14: a=ssrc:cname is not"),
    (edit("a=sctp-port:5000", "a=sctp-port:0"), "line 26: a=sctp-port:0 is not 1-65535"),
    (
        edit("a=sctp-port:5000", "a=max-message-size:-1"),
        "line 26: a=max-message-size:-1 is not a byte count",
    ),
    (edit("a=mid:0", "a=mid:0\na=msid:a\na=msid:b"), "line 15: a second a=msid"),
    (
        BASE + "".join(f"m=video 0 RTP/AVP 0\na=mid:v{i}\n" for i in range(31)),
        "line 87: more than 32 m-sections",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_error_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(SdpError) as raised:
        parse_offer(text)

    assert message in str(raised.value)


def test_sdp_error_is_a_parse_error() -> None:
    assert issubclass(SdpError, ParseError)


def test_long_values_are_cut_in_messages() -> None:
    with pytest.raises(SdpError) as raised:
        parse_offer(edit("a=setup:actpass", "a=setup:" + "x" * 1000))

    assert len(str(raised.value)) < 200


# --- Answers -------------------------------------------------------------------------------------


def test_answer_to_chromium_reparses_with_the_expected_structure() -> None:
    offer = parse_offer(fixture(CHROMIUM))
    answer = build_answer(offer, PARAMS)
    parsed = aiortc_sdp.SessionDescription.parse(answer)

    lines = answer_lines(answer)
    assert lines[:6] == [
        "v=0",
        "o=- 4611686018427387904 2 IN IP4 203.0.113.7",
        "s=-",
        "t=0 0",
        "a=ice-lite",
        "a=group:BUNDLE 0 1",
    ]
    assert [(m.kind, m.port, m.profile, m.rtp.muxId) for m in parsed.media] == [
        ("audio", 3478, "UDP/TLS/RTP/SAVPF", "0"),
        ("application", 3478, "UDP/DTLS/SCTP", "1"),
    ]
    for media in parsed.media:
        assert media.host == "203.0.113.7"
        assert media.ice.iceLite
        assert (media.ice.usernameFragment, media.ice.password) == (
            PARAMS.ice_ufrag,
            PARAMS.ice_pwd,
        )
        assert [(f.algorithm, f.value) for f in media.dtls.fingerprints] == [
            ("sha-256", FINGERPRINT)
        ]
        assert media.dtls.role == "client"  # a=setup:active
        assert media.ice_candidates_complete
        [candidate] = media.ice_candidates
        assert (candidate.component, candidate.protocol, candidate.type) == (1, "UDP", "host")
        assert (candidate.ip, candidate.port, candidate.priority) == (
            "203.0.113.7",
            3478,
            2130706431,
        )

    audio, data = parsed.media
    assert audio.direction == "sendrecv"
    assert audio.rtcp_mux
    assert [(c.payloadType, c.mimeType, c.clockRate, c.channels) for c in audio.rtp.codecs] == [
        (111, "audio/opus", 48000, 2)
    ]
    assert audio.rtp.codecs[0].parameters == {"minptime": 10, "useinbandfec": 1}
    assert audio.rtp.headerExtensions == []  # RFC 8285 §6: an answer may accept none
    assert audio.msid == "voicewire voicewire-audio"
    assert [(s.ssrc, s.cname) for s in audio.ssrc] == [(0x11223344, "vw-cname-1")]
    assert data.fmt == ["webrtc-datachannel"]
    assert data.sctp_port == 5000
    assert data.sctpCapabilities.maxMessageSize == 65536


def test_answer_keeps_a_video_first_section_as_the_inactive_bundle_tag() -> None:
    answer = build_answer(parse_offer(fixture(CHROMIUM_VIDEO)), PARAMS)
    video, audio, data = sections(answer)

    # Not rejected, so the offer's first mid stays the tag (RFC 8843 §7.3.1) and carries the
    # transport; one echoed format and inactive (RFC 3264 §6.1); no msid or SSRC: we never send.
    assert video == [
        "m=video 3478 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 203.0.113.7",
        "a=mid:0",
        "a=inactive",
        "a=rtcp-mux",
        f"a=ice-ufrag:{PARAMS.ice_ufrag}",
        f"a=ice-pwd:{PARAMS.ice_pwd}",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:active",
        "a=candidate:1 1 UDP 2130706431 203.0.113.7 3478 typ host",
        "a=end-of-candidates",
        "a=rtpmap:96 VP8/90000",
    ]
    assert "a=group:BUNDLE 0 1 2" in answer_lines(answer)
    assert audio[0] == "m=audio 3478 UDP/TLS/RTP/SAVPF 111"
    assert data[0] == "m=application 3478 UDP/DTLS/SCTP webrtc-datachannel"
    parsed = aiortc_sdp.SessionDescription.parse(answer).media
    assert [m.port for m in parsed] == [3478, 3478, 3478]
    assert (parsed[0].direction, parsed[0].msid, parsed[0].ssrc) == ("inactive", None, [])
    assert [(c.payloadType, c.mimeType) for c in parsed[0].rtp.codecs] == [(96, "video/VP8")]


# A video section in the shape Chromium writes, cut short; `video_offer` adds it to BASE.
VIDEO = f"""m=video 9 UDP/TLS/RTP/SAVPF 96 97 102
c=IN IP4 0.0.0.0
a=ice-ufrag:Ab3x
a=ice-pwd:0123456789abcdefghijklmn
a=fingerprint:sha-256 {FINGERPRINT}
a=setup:actpass
a=mid:v
a=sendrecv
a=msid:- 2e24b163
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=ssrc:3043617068 cname:6YAibWEcJ/JNA3xa
"""


def video_offer(video: str = VIDEO, group: str | None = "v 0 1", *, first: bool = True) -> str:
    """BASE with `video` before the audio (or after the data channel), BUNDLE as `group`."""
    text = BASE.replace(
        "a=group:BUNDLE 0 1\n", "" if group is None else f"a=group:BUNDLE {group}\n"
    )
    return edit("m=audio 9", video + "m=audio 9", text) if first else text + video


def test_rtp_media_after_the_audio_is_inactive_too() -> None:
    # The same answer whatever order the app added its tracks in.
    answer = build_answer(parse_offer(video_offer(group="0 1 v", first=False)), PARAMS)

    assert "a=group:BUNDLE 0 1 v" in answer_lines(answer)
    video = sections(answer)[2]
    assert video[:5] == [
        "m=video 3478 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 203.0.113.7",
        "a=mid:v",
        "a=inactive",
        "a=rtcp-mux",
    ]
    assert video[-1] == "a=rtpmap:96 VP8/90000"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(video_offer(group=None), id="no-bundle"),
        pytest.param(video_offer(group="0 1\na=group:BUNDLE v"), id="other-group"),
        pytest.param(
            video_offer(group=None).replace("t=0 0\n", "t=0 0\na=group:LS v 0\n"), id="ls-group"
        ),
    ],
)
def test_rtp_media_outside_the_audio_bundle_is_rejected(text: str) -> None:
    offer = parse_offer(text)
    answer = build_answer(offer, PARAMS)

    assert offer.inactive == ()
    assert sections(answer)[0] == [
        "m=video 0 UDP/TLS/RTP/SAVPF 0",
        "c=IN IP4 203.0.113.7",
        "a=mid:v",
    ]
    assert not any(line.startswith("a=group:BUNDLE v") for line in answer_lines(answer))


def test_the_video_tag_gives_the_transport_values() -> None:
    # RFC 8843 §7.3.1 and §7.4: the tag stays the video section, so its values are the group's.
    offer = parse_offer(video_offer(edit("a=ice-ufrag:Ab3x", "a=ice-ufrag:Vid1", VIDEO)))

    assert offer.ice_ufrag == "Vid1"


@pytest.mark.parametrize("offered", ["sendrecv", "sendonly", "recvonly", "inactive"])
def test_inactive_whatever_the_offered_direction(offered: str) -> None:
    video = sections(
        build_answer(parse_offer(video_offer(edit("a=sendrecv", f"a={offered}", VIDEO))), PARAMS)
    )[0]

    assert "a=inactive" in video
    assert not any(
        line.startswith(("a=msid", "a=ssrc", "a=sendrecv", "a=sendonly", "a=recvonly"))
        for line in video
    )


VP8_RTX = ["a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96"]
H264 = ["a=rtpmap:102 H264/90000", "a=fmtp:102 packetization-mode=1;profile-level-id=42e01f"]


@pytest.mark.parametrize(
    ("formats", "attributes", "echoed"),
    [
        pytest.param("96 97", VP8_RTX, RtpFormat(96, "VP8/90000", None), id="first"),
        pytest.param("97 96", VP8_RTX, RtpFormat(96, "VP8/90000", None), id="not-rtx"),
        pytest.param(
            "102 96",
            H264 + VP8_RTX,
            RtpFormat(102, "H264/90000", "packetization-mode=1;profile-level-id=42e01f"),
            id="fmtp-echoed",
        ),
        pytest.param(
            "118 120 121 122 45",
            [
                "a=rtpmap:118 red/90000",
                "a=rtpmap:120 ulpfec/90000",
                "a=rtpmap:121 flexfec-03/90000",
                "a=rtpmap:122 CN/90000",
                "a=rtpmap:45 AV1/90000",
            ],
            RtpFormat(45, "AV1/90000", None),
            id="no-repair-format",
        ),
        pytest.param(
            "72 98",
            ["a=rtpmap:72 VP8/90000", "a=rtpmap:98 VP9/90000"],
            RtpFormat(98, "VP9/90000", None),
            id="rtcp-range",
        ),
        pytest.param(
            "111 98",
            ["a=rtpmap:111 VP8/90000", "a=rtpmap:98 VP9/90000"],
            RtpFormat(98, "VP9/90000", None),
            id="opus-pt",
        ),
        pytest.param("120 34", [], RtpFormat(34, None, None), id="static-without-rtpmap"),
        pytest.param(
            "96", ["a=rtpmap:96 vp8/90000"], RtpFormat(96, "vp8/90000", None), id="as-written"
        ),
        pytest.param("97", VP8_RTX[1:], None, id="rtx-only"),
        pytest.param("120", [], None, id="dynamic-without-rtpmap"),
        pytest.param("13", [], None, id="static-cn"),
    ],
)
def test_the_echoed_format_can_stand_alone(
    formats: str, attributes: list[str], echoed: RtpFormat | None
) -> None:
    video = f"m=video 9 UDP/TLS/RTP/SAVPF {formats}\na=mid:v\na=rtcp-mux\n"
    offer = parse_offer(
        video_offer(video + "".join(f"{a}\n" for a in attributes), "0 1 v", first=False)
    )

    assert offer.inactive == (() if echoed is None else ((2, echoed),))
    m_line = sections(build_answer(offer, PARAMS))[2][0]
    assert m_line == (
        "m=video 0 UDP/TLS/RTP/SAVPF 0"
        if echoed is None
        else f"m=video 3478 UDP/TLS/RTP/SAVPF {echoed.payload_type}"
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param(("a=rtcp-mux\n", ""), "RTCP not muxed (RFC 8843 §9.3.1.1)", id="no-rtcp-mux"),
        pytest.param(
            ("UDP/TLS/RTP/SAVPF", "RTP/AVPF"), "another proto (RFC 8843 §9.1)", id="proto"
        ),
        pytest.param(
            ("m=video 9", "m=video 0"), "disabled by the offerer (RFC 8843 §7.3.1)", id="port-0"
        ),
        pytest.param(("96 97 102", "97"), "nothing to echo alone", id="rtx-only"),
    ],
)
def test_a_tag_that_cannot_be_kept_moves_to_the_audio(change: tuple[str, str], why: str) -> None:
    # RFC 8843 §7.3.1: the next accepted mid becomes the tag. Only Chromium under `balanced`
    # applies that (module docstring), but no browser writes such a first section.
    offer = parse_offer(video_offer(edit(*change, VIDEO)))
    answer = build_answer(offer, PARAMS)

    assert offer.inactive == (), why
    assert sections(answer)[0][0].startswith("m=video 0 "), why
    assert "a=group:BUNDLE 0 1" in answer_lines(answer)


def test_bundle_only_video_is_inactive_on_our_port() -> None:
    # RFC 8843 §6 and §7.1.3: port 0 with a=bundle-only, and no transport or rtcp-mux of its own;
    # RFC 9143 §7.3 (RFC 8843's successor) gives it the BUNDLE port like every bundled section.
    video = "m=video 0 UDP/TLS/RTP/SAVPF 96\na=mid:v\na=bundle-only\na=rtpmap:96 VP8/90000\n"
    answer = build_answer(parse_offer(video_offer(video, "0 1 v", first=False)), PARAMS)

    assert sections(answer)[2][:5] == [
        "m=video 3478 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 203.0.113.7",
        "a=mid:v",
        "a=inactive",
        "a=rtcp-mux",
    ]
    assert "a=bundle-only" not in answer_lines(answer)


def test_video_rtpmaps_are_read_only_when_bundled() -> None:
    broken = edit("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8", VIDEO)

    with pytest.raises(SdpError, match=r"line 17: a=rtpmap:96 VP8 is not"):
        parse_offer(video_offer(broken))
    assert parse_offer(video_offer(broken, group=None)).inactive == ()


def test_a_second_audio_section_echoes_a_codec_other_than_our_opus() -> None:
    # RFC 8843 §9.1.1: our Opus payload type, answered with our own a=fmtp, stays the audio's.
    extra = "m=audio 9 UDP/TLS/RTP/SAVPF 111 9\na=mid:2\na=rtcp-mux\n"
    extra += "a=rtpmap:111 opus/48000/2\na=rtpmap:9 G722/8000\n"
    answer = build_answer(parse_offer(edit("BUNDLE 0 1", "BUNDLE 0 1 2") + extra), PARAMS)

    second = sections(answer)[2]
    assert second[0] == "m=audio 3478 UDP/TLS/RTP/SAVPF 9"
    assert ("a=inactive", "a=rtpmap:9 G722/8000") == (second[3], second[-1])
    assert "a=group:BUNDLE 0 1 2" in answer_lines(answer)


def test_answer_to_firefox() -> None:
    answer = build_answer(parse_offer(fixture(FIREFOX)), PARAMS)
    audio, data = sections(answer)

    assert "a=rtpmap:109 opus/48000/2" in audio
    assert "a=fmtp:109 minptime=10;useinbandfec=1" in audio
    assert "a=mid:1" in data
    assert aiortc_sdp.SessionDescription.parse(answer).group[0].items == ["0", "1"]


def test_answer_without_bundle_rejects_the_data_channel() -> None:
    offer = parse_offer(BASE.replace("a=group:BUNDLE 0 1\n", ""))
    answer = build_answer(offer, PARAMS)

    assert not any(line.startswith("a=group") for line in answer_lines(answer))
    assert sections(answer)[1] == [
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 203.0.113.7",
        "a=mid:1",
    ]


def test_answer_keeps_no_mid_where_the_offer_has_none() -> None:
    text = (
        BASE.replace("a=group:BUNDLE 0 1\n", "").replace("a=mid:0\n", "").replace("a=mid:1\n", "")
    )
    answer = build_answer(parse_offer(text), PARAMS)

    assert not any(line.startswith("a=mid") for line in answer_lines(answer))


def test_answer_rejects_a_second_audio_section_and_unknown_media() -> None:
    extra = "m=audio 9 UDP/TLS/RTP/SAVPF 111\na=mid:2\na=rtcp-mux\na=rtpmap:111 opus/48000/2\n"
    extra += "m=text 9 RTP/AVP 98\na=mid:3\nm=message 9 TCP/MSRP *\na=mid:4\n"
    answer = build_answer(parse_offer(edit("BUNDLE 0 1", "BUNDLE 0 1 2 3 4") + extra), PARAMS)

    assert [s[0] for s in sections(answer)[2:]] == [
        "m=audio 0 UDP/TLS/RTP/SAVPF 0",
        "m=text 0 RTP/AVP 0",
        "m=message 0 TCP/MSRP *",
    ]
    assert "a=group:BUNDLE 0 1" in answer_lines(answer)


def test_answer_with_ipv6_candidate() -> None:
    params = AnswerParams(**{**as_kwargs(PARAMS), "candidate_ip": "2001:db8::7"})
    answer = build_answer(parse_offer(BASE), params)

    assert "c=IN IP6 2001:db8::7" in answer_lines(answer)
    assert "o=- 4611686018427387904 2 IN IP6 2001:db8::7" in answer_lines(answer)
    assert "a=candidate:1 1 UDP 2130706431 2001:db8::7 3478 typ host" in answer_lines(answer)
    aiortc_sdp.SessionDescription.parse(answer)


@pytest.mark.parametrize(
    ("offered", "wanted", "answered"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "sendrecv", "recvonly"),
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendrecv", "recvonly", "recvonly"),
        ("sendonly", "sendonly", "inactive"),
        ("recvonly", "recvonly", "inactive"),
    ],
)
def test_answer_direction_follows_rfc_3264(offered: str, wanted: str, answered: str) -> None:
    params = AnswerParams(**{**as_kwargs(PARAMS), "direction": wanted})
    audio = sections(build_answer(parse_offer(edit("a=sendrecv", f"a={offered}")), params))[0]

    assert f"a={answered}" in audio
    # RFC 8829 §5.3.1: msid (and our SSRC) only when we send.
    sending = answered in ("sendrecv", "sendonly")
    assert ("a=msid:voicewire voicewire-audio" in audio) is sending
    assert any(line.startswith("a=ssrc:") for line in audio) is sending


@pytest.mark.parametrize(
    ("offered", "preferred", "answered"),
    [
        ("actpass", "active", "active"),
        ("actpass", "passive", "passive"),
        ("active", "active", "passive"),
        ("passive", "passive", "active"),
    ],
)
def test_answer_setup_follows_rfc_4145(offered: str, preferred: str, answered: str) -> None:
    params = AnswerParams(**{**as_kwargs(PARAMS), "dtls_role": preferred})
    offer = parse_offer(BASE.replace("a=setup:actpass", f"a=setup:{offered}"))

    assert answer_setup(offer, params) == answered
    assert answer_lines(build_answer(offer, params)).count(f"a=setup:{answered}") == 2


def test_answer_without_opus_fmtp() -> None:
    params = AnswerParams(**{**as_kwargs(PARAMS), "opus_fmtp": "", "max_message_size": 0})
    answer = build_answer(parse_offer(BASE), params)

    assert not any(line.startswith("a=fmtp") for line in answer_lines(answer))
    assert "a=max-message-size:0" in answer_lines(answer)


def as_kwargs(params: AnswerParams) -> dict[str, object]:
    return {name: getattr(params, name) for name in params.__slots__}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ice_ufrag": "abc"}, "ice_ufrag"),
        ({"ice_ufrag": "abc_d"}, "ice_ufrag"),
        ({"ice_pwd": "x" * 21}, "ice_pwd"),
        ({"ice_pwd": "x" * 257}, "ice_pwd"),
        ({"fingerprint": ("SHA-256", FINGERPRINT)}, "hash name"),
        ({"fingerprint": ("sha-256", FINGERPRINT.lower())}, "fingerprint value"),
        ({"fingerprint": ("sha-256", "AB:C")}, "fingerprint value"),
        ({"candidate_ip": "relay.example"}, "candidate_ip"),
        ({"candidate_ip": "0.0.0.0"}, "candidate_ip"),
        ({"candidate_ip": "fe80::1%eth0"}, "candidate_ip"),
        ({"candidate_ip": "224.0.0.1"}, "candidate_ip"),
        ({"candidate_port": 0}, "candidate_port"),
        ({"session_id": 2**63}, "session_id"),
        ({"session_version": -1}, "session_version"),
        ({"ssrc": 2**32}, "ssrc"),
        ({"cname": ""}, "cname"),
        ({"cname": "two words"}, "cname"),
        ({"stream_id": "x" * 65}, "stream_id"),
        ({"track_id": "a b"}, "track_id"),
        ({"dtls_role": "actpass"}, "dtls_role"),
        ({"opus_fmtp": "minptime=10; useinbandfec=1"}, "opus_fmtp"),
        ({"direction": "both"}, "direction"),
        ({"max_message_size": -1}, "max_message_size"),
    ],
)
def test_answer_params_are_checked(change: dict[str, object], message: str) -> None:
    with pytest.raises(LocalError, match=message):
        AnswerParams(**{**as_kwargs(PARAMS), **change})


# --- Real peers apply our answers ----------------------------------------------------------------


@pytest.mark.parametrize("policy", [RTCBundlePolicy.BALANCED, RTCBundlePolicy.MAX_BUNDLE])
@pytest.mark.parametrize(
    "kinds", [["audio", "data"], ["video", "audio", "data"], ["audio", "video"]], ids="-".join
)
async def test_aiortc_accepts_the_answer_to_its_offer(
    kinds: list[str], policy: RTCBundlePolicy
) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=policy))
    try:
        for kind in kinds:
            if kind == "data":
                pc.createDataChannel("oai-events")
            else:
                pc.addTransceiver(kind, direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        offer = parse_offer(pc.localDescription.sdp)

        assert [m.kind for m in offer.media] == [
            "application" if kind == "data" else kind for kind in kinds
        ]
        assert (offer.data_channel is not None) is ("data" in kinds)
        await pc.setRemoteDescription(RTCSessionDescription(build_answer(offer, PARAMS), "answer"))

        assert pc.signalingState == "stable"
        assert [(t.kind, t.currentDirection) for t in pc.getTransceivers()] == [
            (kind, "sendrecv" if kind == "audio" else "inactive")
            for kind in kinds
            if kind != "data"
        ]
        assert (pc.sctp is not None) is ("data" in kinds)
    finally:
        await pc.close()


CHROMIUM_OFFER = """
async ([kinds, bundlePolicy]) => {
  const pc = new RTCPeerConnection({bundlePolicy});
  for (const kind of kinds) {
    if (kind === 'data') pc.createDataChannel('oai-events');
    else pc.addTransceiver(kind, {direction: 'sendrecv'});
  }
  await pc.setLocalDescription(await pc.createOffer());
  window.pc = pc;
  return pc.localDescription.sdp;
}
"""
CHROMIUM_ANSWER = """
async (sdp) => {
  try {
    await window.pc.setRemoteDescription({type: 'answer', sdp});
    const directions = window.pc.getTransceivers().map(
      (t) => t.receiver.track.kind + ' ' + t.currentDirection);
    return ['accepted: ' + window.pc.signalingState, ...directions];
  } catch (error) {
    return [error.message];
  } finally {
    window.pc.close();
  }
}
"""
# The orders an app can add its media in: a camera before the microphone puts video first, and
# a data channel created first puts the application section first.
CHROMIUM_KINDS = [
    ["audio"],
    ["audio", "data"],
    ["audio", "video", "data"],
    ["audio", "audio", "data"],
    ["video", "audio"],
    ["video", "audio", "data"],
    ["video", "video", "audio", "data"],
    ["data", "video", "audio"],
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    """Headless Chromium under Playwright, with the loop that drives it."""
    from playwright import async_api as playwright_api

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Chromium is not installed: run `make test`, which installs it")
    loop = asyncio.new_event_loop()
    manager = playwright_api.async_playwright()
    playwright = loop.run_until_complete(manager.__aenter__())
    browser = loop.run_until_complete(
        playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
    )
    yield loop, browser
    loop.run_until_complete(browser.close())
    loop.run_until_complete(manager.__aexit__(None, None, None))
    loop.close()


@pytest.mark.parametrize("policy", ["balanced", "max-bundle", "max-compat"])
@pytest.mark.parametrize("kinds", CHROMIUM_KINDS, ids="-".join)
def test_chromium_accepts_the_answer_to_its_offer(
    chromium: tuple[asyncio.AbstractEventLoop, Any], kinds: list[str], policy: str
) -> None:
    loop, browser = chromium

    async def exchange() -> list[str]:
        page = await browser.new_page()
        try:
            offer = parse_offer(await page.evaluate(CHROMIUM_OFFER, [kinds, policy]))
            return await page.evaluate(CHROMIUM_ANSWER, build_answer(offer, PARAMS))
        finally:
            await page.close()

    # The first audio section is the call; every other one, audio or video, stays inactive
    # (JSEP's currentDirection), whichever comes first and whatever the bundle policy.
    media = [kind for kind in kinds if kind != "data"]
    first_audio = media.index("audio")
    expected = [
        f"{kind} {'sendrecv' if index == first_audio else 'inactive'}"
        for index, kind in enumerate(media)
    ]
    assert loop.run_until_complete(exchange()) == ["accepted: stable", *expected]


# --- Hostile input -------------------------------------------------------------------------------


def check_parse_and_answer(text: str) -> None:
    """Whatever the input, parse_offer raises SdpError or returns an answerable Offer."""
    try:
        offer = parse_offer(text)
    except SdpError:
        return
    answer = build_answer(offer, PARAMS)
    parsed = aiortc_sdp.SessionDescription.parse(answer)
    assert len(parsed.media) == len(offer.media)
    assert parsed.media[offer.audio_index].port == PARAMS.candidate_port


@settings(max_examples=300)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_random_text(text: str) -> None:
    check_parse_and_answer(text)


LINE_SOURCES = [fixture(CHROMIUM), fixture(FIREFOX), fixture(CHROMIUM_VIDEO), BASE]


@st.composite
def mutated_offers(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(LINE_SOURCES)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        operation = draw(st.sampled_from(["drop", "swap", "truncate", "insert", "duplicate"]))
        if operation == "drop":
            if len(lines) > 1:
                del lines[index]
        elif operation == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif operation == "truncate":
            lines[index] = lines[index][: draw(st.integers(0, len(lines[index])))]
        elif operation == "insert":
            at = draw(st.integers(0, len(lines[index])))
            noise = draw(st.text(max_size=4) | st.sampled_from([" ", ":", "/", "0", "\x00", "\r"]))
            lines[index] = lines[index][:at] + noise + lines[index][at:]
        else:
            lines.insert(index, lines[index])
    return draw(st.sampled_from(["\r\n", "\n"])).join(lines)


@settings(max_examples=600)
@given(mutated_offers())
def test_mutated_offers(text: str) -> None:
    check_parse_and_answer(text)


# Offers composed from these sections, in any order and grouping, for the answer's rules: each is
# (m= line, attributes, what the answer does with it inside the audio's BUNDLE group). Outside the
# group every one but the call's audio is rejected. The transport is at the session level.
COMPOSED = {
    "audio": (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 9",
        ["a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "a=rtpmap:9 G722/8000"],
        "inactive",  # when not the first audio: the call's Opus payload type is not echoed
    ),
    "audio-pcmu": (
        "m=audio 9 UDP/TLS/RTP/SAVPF 0 8",
        ["a=rtcp-mux", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"],
        "inactive",
    ),
    "video": ("m=video 9 UDP/TLS/RTP/SAVPF 96 97", ["a=rtcp-mux", *VP8_RTX], "inactive"),
    "video-bundle-only": (
        "m=video 0 UDP/TLS/RTP/SAVPF 96",
        ["a=bundle-only", "a=rtpmap:96 VP8/90000"],
        "inactive",
    ),
    "video-rtx-only": ("m=video 9 UDP/TLS/RTP/SAVPF 97", ["a=rtcp-mux", *VP8_RTX[1:]], "rejected"),
    "video-no-mux": ("m=video 9 UDP/TLS/RTP/SAVPF 96", VP8_RTX[:1], "rejected"),
    "video-disabled": ("m=video 0 UDP/TLS/RTP/SAVPF 96", ["a=rtcp-mux", *VP8_RTX[:1]], "rejected"),
    "video-avpf": ("m=video 9 RTP/AVPF 96", ["a=rtcp-mux", *VP8_RTX[:1]], "rejected"),
    "data": ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel", [], "accepted"),
    "text": ("m=text 9 RTP/AVP 98", ["a=rtpmap:98 t140/1000"], "rejected"),
}


@st.composite
def composed_offers(draw: st.DrawFn) -> tuple[str, list[str], list[tuple[str, ...]]]:
    """An offer with one live Opus audio section among others, and its BUNDLE groups."""
    kinds = draw(st.lists(st.sampled_from(sorted(COMPOSED)), max_size=5))
    kinds.insert(draw(st.integers(0, len(kinds))), "audio")
    mids = [f"m{index}" for index in range(len(kinds))]
    grouped = draw(st.permutations(mids))[: draw(st.integers(0, len(mids)))]
    split = draw(st.integers(0, len(grouped)))
    groups = [tuple(group) for group in (grouped[:split], grouped[split:]) if group]
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-ufrag:Ab3x"]
    lines += ["a=ice-pwd:0123456789abcdefghijklmn", f"a=fingerprint:sha-256 {FINGERPRINT}"]
    lines += [f"a=group:BUNDLE {' '.join(group)}" for group in groups]
    for kind, mid in zip(kinds, mids, strict=True):
        m_line, attributes, _ = COMPOSED[kind]
        lines += [m_line, f"a=mid:{mid}", *attributes]
    return "\r\n".join(lines) + "\r\n", kinds, groups


@settings(max_examples=300)
@given(composed_offers())
def test_answer_rules_hold_for_any_order_and_grouping(
    composed: tuple[str, list[str], list[tuple[str, ...]]],
) -> None:
    text, kinds, groups = composed
    offer = parse_offer(text)
    answer = build_answer(offer, PARAMS)
    audio = kinds.index("audio")
    group = next((g for g in groups if f"m{audio}" in g), ())
    first_data = next(
        (i for i, kind in enumerate(kinds) if kind == "data" and f"m{i}" in group), None
    )
    expected = [
        "sendrecv"
        if index == audio
        else "accepted"
        if index == first_data
        else COMPOSED[kind][2]
        if f"m{index}" in group and kind != "data"
        else "rejected"
        for index, kind in enumerate(kinds)
    ]

    answered = sections(answer)
    assert [s[0].split(" ")[::2] for s in answered] == [
        [f"m={m.kind}", m.proto] for m in offer.media
    ]
    assert [next(line for line in s if line.startswith("a=mid:")) for s in answered] == [
        f"a=mid:m{index}" for index in range(len(kinds))
    ]
    assert [s[0].split(" ")[1] != "0" for s in answered] == [e != "rejected" for e in expected]
    kept = [f"m{index}" for index, e in enumerate(expected) if e != "rejected"]
    bundle = [mid for mid in group if mid in kept]
    # RFC 8843 §7.3: the kept mids of the audio's group in the offer's order; §7.3.1: the offer's
    # own tag stays the tag whenever the answer keeps it.
    assert [line for line in answer_lines(answer) if line.startswith("a=group:")] == (
        [f"a=group:BUNDLE {' '.join(bundle)}"] if bundle else []
    )
    if group and group[0] in kept:
        assert bundle[0] == group[0]
    for index, lines in enumerate(answered):
        if expected[index] == "inactive":
            # RFC 3264 §6.1: one of the offered formats, never the call's Opus one.
            [pt] = lines[0].split(" ")[3:]
            assert pt in offer.media[index].formats and pt != "111"
            assert {"a=inactive", "a=rtcp-mux"} <= set(lines)
            assert not [line for line in lines if line.startswith(("a=ssrc", "a=msid"))]
            assert [line for line in lines if line.startswith("a=rtpmap")] == [
                line for line in COMPOSED[kinds[index]][1] if line.startswith(f"a=rtpmap:{pt} ")
            ]
    aiortc_sdp.SessionDescription.parse(answer)


def test_module_imports_no_io() -> None:
    """voicewire.rtc is sans-IO: no clock, sockets, event loop or global randomness."""
    tree = ast.parse(Path(sdp.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }

    assert not imported & {"asyncio", "socket", "time", "random"}
