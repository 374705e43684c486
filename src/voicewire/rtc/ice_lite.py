"""The server half of ICE for one session: ICE-lite plus consent freshness, sans-IO.

Theory of operation
-------------------
The transceiver offers a single candidate (the relay's public address), so it runs ICE-lite
(RFC 8445 §2.5): it never sends checks, it only answers them. The browser, a full agent, is
therefore always controlling and the transceiver always controlled (RFC 8445 §6.1.1). What is
left for this engine:

1. Authenticate every Binding request: USERNAME is `<local ufrag>:<remote ufrag>` (RFC 8445 §7.3),
   MESSAGE-INTEGRITY verifies with the local ice-pwd, FINGERPRINT is present. A request that fails
   is dropped without a word and counted in `auth_failures`: answering it (with the 400/401 of
   RFC 8489 §9.1.3) would let anyone make the public address talk, and would tell a prober which
   ufrags are live. Pion's ICE agent drops such requests the same way.
2. Answer an authenticated request with XOR-MAPPED-ADDRESS = the client's address, signed and
   fingerprinted (`stun.binding_success`). Its source address is now *validated*: the client proved
   it knows the ice-pwd from there.
3. The first authenticated request carrying USE-CANDIDATE nominates its source address, which
   becomes `selected_address` (RFC 8445 §7.3.2, §8.2): `IceConnected`. Browsers nominate in a
   later check than their first one (Chromium sets USE-CANDIDATE once its pair is writable, then
   on every check of the selected pair; aioice sends one nominating check), so a check without
   USE-CANDIDATE only validates.
4. Once connected, the client may move (NAT rebinding, Wi-Fi to cellular). An authenticated check
   with USE-CANDIDATE from a new address switches at once, as Chromium renominates that way. A
   check without it (aioice's consent checks) only makes the new address a candidate for a
   switch, taken if the selected address then stays silent for `SWITCH_AFTER_SILENCE` seconds
   (the session reports what it hears from the selected address with `note_received`). Each
   switch emits `IceAddressChanged`. Unauthenticated traffic never moves a session: that would
   let anyone who can spoof or guess a packet hijack the media.
5. Consent (RFC 7675): every authenticated check refreshes it. If none arrives for
   `consent_timeout` seconds once connected, `IceFailed("consent_expired")`; if no nomination
   arrives within `connect_timeout` of creation, `IceFailed("ice_timeout")`.

The engine owns no socket and no clock. Feed it with `handle_stun`, `note_received` and
`handle_timer` (each takes `now`, in monotonic seconds), then drain `datagrams_to_send()` and
`next_event()` and re-arm a timer at `get_timer()`.

Index contract: the session manager routes non-STUN datagrams by address, so it indexes
`selected_address` and `validated_addresses`. Every address this engine ever reports must be
removed from those indexes when the session ends, whatever the reason (hang-up, `IceFailed`,
DTLS failure, drain); addresses left behind are how Pion's UDPMux leaked.
"""

import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

from voicewire.rtc import stun
from voicewire.rtc.stun import Address

logger = logging.getLogger(__name__)

SWITCH_AFTER_SILENCE = 2.0
"""Seconds of silence from the selected address after which a validated new address takes over.

Long enough not to flap on a burst of loss (voice flows at 50 packets/s, so 2 s is 100 packets),
short enough that a rebinding client hears the model again well before it gives up."""


@dataclass(frozen=True, slots=True)
class IceConnected:
    """The client nominated `address`; media may flow to it (RFC 8445 §8.2)."""

    address: Address


@dataclass(frozen=True, slots=True)
class IceAddressChanged:
    """The client moved: send to `new` from now on. `old` stays validated until the session ends."""

    old: Address
    new: Address


IceFailureReason = Literal["ice_timeout", "consent_expired"]


@dataclass(frozen=True, slots=True)
class IceFailed:
    """ICE ended: no nomination in time (`ice_timeout`) or consent lapsed (`consent_expired`)."""

    reason: IceFailureReason


IceEvent = IceConnected | IceAddressChanged | IceFailed


class IceState(enum.Enum):
    """Where the session stands, named after the W3C `RTCIceConnectionState` values."""

    CHECKING = "checking"
    CONNECTED = "connected"
    FAILED = "failed"


_TRANSITIONS: dict[IceState, frozenset[IceState]] = {
    IceState.CHECKING: frozenset({IceState.CONNECTED, IceState.FAILED}),
    IceState.CONNECTED: frozenset({IceState.FAILED}),
    IceState.FAILED: frozenset(),
}
TERMINAL_STATES = frozenset({IceState.FAILED})


class IceLite:
    """One session's ICE-lite agent. See the module docstring for how it behaves and is driven."""

    def __init__(
        self,
        local_ufrag: str,
        local_pwd: str,
        remote_ufrag: str,
        *,
        now: float,
        consent_timeout: float = 30.0,
        connect_timeout: float = 30.0,
    ) -> None:
        """Start waiting for checks at time `now`.

        `local_ufrag` and `local_pwd` are the ones in our SDP answer, `remote_ufrag` the one in the
        client's offer. `consent_timeout` is RFC 7675's 30 s (§5.1); `connect_timeout` bounds how
        long a session may hold its ufrag without being nominated.
        """
        self._local_ufrag = local_ufrag
        self._username = f"{local_ufrag}:{remote_ufrag}"  # RFC 8445 §7.3, §7.2.2
        self._key = local_pwd.encode()  # RFC 8489 §9.1.1: the short-term key is the password
        self._consent_timeout = consent_timeout
        self._connect_deadline = now + connect_timeout

        self._state = IceState.CHECKING
        self._selected: Address | None = None
        self._validated: set[Address] = set()
        self._consent_at = now  # last authenticated check
        self._heard_at = now  # last datagram from the selected address
        self._candidate: Address | None = None  # newest validated address, if not selected
        self._candidate_at = now

        self._datagrams: list[tuple[bytes, Address]] = []
        self._events: deque[IceEvent] = deque()

        self.auth_failures = 0
        """Binding requests dropped because USERNAME, MESSAGE-INTEGRITY or FINGERPRINT failed."""
        self.ignored_messages = 0
        """Well-formed STUN other than a Binding request (indications, responses, other methods)."""

    @property
    def state(self) -> IceState:
        return self._state

    @property
    def selected_address(self) -> Address | None:
        """Where to send media, once nominated. Always one of `validated_addresses`."""
        return self._selected

    @property
    def validated_addresses(self) -> frozenset[Address]:
        """Every address an authenticated check came from, for the session manager's index.

        It only grows: the manager must remove all of these from its indexes when the session ends.
        """
        return frozenset(self._validated)

    def handle_stun(self, data: bytes, addr: Address, now: float) -> None:
        """Process one STUN datagram from the client at `addr` (its true address).

        Raises `ParseError` for bytes that are not a STUN message; the caller drops and counts them.
        """
        message = stun.parse(data)
        if self._state in TERMINAL_STATES:
            return
        if not stun.is_binding_request(message):
            # RFC 8489 §6.3: indications and unexpected responses get no reply; RFC 8445 §11
            # keepalive indications need none.
            self.ignored_messages += 1
            return
        if not self._authenticated(message):
            self.auth_failures += 1
            return
        if "ICE-CONTROLLED" in message.attributes:
            # RFC 8445 §7.3.1.1: both sides claim the controlled role. A lite agent can never take
            # the controlling one (§6.1.1), so it always answers 487 and the peer must switch.
            # The check failed, so it neither validates the address nor refreshes consent.
            self._datagrams.append(
                (stun.binding_error(message, 487, "Role Conflict", self._key), addr)
            )
            return
        self._datagrams.append((stun.binding_success(message, addr, self._key), addr))
        self._on_check(addr, "USE-CANDIDATE" in message.attributes, now)

    def note_received(self, addr: Address, now: float) -> None:
        """Report a datagram of any kind received from `addr`; called on the media path, so cheap.

        Only traffic from the selected address matters: it proves that address is still in use, so
        a validated new address must not take over (see `SWITCH_AFTER_SILENCE`). Prefer to report
        datagrams once their own layer has authenticated them (DTLS, SRTP): a spoofed packet cannot
        move the session, but a stream of them could keep it on a dead address.
        """
        if addr == self._selected:
            self._heard_at = now

    def handle_timer(self, now: float) -> None:
        """Fire whatever deadline `get_timer` announced, if `now` has reached it."""
        if self._state is IceState.CHECKING:
            if now >= self._connect_deadline:
                self._fail("ice_timeout")
        elif self._state is IceState.CONNECTED:
            if now >= self._consent_deadline():
                self._fail("consent_expired")  # RFC 7675 §5.1
            else:
                self._switch_if_silent(now)

    def get_timer(self) -> float | None:
        """The next absolute time `handle_timer` must be called at, or None once failed."""
        if self._state is IceState.CHECKING:
            return self._connect_deadline
        if self._state is IceState.CONNECTED:
            if self._switch_is_pending():
                return min(self._consent_deadline(), self._switch_deadline())
            return self._consent_deadline()
        return None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Take the queued responses, each with the client address to send it to."""
        datagrams, self._datagrams = self._datagrams, []
        return datagrams

    def next_event(self) -> IceEvent | None:
        """Take the oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    def _authenticated(self, message: stun.Message) -> bool:
        # RFC 8445 §7.3: short-term credentials and the FINGERPRINT mechanism are both mandatory.
        return (
            message.attributes.get("USERNAME") == self._username
            and "FINGERPRINT" in message.attributes
            and message.check_message_integrity(self._key)
        )

    def _on_check(self, addr: Address, use_candidate: bool, now: float) -> None:
        """Apply an authenticated, answered check from `addr`."""
        self._consent_at = now  # RFC 7675 §5.1: the client sees a response, consent is fresh
        self._validated.add(addr)
        if addr == self._selected:
            self._heard_at = now
        elif self._selected is None:
            if use_candidate:
                self._connect(addr, now)
        elif use_candidate:
            self._switch(addr, now)
        else:
            self._candidate = addr
            self._candidate_at = now
            self._switch_if_silent(now)

    def _connect(self, addr: Address, now: float) -> None:
        self._selected = addr  # RFC 8445 §7.3.2: the nominated pair; §8.2: it is now selected
        self._heard_at = now
        self._set_state(IceState.CONNECTED)
        self._events.append(IceConnected(addr))

    def _switch(self, addr: Address, now: float) -> None:
        old = self._selected
        assert old is not None
        self._selected = addr
        self._heard_at = now
        self._candidate = None
        self._events.append(IceAddressChanged(old, addr))

    def _switch_is_pending(self) -> bool:
        # Only an address validated after the selected one last spoke: the client moved there.
        # An older one (a backup candidate checked at setup) says nothing about where it is now.
        return self._candidate is not None and self._candidate_at > self._heard_at

    def _switch_if_silent(self, now: float) -> None:
        if self._switch_is_pending() and now >= self._switch_deadline():
            assert self._candidate is not None
            self._switch(self._candidate, now)

    def _switch_deadline(self) -> float:
        return self._heard_at + SWITCH_AFTER_SILENCE

    def _consent_deadline(self) -> float:
        return self._consent_at + self._consent_timeout

    def _fail(self, reason: IceFailureReason) -> None:
        self._set_state(IceState.FAILED)
        self._events.append(IceFailed(reason))

    def _set_state(self, state: IceState) -> None:
        assert state in _TRANSITIONS[self._state], f"ICE {self._state} -> {state}"
        logger.debug("ICE %s: %s -> %s", self._local_ufrag, self._state.value, state.value)
        self._state = state
