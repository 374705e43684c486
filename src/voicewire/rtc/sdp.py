"""SDP offers in, SDP answers out: the one place voicewire reads or writes SDP.

Theory of operation
-------------------
A client starts a call by POSTing an SDP offer (RFC 8866 syntax, RFC 3264 offer/answer, profiled
for WebRTC by JSEP, RFC 8829). The gateway hands the text to `parse_offer`, which checks it against
what a voice server can answer and returns an `Offer`: the plain values a session needs (the
client's ICE credentials and DTLS fingerprints, the Opus payload type, the SCTP port). The gateway
then calls `build_answer` with the transceiver's own values (`AnswerParams`) and returns the text.
Past the gateway nothing sees SDP.

What gets answered:

- Audio: the first live audio section that offers Opus (RFC 7587). It must multiplex RTCP with
  RTP (RFC 5761): our one candidate is ICE component 1, so there is no component 2 for RTCP.
- The data channel: the first `webrtc-datachannel` section over DTLS/SCTP (RFC 8841; not the
  pre-standard `DTLS/SCTP 5000` with `a=sctpmap`), if it is in the audio's BUNDLE group. A
  session is one ICE and one DTLS transport; a data channel outside the bundle would need a
  second pair.
- Other RTP media in the audio's BUNDLE group (a camera track, a second microphone): accepted but
  inactive. The answer section keeps the offer's mid, says `a=inactive` and `a=rtcp-mux`, echoes
  exactly one of the section's offered formats and announces no `a=ssrc` or `a=msid`; neither side
  sends on it (RFC 3264 §6.1), it only holds its place in the bundle. See "Media we do not want".
- Everything else (RTP media outside that group or in an offer without BUNDLE, media we do not
  know, a second data channel) is rejected with port 0 (RFC 3264 §6) and left out of the BUNDLE
  group (RFC 8843 §7.3.3).

With BUNDLE, the transport values (ICE credentials, fingerprints, setup role) are those of the
section the answer makes its tag: the first accepted one in the group's order (RFC 8843 §7.3.1),
whose values the offerer then applies to the whole group (RFC 8843 §7.4). Other sections' copies
are not read. Candidates in the offer are not read either: an ICE-lite server learns the client's
address from its connectivity checks (RFC 8445 §2.5).

Media we do not want
--------------------
The first mid of an offer's BUNDLE group is the offerer's suggested tag (RFC 8843 §7.2.1), and a
browser puts there whatever the app added first: a camera track added before the microphone makes
it a video section. Rejecting it is what goes wrong:

- RFC 8843 §7.3.1 lets an answerer that rejects the suggested tag take the next mid instead, but
  JSEP (RFC 8829 §5.3.1) says that rejecting the offerer-tagged section rejects every section of
  its group, so a browser need not follow a moved tag. Chromium does not under `max-bundle`: it
  made one transport, the first mid's, and fails to apply such an answer ("Failed to setup RTCP
  mux", Chromium 156); aiortc refuses any answer with a rejected section, which carries no ICE
  credentials (aiortc 1.16). Nor can the answer drop the group: Chromium refuses to take an
  m-section out of a `max-bundle` group.
- Accepting the section inactive meets both texts: it is not rejected, so §7.3.1 keeps it as the
  tag and JSEP's rule never applies; the transport is shared (§7.3), and the one RTP session of
  the bundle (§9.1) carries only our audio because nobody sends on an inactive section. Chromium
  (every bundle policy, either order) and aiortc apply it; `tests/rtc/test_sdp.py` has them do so.

This is done for every RTP section of the audio's group, not only the tag, so the answer does not
depend on the order an app added its tracks in. The echoed format is the first offered one that
can stand alone (not rtx, red, FEC, comfort noise or telephone-event, which need a codec beside
them), does not look like RTCP on a muxed port (RFC 5761 §4: 64-95), and is not the audio's Opus
payload type, which the answer describes with our own `a=fmtp` (a payload type reused in a bundle
needs the same codec configuration everywhere, RFC 8843 §9.1.1). A section with no such format,
another transport protocol than the audio's (§9.1 wants one), or no `a=rtcp-mux` (and no
`a=bundle-only`, which leaves it to the tag, §9.3.1.1) is rejected; if it was the suggested tag,
the tag moves to the next accepted mid (§7.3.1), which only Chromium under `balanced` follows. No
browser we know writes such a first section: all of theirs mux RTCP, share one proto and offer a
video codec.

Nothing of this reaches the session, which knows only the Opus payload type: a client does not
send on an inactive section, and a packet that arrives for one anyway carries that section's
payload types, never the Opus one (the echo skips it), so the audio stream drops and counts it
like any other stray packet.

Why a parser of our own: the offer is hostile input from the internet, and a general SDP library
either accepts far more than this needs or trips over it with assertions. This one reads the
lines it needs, checks their grammar, ignores attributes it does not know (RFC 8866 §5.13), and
raises `SdpError` naming the line and what is wrong, because that message goes back to the
developer in the HTTP 400. Size limits come first so a hostile offer costs little to refuse.
"""

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from voicewire.rtc.errors import LocalError, ParseError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_SCTP_PORT",
    "MAX_LINES",
    "MAX_LINE_LENGTH",
    "MAX_MEDIA_SECTIONS",
    "MAX_OFFER_BYTES",
    "SCTP_PORT",
    "AnswerParams",
    "AnswerSetup",
    "AudioParameters",
    "DataChannelParameters",
    "Direction",
    "Extmap",
    "MediaSection",
    "Offer",
    "OfferSetup",
    "RtpFormat",
    "SdpError",
    "answer_setup",
    "build_answer",
    "parse_offer",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
"""A media direction attribute (RFC 8866 §6.7), always from the sender's point of view."""

OfferSetup = Literal["actpass", "active", "passive"]
"""The DTLS roles an offer can ask for and we can answer (RFC 4145 §4, RFC 8842 §5)."""

AnswerSetup = Literal["active", "passive"]
"""Our DTLS role: `active` sends the ClientHello, `passive` waits for it (RFC 8842 §5.3)."""

MAX_OFFER_BYTES = 64 * 1024
"""Largest offer read, in UTF-8 bytes. A browser's audio + data channel offer is about 2 KiB."""
MAX_LINES = 2000
"""Most lines read; even an offer with every candidate of a multi-homed host has a few hundred."""
MAX_LINE_LENGTH = 4096
"""Longest line read, in characters."""
MAX_MEDIA_SECTIONS = 32
"""Most m-sections read: each is answered, so this bounds the answer too."""

SCTP_PORT = 5000
"""The SCTP port in our answers, the one every WebRTC stack uses (RFC 8841 §5.1)."""
DEFAULT_SCTP_PORT = 5000
"""The offerer's SCTP port when it sends no `a=sctp-port` (RFC 8841 §5.1)."""
DEFAULT_MAX_MESSAGE_SIZE = 65536
"""The largest data channel message of a peer that sends no `a=max-message-size` (RFC 8841 §6.1),
and the one we announce unless told otherwise."""

# RFC 8445 §5.1.2.1: priority = 2^24 * type preference (126 for host) + 2^8 * local preference
# (65535: our only address) + (256 - component ID 1).
_HOST_PRIORITY = (126 << 24) + (65535 << 8) + 255

_DIRECTIONS: frozenset[str] = frozenset(get_args(Direction))
_SETUPS: frozenset[str] = frozenset(get_args(OfferSetup))
# RFC 8829 §5.1.2: an answerer must take any of these for media and answer with the same one;
# DTLS-SRTP is what the fingerprint says, whatever the profile name.
_RTP_PROFILES = frozenset(
    {
        "UDP/TLS/RTP/SAVPF",
        "UDP/TLS/RTP/SAVP",
        "TCP/DTLS/RTP/SAVPF",
        "TCP/DTLS/RTP/SAVP",
        "RTP/SAVPF",
        "RTP/SAVP",
        "RTP/AVPF",
        "RTP/AVP",
    }
)
_DATA_CHANNEL_PROTOS = frozenset({"UDP/DTLS/SCTP", "TCP/DTLS/SCTP"})  # RFC 8841 §4.1
_DATA_CHANNEL_FORMAT = "webrtc-datachannel"  # RFC 8832 §8.1
# Formats that mean nothing without a codec beside them, so an inactive section never echoes one
# alone: retransmission (RFC 4588), redundancy (RFC 2198), FEC (RFC 5109, RFC 8627), comfort noise
# (RFC 3389) and DTMF events (RFC 4733).
_NOT_ALONE = frozenset({"rtx", "red", "ulpfec", "flexfec", "flexfec-03", "cn", "telephone-event"})
# RFC 3551 §6: the static payload types with a codec assigned, which need no a=rtpmap (13 is CN).
_STATIC_PAYLOAD_TYPES = frozenset({*range(13), *range(14, 19), 25, 26, 28, *range(31, 35)}) - {1, 2}

_MEDIA_TYPES = frozenset("icbka")  # RFC 8866 §5: the lines a media description may have
_LINE_TYPES = _MEDIA_TYPES | frozenset("vosuepztrm")
_FREE_TEXT_TYPES = frozenset("si")  # RFC 8866 §5.3-5.4: session name and information are text

_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_VISIBLE = re.compile(r"[\x21-\x7e]*")
_TEXT = re.compile(r"[^\x00\r]*")  # RFC 8866 §9 byte-string, less the CR a bare LF split leaves
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 8866 §9 token
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]*")  # RFC 8839 §5.1 ice-char
_PROTO = re.compile(r"[A-Z]+(?:/[A-Z]+)*")  # every proto a WebRTC peer offers (RFC 8829 §5.1.2)
_DIGITS = re.compile(r"[0-9]{1,20}")
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")  # RFC 8122 §5 fingerprint
_RTPMAP = re.compile(r"([0-9]{1,3}) ([^ /]+)/([0-9]{1,9})(?:/([0-9]{1,3}))?")  # RFC 8866 §6.6
_FMTP = re.compile(r"([0-9]{1,3}) (\S.*)")  # RFC 8866 §6.15, for RTP formats
_EXTMAP = re.compile(r"([0-9]{1,5})(?:/([a-z]+))? (\S+)(?: .*)?")  # RFC 8285 §7
_SSRC = re.compile(r"([0-9]{1,10}) ([^ :]+)(?::(.*))?")  # RFC 5576 §4.1


class SdpError(ParseError):
    """The offer cannot be read or cannot be answered; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Extmap:
    """One RTP header extension the offerer proposes (`a=extmap`, RFC 8285 §5)."""

    id: int
    """The local identifier the offerer would put in packets: 1-255, or 4096-4351 to negotiate."""
    uri: str
    """The extension's name, e.g. `urn:ietf:params:rtp-hdrext:ssrc-audio-level`."""


@dataclass(frozen=True, slots=True)
class AudioParameters:
    """What an audio section with Opus tells us about the client's audio."""

    opus_payload_type: int
    """The payload type of `a=rtpmap:<pt> opus/48000/2` (RFC 7587 §7), first in format order."""
    opus_fmtp: str
    """That payload type's `a=fmtp` parameters as written, e.g. `minptime=10;useinbandfec=1`."""
    telephone_event_payload_type: int | None
    """The payload type of `telephone-event/48000` (RFC 4733 §7), if offered."""
    extmaps: tuple[Extmap, ...]
    """The offered header extensions, in order. Our answers accept none (RFC 8285 §6)."""
    ssrc: int | None
    """The SSRC the client will send from: its first `a=ssrc` (RFC 5576 §4.1), if announced."""
    cname: str | None
    """That SSRC's `cname` (RFC 5576 §6.1), if announced."""
    msid: str | None
    """The sender's `a=msid` value, `<stream id> <track id>` (RFC 8830 §2), if announced."""


@dataclass(frozen=True, slots=True)
class DataChannelParameters:
    """What a `webrtc-datachannel` section tells us about the client's SCTP (RFC 8841)."""

    sctp_port: int
    """The client's SCTP port (`a=sctp-port`, RFC 8841 §5); 5000 when not given."""
    max_message_size: int
    """The largest message the client takes (`a=max-message-size`, RFC 8841 §6); 0: no limit."""


@dataclass(frozen=True, slots=True)
class RtpFormat:
    """The one offered RTP format an inactive answer section echoes (RFC 3264 §6.1)."""

    payload_type: int
    """The format's payload type, from the m= line."""
    rtpmap: str | None
    """Its `a=rtpmap` after the payload type, as written, e.g. `VP8/90000`; None for a static
    payload type offered without one (RFC 3551 §6)."""
    fmtp: str | None
    """Its `a=fmtp` parameters as written, if any (RFC 8866 §6.15)."""


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One offered m-section, whatever its kind; the answer has one per offered section."""

    kind: str
    """The media type of the m= line: `audio`, `video`, `application`, ..."""
    port: int
    """The m= line port; 0 disables the section unless it is `bundle_only` (RFC 8843 §6)."""
    proto: str
    """The transport protocol of the m= line, e.g. `UDP/TLS/RTP/SAVPF`; answers echo it."""
    formats: tuple[str, ...]
    """The m= line formats: payload type numbers for RTP, `webrtc-datachannel` for SCTP."""
    mid: str | None
    """`a=mid` (RFC 5888 §4), the name BUNDLE groups and the answer use for the section."""
    direction: Direction
    """The offerer's direction here, inherited from the session level, else sendrecv."""
    rtcp_mux: bool
    """Whether `a=rtcp-mux` offers RTCP on the RTP port (RFC 5761 §5.1.3)."""
    rtcp_rsize: bool
    """Whether `a=rtcp-rsize` offers reduced-size RTCP (RFC 5506 §5)."""
    bundle_only: bool
    """Whether `a=bundle-only` asks to use this section only inside a BUNDLE group (RFC 8843 §6)."""
    audio: AudioParameters | None
    """Set for an RTP audio section that offers Opus."""
    data_channel: DataChannelParameters | None
    """Set for a `webrtc-datachannel` application section over DTLS/SCTP."""


@dataclass(frozen=True, slots=True)
class Offer:
    """A client's offer, reduced to what a voice session needs and checked to be answerable.

    The transport values are the BUNDLE tag's, or the audio section's without BUNDLE, each taken
    from the media level when there, else from the session level (RFC 8839 §5.4, RFC 8122 §5).
    """

    ice_ufrag: str
    """The client's ICE username fragment: the second half of every check's USERNAME."""
    ice_pwd: str
    """The client's ICE password. A lite agent sends no checks, so it never signs with it, but an
    offer without one is malformed (RFC 8839 §5.4)."""
    ice_options: tuple[str, ...]
    """The client's `a=ice-options` tags (RFC 8839 §5.6), e.g. `("trickle",)`."""
    fingerprints: tuple[tuple[str, str], ...]
    """The client's certificate fingerprints as (lowercase hash name, uppercase hex value)."""
    setup: OfferSetup
    """The client's DTLS role offer (`a=setup`); `active` when absent (RFC 4145 §4)."""
    media: tuple[MediaSection, ...]
    """Every m-section, in offer order."""
    bundle_groups: tuple[tuple[str, ...], ...]
    """Each `a=group:BUNDLE` as its mids, in order (RFC 8843 §5); all name existing sections."""
    audio_index: int
    """Which of `media` the answer accepts as the call's audio."""
    data_channel_index: int | None
    """Which of `media` the answer accepts as the data channel, if any."""
    inactive: tuple[tuple[int, RtpFormat], ...]
    """The sections the answer accepts but leaves inactive, as (index in `media`, the one format it
    echoes), in offer order: the audio's BUNDLE group's other RTP media (module docstring)."""

    @property
    def audio(self) -> MediaSection:
        """The section the answer accepts as the call's audio."""
        return self.media[self.audio_index]

    @property
    def data_channel(self) -> MediaSection | None:
        """The section the answer accepts as the data channel, if any."""
        return None if self.data_channel_index is None else self.media[self.data_channel_index]


@dataclass(frozen=True, slots=True)
class AnswerParams:
    """Our side of the answer: the transceiver's transport, identity and audio stream.

    Values are checked at construction and a bad one raises `LocalError`: they come from our own
    code, and an answer built from them must not fail in the browser for a reason we could see.
    """

    ice_ufrag: str
    """Our ICE username fragment, the session's routing token: 4-256 ice-chars (RFC 8839 §5.4)."""
    ice_pwd: str
    """Our ICE password, 22-256 ice-chars (RFC 8839 §5.4), drawn by the caller from its RNG."""
    fingerprint: tuple[str, str]
    """Our certificate's fingerprint as (hash name, uppercase hex value), e.g. `("sha-256", ..)`."""
    candidate_ip: str
    """The relay's public IP address: the host candidate the client checks against."""
    candidate_port: int
    """The relay's public UDP port."""
    session_id: int
    """The o= line's session id, below 2**63 (RFC 3264 §5); the caller picks it."""
    session_version: int
    """The o= line's session version, below 2**63 (RFC 3264 §5): it starts below 2**62 - 1 and
    grows with each new answer in a session."""
    ssrc: int
    """The SSRC our audio is sent from (RFC 3550 §8), announced so the client can demultiplex."""
    cname: str
    """Our RTCP CNAME (RFC 7022): printable ASCII without spaces, at most 255 characters."""
    stream_id: str = "voicewire"
    """The MediaStream id of `a=msid` (RFC 8830 §2): what the browser's track event reports."""
    track_id: str = "voicewire-audio"
    """The track id of `a=msid` (RFC 8830 §2)."""
    dtls_role: AnswerSetup = "active"
    """Our DTLS role when the offer leaves the choice to us (`actpass`). `active`, as OpenAI's
    answers do: we send the ClientHello as soon as the first check arrives, saving a round trip
    that waiting for the browser's would cost."""
    opus_fmtp: str = "minptime=10;useinbandfec=1"
    """The Opus parameters we ask the client to send with (RFC 7587 §6.1); empty for none."""
    direction: Direction = "sendrecv"
    """What we want to do with audio; the answer narrows it by the offer (RFC 3264 §6.1)."""
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    """The largest data channel message we take (RFC 8841 §6.1); 0 means no limit."""

    def __post_init__(self) -> None:
        hash_name, value = self.fingerprint
        checks = (
            (_is_ice_string(self.ice_ufrag, 4), "ice_ufrag must be 4-256 ice-chars (RFC 8839)"),
            (_is_ice_string(self.ice_pwd, 22), "ice_pwd must be 22-256 ice-chars (RFC 8839)"),
            (
                _TOKEN.fullmatch(hash_name) is not None and hash_name == hash_name.lower(),
                "fingerprint hash name must be a lowercase token, e.g. 'sha-256' (RFC 8122 §5)",
            ),
            (
                _FINGERPRINT.fullmatch(value) is not None and value == value.upper(),
                "fingerprint value must be uppercase hex pairs joined by ':' (RFC 8122 §5)",
            ),
            (_is_candidate_address(self.candidate_ip), "candidate_ip must be a unicast address"),
            (1 <= self.candidate_port <= 65535, "candidate_port must be 1-65535"),
            (0 <= self.session_id < 2**63, "session_id must be 0 to 2**63-1 (RFC 3264 §5)"),
            (0 <= self.session_version < 2**63, "session_version must be 0 to 2**63-1"),
            (0 <= self.ssrc < 2**32, "ssrc must be a 32-bit unsigned integer"),
            (
                1 <= len(self.cname) <= 255 and _VISIBLE.fullmatch(self.cname) is not None,
                "cname must be 1-255 printable ASCII characters without spaces",
            ),
            (_is_msid_id(self.stream_id), "stream_id must be a token of 1-64 chars (RFC 8830)"),
            (_is_msid_id(self.track_id), "track_id must be a token of 1-64 chars (RFC 8830)"),
            (self.dtls_role in ("active", "passive"), "dtls_role must be 'active' or 'passive'"),
            (
                _VISIBLE.fullmatch(self.opus_fmtp) is not None,
                "opus_fmtp must be printable ASCII without spaces",
            ),
            (self.direction in _DIRECTIONS, f"direction must be one of {sorted(_DIRECTIONS)}"),
            (self.max_message_size >= 0, "max_message_size must not be negative"),
        )
        for ok, message in checks:
            if not ok:
                raise LocalError(f"AnswerParams: {message}")


def parse_offer(text: str) -> Offer:
    """Read a client's SDP offer and check that `build_answer` can answer it.

    Accepts CRLF or bare LF line endings. Raises `SdpError` for anything too large, malformed
    where it matters to us, or unanswerable (no Opus audio, RTCP not multiplexed, no ICE
    credentials or DTLS fingerprint, an ICE-lite client), with the offending line when there is
    one.
    """
    lines = _split_lines(text)
    for index, expected in enumerate("vos"):
        if index == len(lines) or lines[index].kind != expected:
            where = f"line {index + 1}" if index < len(lines) else "the offer"
            raise SdpError(f"{where}: expected {expected}= here; SDP opens with v=, o=, s=")
    first_media = next((i for i, line in enumerate(lines) if line.kind == "m"), len(lines))
    session = _parse_session(lines[:first_media])
    blocks = _media_blocks(lines[first_media:])
    sections = [_parse_section(block, session) for block in blocks]
    bundle_groups = _bundle_groups(session, sections)

    if session.flag("ice-lite"):
        # RFC 8445 §6.1.1: with two lite agents nobody sends connectivity checks, and the relay
        # finds a session only through the checks' USERNAME.
        raise SdpError(
            "the client is ICE-lite (a=ice-lite), like voicewire: nobody would send the "
            "connectivity checks a call needs (RFC 8445 §6.1.1)"
        )

    def live(section: _Section) -> bool:
        # RFC 8843 §6: port 0 disables a section unless it is bundle-only inside a BUNDLE group.
        public = section.public
        return public.port != 0 or (public.bundle_only and _group_of(public, bundle_groups) != ())

    audio = next((s for s in sections if s.public.audio is not None and live(s)), None)
    if audio is None:
        raise SdpError(
            "the offer has no audio section with Opus (a=rtpmap:<pt> opus/48000/2, RFC 7587)"
        )
    if audio.public.proto not in _RTP_PROFILES:
        raise SdpError(
            f"line {audio.line}: the audio section uses {audio.public.proto}, not one of the "
            "RTP profiles of RFC 8829 §5.1.2 such as UDP/TLS/RTP/SAVPF"
        )
    if not audio.public.rtcp_mux:
        raise SdpError(
            f"line {audio.line}: the audio section has no a=rtcp-mux; voicewire sends RTCP on "
            "the RTP port only (RFC 5761 §5.1.3)"
        )
    group = _group_of(audio.public, bundle_groups)
    data = next(
        (
            s
            for s in sections
            if s.public.data_channel is not None and live(s) and s.public.mid in group
        ),
        None,
    )
    inactive = [
        (s, echoed)
        for s in sections
        if s is not audio
        and s.public.mid in group
        and live(s)
        and (echoed := _inactive_format(s, audio.public)) is not None
    ]
    accepted = [s for s in (audio, data) if s is not None] + [s for s, _ in inactive]
    # RFC 8843 §7.3.1: the tag is the first section of the group's list the answer keeps, which
    # is the offer's own first one whenever that is RTP media we can echo (module docstring).
    tag = next((s for mid in group for s in accepted if s.public.mid == mid), audio)
    ufrag, pwd, options, fingerprints, setup = _transport(tag, session)
    return Offer(
        ice_ufrag=ufrag,
        ice_pwd=pwd,
        ice_options=options,
        fingerprints=fingerprints,
        setup=setup,
        media=tuple(s.public for s in sections),
        bundle_groups=bundle_groups,
        audio_index=sections.index(audio),
        data_channel_index=None if data is None else sections.index(data),
        inactive=tuple((sections.index(s), echoed) for s, echoed in inactive),
    )


def answer_setup(offer: Offer, params: AnswerParams) -> AnswerSetup:
    """Our DTLS role in the answer: ours to choose under `actpass`, else the offer's opposite.

    RFC 4145 §4.1 and RFC 8842 §5.3: `active` answers `passive` and the reverse. The session
    configures its DTLS engine from this (`active` is the DTLS client).
    """
    if offer.setup == "actpass":
        return params.dtls_role
    return "passive" if offer.setup == "active" else "active"


def build_answer(offer: Offer, params: AnswerParams) -> str:
    """The SDP answer to `offer`, following JSEP's initial-answer rules (RFC 8829 §5.3.1).

    One m-section per offered one, in order, with the same mids: the audio and data channel
    sections accepted, the other RTP media of their BUNDLE group accepted inactive, every other
    section rejected. We are ICE-lite with one host candidate, the relay's public address, and
    announce it complete, so the client never waits for more.
    """
    address = ipaddress.ip_address(params.candidate_ip)
    connection = f"c=IN IP{address.version} {address}"
    # RFC 8829 §5.3.1 puts these in every m-section not bundled into another; browsers' answers
    # put them in every accepted one, which also serves a client that ignores BUNDLE.
    transport = [
        f"a=ice-ufrag:{params.ice_ufrag}",
        f"a=ice-pwd:{params.ice_pwd}",
        f"a=fingerprint:{params.fingerprint[0]} {params.fingerprint[1]}",
        f"a=setup:{answer_setup(offer, params)}",
        # RFC 8839 §5.1: foundation, component 1, transport, priority, address, port, type.
        f"a=candidate:1 1 UDP {_HOST_PRIORITY} {address} {params.candidate_port} typ host",
        "a=end-of-candidates",  # RFC 8838 §13: no candidate will follow
    ]
    lines = [
        "v=0",
        f"o=- {params.session_id} {params.session_version} IN IP{address.version} {address}",
        "s=-",
        "t=0 0",
        "a=ice-lite",  # RFC 8839 §5.3: session level only
    ]
    inactive = dict(offer.inactive)
    accepted = {offer.audio.mid, None if offer.data_channel is None else offer.data_channel.mid}
    accepted |= {offer.media[index].mid for index in inactive}
    bundle = [mid for mid in _group_of(offer.audio, offer.bundle_groups) if mid in accepted]
    if bundle:
        # RFC 8843 §7.3: the accepted mids of the audio's group, in the offer's order, so the
        # first is the tag §7.3.1 selects; rejected ones stay out (§7.3.3).
        lines.append(f"a=group:BUNDLE {' '.join(bundle)}")
    for index, section in enumerate(offer.media):
        if index == offer.audio_index:
            lines += _audio_answer(section, params, connection, transport)
        elif index == offer.data_channel_index:
            lines += _data_channel_answer(section, params, connection, transport)
        elif index in inactive:
            lines += _inactive_answer(section, inactive[index], params, connection, transport)
        else:
            lines += _rejected_answer(section, connection)
    return "\r\n".join(lines) + "\r\n"


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    kind: str
    value: str


class _Level:
    """The attributes of one level (the session, or one m-section), with their line numbers."""

    __slots__ = ("_attributes",)

    def __init__(self) -> None:
        self._attributes: dict[str, list[tuple[int, str | None]]] = {}

    def add(self, line: _Line) -> None:
        name, colon, value = line.value.partition(":")
        if not _TOKEN.fullmatch(name):
            raise SdpError(f"line {line.number}: a={_show(line.value)} is not an attribute name")
        self._attributes.setdefault(name, []).append((line.number, value if colon else None))

    def flag(self, name: str) -> bool:
        return name in self._attributes

    def values(self, name: str) -> list[tuple[int, str]]:
        """Every value of a repeatable attribute, each required to be non-empty."""
        return [_required(name, entry) for entry in self._attributes.get(name, [])]

    def single(self, name: str) -> tuple[int, str] | None:
        """The value of an attribute that appears at most once per level (RFC 8829 §5.8)."""
        entries = self._attributes.get(name, [])
        if len(entries) > 1:
            raise SdpError(
                f"line {entries[1][0]}: a second a={name} in the same section "
                f"(the first is on line {entries[0][0]})"
            )
        return _required(name, entries[0]) if entries else None

    def direction(self) -> Direction | None:
        found = sorted((n, name) for name in _DIRECTIONS for n, _ in self._attributes.get(name, []))
        if len(found) > 1:
            raise SdpError(
                f"line {found[1][0]}: a second direction attribute a={found[1][1]} "
                f"(a={found[0][1]} is on line {found[0][0]})"
            )
        return cast(Direction, found[0][1]) if found else None


@dataclass(frozen=True, slots=True)
class _Section:
    line: int
    level: _Level
    public: MediaSection


def _split_lines(text: str) -> list[_Line]:
    # The cheap length check first: characters never outnumber UTF-8 bytes.
    if len(text) > MAX_OFFER_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_OFFER_BYTES:
        raise SdpError(f"the offer is larger than {MAX_OFFER_BYTES} bytes")
    raw = text.split("\n")
    if raw[-1] == "":
        raw.pop()  # RFC 8866 §5: the last line ends with a line break like the others
    if not raw:
        raise SdpError("the offer is empty")
    if len(raw) > MAX_LINES:
        raise SdpError(f"the offer has more than {MAX_LINES} lines")
    lines = []
    for number, content in enumerate(raw, start=1):
        content = content.removesuffix("\r")  # RFC 8866 §5: CRLF, but a bare LF is accepted
        if len(content) > MAX_LINE_LENGTH:
            raise SdpError(f"line {number}: longer than {MAX_LINE_LENGTH} characters")
        if len(content) < 2 or content[1] != "=":
            raise SdpError(f"line {number}: not an SDP line '<type>=<value>' (RFC 8866 §5)")
        kind, value = content[0], content[2:]
        if kind not in _LINE_TYPES:
            # RFC 8866 §5: a parser must reject a description with a type letter it does not know.
            raise SdpError(f"line {number}: unknown line type {kind!r}")
        allowed = _TEXT if kind in _FREE_TEXT_TYPES else _PRINTABLE
        if not allowed.fullmatch(value):
            raise SdpError(f"line {number}: {kind}= has a control or non-ASCII character")
        lines.append(_Line(number, kind, value))
    return lines


def _parse_session(lines: list[_Line]) -> _Level:
    """Check the session part, which opens with v=, o= and s= in that order (RFC 8866 §5)."""
    if lines[0].value != "0":
        raise SdpError("line 1: only SDP version 0 exists (RFC 8866 §5.1)")
    origin = lines[1].value.split(" ")
    if len(origin) != 6 or not (_DIGITS.fullmatch(origin[1]) and _DIGITS.fullmatch(origin[2])):
        raise SdpError(
            "line 2: o= is not '<username> <sess-id> <sess-version> <nettype> <addrtype> "
            "<address>' (RFC 8866 §5.2)"
        )
    level = _Level()
    timings = 0
    for line in lines[3:]:
        if line.kind in "vos":
            raise SdpError(f"line {line.number}: a second {line.kind}= line")
        if line.kind == "t":
            timings += 1
            if line.value != "0 0":
                raise SdpError(
                    f"line {line.number}: t={_show(line.value)} bounds the session in time; "
                    "a call is unbounded, t=0 0 (RFC 8866 §5.9)"
                )
        elif line.kind == "a":
            level.add(line)
    if not timings:
        raise SdpError("the offer has no t= line (RFC 8866 §5.9)")
    return level


def _media_blocks(lines: list[_Line]) -> list[list[_Line]]:
    blocks: list[list[_Line]] = []
    for line in lines:
        if line.kind == "m":
            if len(blocks) == MAX_MEDIA_SECTIONS:
                raise SdpError(f"line {line.number}: more than {MAX_MEDIA_SECTIONS} m-sections")
            blocks.append([line])
        elif line.kind in _MEDIA_TYPES:
            blocks[-1].append(line)
        else:
            raise SdpError(f"line {line.number}: {line.kind}= belongs before the first m= line")
    return blocks


def _parse_section(block: list[_Line], session: _Level) -> _Section:
    m_line = block[0]
    level = _Level()
    for line in block[1:]:
        if line.kind == "a":
            level.add(line)
    kind, port, proto, formats = _parse_m_line(m_line)
    mid = level.single("mid")
    if mid is not None and not _TOKEN.fullmatch(mid[1]):
        raise SdpError(f"line {mid[0]}: a=mid:{_show(mid[1])} is not a token (RFC 5888 §4)")
    public = MediaSection(
        kind=kind,
        port=port,
        proto=proto,
        formats=formats,
        mid=None if mid is None else mid[1],
        # RFC 8866 §6.7: the media level overrides the session level; sendrecv by default.
        direction=level.direction() or session.direction() or "sendrecv",
        rtcp_mux=level.flag("rtcp-mux"),
        rtcp_rsize=level.flag("rtcp-rsize"),
        bundle_only=level.flag("bundle-only"),
        audio=_audio_parameters(level, formats) if kind == "audio" and _is_rtp(proto) else None,
        data_channel=(
            _data_channel_parameters(level)
            if kind == "application"
            and proto in _DATA_CHANNEL_PROTOS
            and formats == (_DATA_CHANNEL_FORMAT,)
            else None
        ),
    )
    return _Section(m_line.number, level, public)


def _parse_m_line(line: _Line) -> tuple[str, int, str, tuple[str, ...]]:
    fields = line.value.split(" ")
    if len(fields) < 4 or "" in fields:
        raise SdpError(
            f"line {line.number}: m= is not '<media> <port> <proto> <format> ...' (RFC 8866 §5.14)"
        )
    kind, port_text, proto, *formats = fields
    if not _TOKEN.fullmatch(kind):
        raise SdpError(f"line {line.number}: media type {_show(kind)!r} is not a token")
    if "/" in port_text:
        raise SdpError(f"line {line.number}: port counts (m=<media> <port>/<count>) are not used")
    if not _DIGITS.fullmatch(port_text) or int(port_text) > 65535:
        raise SdpError(f"line {line.number}: port {_show(port_text)!r} is not 0-65535")
    if not _PROTO.fullmatch(proto):
        raise SdpError(f"line {line.number}: {_show(proto)!r} is not a WebRTC transport protocol")
    if _is_rtp(proto):
        for fmt in formats:
            # RFC 8866 §5.14: RTP formats are payload types, which RFC 3550 §5.1 gives 7 bits.
            if not (fmt.isdigit() and len(fmt) <= 3 and int(fmt) <= 127):
                raise SdpError(f"line {line.number}: {_show(fmt)!r} is not an RTP payload type")
    elif not all(_TOKEN.fullmatch(fmt) for fmt in formats):
        raise SdpError(f"line {line.number}: a format is not a token (RFC 8866 §5.14)")
    return kind, int(port_text), proto, tuple(formats)


@dataclass(frozen=True, slots=True)
class _Rtpmap:
    line: int
    name: str  # lowercase: encoding names are case-insensitive (RFC 8866 §6.6)
    clock: int
    channels: int | None
    text: str  # as written after the payload type, for an answer to echo


def _rtpmaps(level: _Level) -> dict[int, _Rtpmap]:
    rtpmaps: dict[int, _Rtpmap] = {}
    for number, value in level.values("rtpmap"):
        match = _RTPMAP.fullmatch(value)
        if match is None:
            raise SdpError(
                f"line {number}: a=rtpmap:{_show(value)} is not "
                "'<payload type> <encoding>/<clock rate>[/<channels>]' (RFC 8866 §6.6)"
            )
        pt, name, clock, channels = match.groups()
        if int(pt) in rtpmaps:
            raise SdpError(
                f"line {number}: a second a=rtpmap for payload type {pt} "
                f"(the first is on line {rtpmaps[int(pt)].line})"
            )
        rtpmaps[int(pt)] = _Rtpmap(
            number,
            name.lower(),
            int(clock),
            None if channels is None else int(channels),
            value.partition(" ")[2],
        )
    return rtpmaps


def _fmtps(level: _Level) -> dict[int, tuple[int, str]]:
    fmtps: dict[int, tuple[int, str]] = {}
    for number, value in level.values("fmtp"):
        match = _FMTP.fullmatch(value)
        if match is None:
            raise SdpError(
                f"line {number}: a=fmtp:{_show(value)} is not '<payload type> <parameters>' "
                "(RFC 8866 §6.15)"
            )
        if int(match[1]) in fmtps:
            raise SdpError(
                f"line {number}: a second a=fmtp for payload type {match[1]} "
                f"(the first is on line {fmtps[int(match[1])][0]})"
            )
        fmtps[int(match[1])] = (number, match[2])
    return fmtps


def _audio_parameters(level: _Level, formats: tuple[str, ...]) -> AudioParameters | None:
    rtpmaps = _rtpmaps(level)
    offered = [int(fmt) for fmt in formats if int(fmt) in rtpmaps]  # in preference order
    opus = next((pt for pt in offered if rtpmaps[pt].name == "opus"), None)
    if opus is None:
        return None
    number, clock, channels = rtpmaps[opus].line, rtpmaps[opus].clock, rtpmaps[opus].channels
    if (clock, channels) != (48000, 2):
        # RFC 7587 §7: always opus/48000/2, whatever the actual rate and channel count.
        raise SdpError(f"line {number}: Opus must be described as opus/48000/2 (RFC 7587 §7)")
    if 64 <= opus <= 95:
        # RFC 5761 §4: these payload types look like RTCP packet types on a muxed port.
        raise SdpError(f"line {number}: payload type {opus} collides with RTCP (RFC 5761 §4)")
    fmtps = _fmtps(level)
    ssrcs: list[tuple[int, str, str | None]] = []
    for number, value in level.values("ssrc"):
        match = _SSRC.fullmatch(value)
        if match is None or int(match[1]) >= 2**32:
            raise SdpError(
                f"line {number}: a=ssrc:{_show(value)} is not '<ssrc> <attribute>[:<value>]' "
                "with a 32-bit SSRC (RFC 5576 §4.1)"
            )
        ssrcs.append((int(match[1]), match[2], match[3]))
    sender = ssrcs[0][0] if ssrcs else None
    sender_attributes = {name: value for ssrc, name, value in ssrcs if ssrc == sender}
    msid = level.single("msid")
    return AudioParameters(
        opus_payload_type=opus,
        opus_fmtp=fmtps[opus][1] if opus in fmtps else "",
        telephone_event_payload_type=next(
            (
                pt
                for pt in offered
                if (rtpmaps[pt].name, rtpmaps[pt].clock) == ("telephone-event", 48000)
            ),
            None,
        ),
        extmaps=tuple(_extmap(number, value) for number, value in level.values("extmap")),
        ssrc=sender,
        cname=sender_attributes.get("cname"),
        msid=msid[1] if msid is not None else sender_attributes.get("msid"),
    )


def _extmap(number: int, value: str) -> Extmap:
    match = _EXTMAP.fullmatch(value)
    if match is None or (match[2] is not None and match[2] not in _DIRECTIONS):
        raise SdpError(
            f"line {number}: a=extmap:{_show(value)} is not '<id>[/<direction>] <uri>' "
            "(RFC 8285 §7)"
        )
    extension_id = int(match[1])
    # RFC 8285 §5 and §7: 1-14 one-byte, up to 255 two-byte, 4096-4351 left to the answerer.
    if not (1 <= extension_id <= 255 or 4096 <= extension_id <= 4351):
        raise SdpError(f"line {number}: a=extmap id {extension_id} is out of range (RFC 8285 §5)")
    return Extmap(extension_id, match[3])


def _inactive_format(section: _Section, audio: MediaSection) -> RtpFormat | None:
    """The format an inactive answer to `section` echoes, or None to reject it instead.

    Only called for a live section of the audio's BUNDLE group, so its lines are read only then.
    """
    public = section.public
    # RFC 8843 §9.1: one RTP session, so one proto; §9.3.1.1: RTCP muxed, which a bundle-only
    # section leaves to the tag. The audio's proto is an RTP profile, so formats are numbers.
    if public.proto != audio.proto or not (public.rtcp_mux or public.bundle_only):
        return None
    assert audio.audio is not None  # parse_offer takes only an audio section with Opus
    rtpmaps = _rtpmaps(section.level)
    fmtps = _fmtps(section.level)
    for pt in map(int, public.formats):
        if 64 <= pt <= 95 or pt == audio.audio.opus_payload_type:
            continue  # RFC 5761 §4; RFC 8843 §9.1.1 (module docstring)
        rtpmap = rtpmaps.get(pt)
        if rtpmap is None and pt not in _STATIC_PAYLOAD_TYPES:
            continue  # a dynamic payload type that the offer never describes
        if rtpmap is not None and rtpmap.name in _NOT_ALONE:
            continue
        fmtp = fmtps.get(pt)
        return RtpFormat(
            pt, None if rtpmap is None else rtpmap.text, None if fmtp is None else fmtp[1]
        )
    return None


def _data_channel_parameters(level: _Level) -> DataChannelParameters:
    port = level.single("sctp-port")
    size = level.single("max-message-size")
    if port is not None and not (_DIGITS.fullmatch(port[1]) and 1 <= int(port[1]) <= 65535):
        raise SdpError(f"line {port[0]}: a=sctp-port:{_show(port[1])} is not 1-65535 (RFC 8841 §5)")
    if size is not None and not (_DIGITS.fullmatch(size[1]) and int(size[1]) < 2**64):
        raise SdpError(
            f"line {size[0]}: a=max-message-size:{_show(size[1])} is not a byte count (RFC 8841 §6)"
        )
    return DataChannelParameters(
        sctp_port=DEFAULT_SCTP_PORT if port is None else int(port[1]),
        max_message_size=DEFAULT_MAX_MESSAGE_SIZE if size is None else int(size[1]),
    )


def _bundle_groups(session: _Level, sections: list[_Section]) -> tuple[tuple[str, ...], ...]:
    mids: dict[str, int] = {}
    for section in sections:
        mid = section.public.mid
        if mid is not None:
            if mid in mids:
                raise SdpError(
                    f"line {section.line}: mid {mid!r} is also the mid of the m-section on "
                    f"line {mids[mid]} (RFC 5888 §4)"
                )
            mids[mid] = section.line
    groups = []
    grouped: set[str] = set()
    for number, value in session.values("group"):
        semantics, *members = value.split()
        if semantics != "BUNDLE" or not members:
            continue  # other groupings (LS, FID, ...) do not change what we answer
        for mid in members:
            if mid not in mids:
                raise SdpError(
                    f"line {number}: a=group:BUNDLE names mid {_show(mid)!r}, "
                    "which no m-section has (RFC 8843 §7.2)"
                )
            if mid in grouped:
                # RFC 8843 §7.2: an m-section belongs to at most one BUNDLE group.
                raise SdpError(
                    f"line {number}: mid {mid!r} is in two BUNDLE groups (RFC 8843 §7.2)"
                )
            grouped.add(mid)
        groups.append(tuple(members))
    return tuple(groups)


def _group_of(section: MediaSection, groups: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    return next((group for group in groups if section.mid in group), ())


def _transport(
    section: _Section, session: _Level
) -> tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...], OfferSetup]:
    where = f"the m-section on line {section.line}"
    level = section.level
    # RFC 8839 §5.4: the media level overrides the session level.
    ufrag = level.single("ice-ufrag") or session.single("ice-ufrag")
    pwd = level.single("ice-pwd") or session.single("ice-pwd")
    if ufrag is None or pwd is None:
        raise SdpError(f"no ICE credentials (a=ice-ufrag/a=ice-pwd) for {where}")
    if not _is_ice_string(ufrag[1], 4):
        raise SdpError(f"line {ufrag[0]}: a=ice-ufrag must be 4-256 ice-chars (RFC 8839 §5.4)")
    if not _is_ice_string(pwd[1], 22):
        raise SdpError(f"line {pwd[0]}: a=ice-pwd must be 22-256 ice-chars (RFC 8839 §5.4)")
    options = level.single("ice-options") or session.single("ice-options")  # RFC 8839 §5.6
    # RFC 8122 §5: fingerprints at the media level replace the session level's.
    fingerprint_lines = level.values("fingerprint") or session.values("fingerprint")
    if not fingerprint_lines:
        raise SdpError(
            f"no DTLS fingerprint (a=fingerprint) for {where}; WebRTC media is DTLS-SRTP "
            "(RFC 8827 §6.5)"
        )
    setup = level.single("setup") or session.single("setup")
    if setup is not None and setup[1] not in _SETUPS:
        if setup[1] == "holdconn":
            raise SdpError(
                f"line {setup[0]}: a=setup:holdconn cannot be answered: it puts off the DTLS "
                "connection a call needs now (RFC 4145 §4)"
            )
        raise SdpError(
            f"line {setup[0]}: a=setup:{_show(setup[1])} is not actpass, active or passive "
            "(RFC 8842 §5)"
        )
    return (
        ufrag[1],
        pwd[1],
        () if options is None else tuple(options[1].split()),
        tuple(_fingerprint(number, value) for number, value in fingerprint_lines),
        # RFC 4145 §4: an offer without the attribute means active.
        "active" if setup is None else cast(OfferSetup, setup[1]),
    )


def _fingerprint(number: int, value: str) -> tuple[str, str]:
    hash_name, _, digest = value.partition(" ")
    if not digest:
        raise SdpError(f"line {number}: a=fingerprint has no hash value (RFC 8122 §5)")
    if not _TOKEN.fullmatch(hash_name):
        raise SdpError(f"line {number}: {_show(hash_name)!r} is not a hash function name")
    if not _FINGERPRINT.fullmatch(digest):
        raise SdpError(
            f"line {number}: the a=fingerprint value is not hex pairs joined by ':' (RFC 8122 §5)"
        )
    # RFC 8122 §5: hash names are case-insensitive and the value is uppercase hex.
    return hash_name.lower(), digest.upper()


def _required(name: str, entry: tuple[int, str | None]) -> tuple[int, str]:
    number, value = entry
    if not value:
        raise SdpError(f"line {number}: a={name} has no value")
    return number, value


def _is_rtp(proto: str) -> bool:
    # RFC 8866 §5.14: RTP/AVP and its profiles, whatever transport layers precede them.
    return "RTP" in proto.split("/")


def _is_ice_string(value: str, minimum: int) -> bool:
    return minimum <= len(value) <= 256 and _ICE_CHARS.fullmatch(value) is not None


def _is_msid_id(value: str) -> bool:
    return len(value) <= 64 and _TOKEN.fullmatch(value) is not None


def _is_candidate_address(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    # A zone index (fe80::1%eth0) has no meaning off this host and no place in SDP.
    return "%" not in value and not (address.is_unspecified or address.is_multicast)


def _show(value: str) -> str:
    """A value from the offer cut short enough to quote in an error message."""
    return value if len(value) <= 40 else value[:37] + "..."


# ---------------------------------------------------------------------------------------------
# Writing


def _audio_answer(
    section: MediaSection, params: AnswerParams, connection: str, transport: list[str]
) -> list[str]:
    assert section.audio is not None  # parse_offer accepts only an audio section with Opus
    pt = section.audio.opus_payload_type
    direction = _answer_direction(section.direction, params.direction)
    lines = [f"m=audio {params.candidate_port} {section.proto} {pt}", connection]
    lines += _mid(section)
    # Opus alone, and no a=extmap (RFC 8285 §6 lets an answer accept none; Chromium needs none)
    # and no a=rtcp-rsize (RFC 5506 §5 makes it opt-in; compound RTCP is what every stack reads).
    lines += [f"a={direction}", "a=rtcp-mux", *transport, f"a=rtpmap:{pt} opus/48000/2"]
    if params.opus_fmtp:
        lines.append(f"a=fmtp:{pt} {params.opus_fmtp}")
    if direction in ("sendrecv", "sendonly"):
        # RFC 8829 §5.3.1: msid when we send; the SSRC (RFC 5576 §4.1) lets the client map our
        # packets to this section before any RTCP arrives.
        lines += [
            f"a=msid:{params.stream_id} {params.track_id}",
            f"a=ssrc:{params.ssrc} cname:{params.cname}",
        ]
    return lines


def _data_channel_answer(
    section: MediaSection, params: AnswerParams, connection: str, transport: list[str]
) -> list[str]:
    # RFC 8829 §5.3.1: proto and format exactly as offered.
    lines = [f"m=application {params.candidate_port} {section.proto} {_DATA_CHANNEL_FORMAT}"]
    lines += [connection, *_mid(section), *transport]
    lines += [f"a=sctp-port:{SCTP_PORT}", f"a=max-message-size:{params.max_message_size}"]
    return lines


def _inactive_answer(
    section: MediaSection,
    echoed: RtpFormat,
    params: AnswerParams,
    connection: str,
    transport: list[str],
) -> list[str]:
    # Accepted so that the bundle keeps its tag, yet carrying nothing (module docstring): RFC
    # 3264 §6.1 lets the answer narrow the formats to one it echoes and the direction to
    # inactive, and RFC 8829 §5.3.1 wants no msid where we do not send, so no SSRC either.
    pt = echoed.payload_type
    lines = [f"m={section.kind} {params.candidate_port} {section.proto} {pt}", connection]
    lines += [*_mid(section), "a=inactive", "a=rtcp-mux", *transport]
    if echoed.rtpmap is not None:
        lines.append(f"a=rtpmap:{pt} {echoed.rtpmap}")
    if echoed.fmtp is not None:
        lines.append(f"a=fmtp:{pt} {echoed.fmtp}")
    return lines


def _rejected_answer(section: MediaSection, connection: str) -> list[str]:
    # RFC 3264 §6: port 0 rejects; the formats are ignored but one must be there. For RTP we
    # write payload type 0 as libwebrtc does, which needs no a=rtpmap; others echo the offer.
    formats = "0" if _is_rtp(section.proto) else " ".join(section.formats)
    return [f"m={section.kind} 0 {section.proto} {formats}", connection, *_mid(section)]


def _mid(section: MediaSection) -> list[str]:
    # RFC 8829 §5.3.1: a=mid if and only if the offer has one, with the same value; libwebrtc
    # refuses an answer whose m-sections, rejected ones included, lack the offer's mids.
    return [] if section.mid is None else [f"a=mid:{section.mid}"]


def _answer_direction(offered: Direction, wanted: Direction) -> Direction:
    # RFC 3264 §6.1: send only what the offerer receives, receive only what it sends, and
    # (RFC 8829 §5.3.1) only what we want.
    send = wanted in ("sendrecv", "sendonly") and offered in ("sendrecv", "recvonly")
    receive = wanted in ("sendrecv", "recvonly") and offered in ("sendrecv", "sendonly")
    return _DIRECTION_OF[send, receive]


_DIRECTION_OF: dict[tuple[bool, bool], Direction] = {
    (True, True): "sendrecv",
    (True, False): "sendonly",
    (False, True): "recvonly",
    (False, False): "inactive",
}
