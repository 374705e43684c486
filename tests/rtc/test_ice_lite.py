"""ICE-lite driven with bytes and a fake clock.

Client checks are built with aioice's own STUN encoder, so the engine is tested against an
independent implementation rather than against itself, and responses are verified the way a
client verifies them: aioice's parser, MESSAGE-INTEGRITY with the server's ice-pwd, FINGERPRINT,
the transaction id echoed and XOR-MAPPED-ADDRESS equal to the address the check came from.
"""

from types import SimpleNamespace

import aioice
import pytest
from aioice import stun as aioice_stun
from hypothesis import given
from hypothesis import strategies as st

from voicewire.rtc.errors import ParseError
from voicewire.rtc.ice_lite import (
    SWITCH_AFTER_SILENCE,
    IceAddressChanged,
    IceConnected,
    IceEvent,
    IceFailed,
    IceLite,
    IceState,
)
from voicewire.rtc.stun import Address

from .test_stun import stun_like

SERVER_UFRAG = "srvUfragToken"
SERVER_PWD = "srvPwd0123456789abcdef+/"
CLIENT_UFRAG = "cliU"
CLIENT_PWD = "cliPwd0123456789abcdef+/"
USERNAME = f"{SERVER_UFRAG}:{CLIENT_UFRAG}"

HOME = ("198.51.100.10", 40000)
ROAMED = ("203.0.113.20", 50000)
ELSEWHERE = ("192.0.2.30", 60000)


def new_ice(now: float = 0.0) -> IceLite:
    return IceLite(SERVER_UFRAG, SERVER_PWD, CLIENT_UFRAG, now=now)


def check(
    *,
    use_candidate: bool = False,
    username: str | None = USERNAME,
    pwd: str | None = SERVER_PWD,
    role: str = "ICE-CONTROLLING",
    fingerprint: bool = True,
) -> bytes:
    """A client's Binding request, built like aioice's `Connection.build_request`."""
    request = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    if username is not None:
        request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = 1853824767
    request.attributes[role] = 0x1234_5678_9ABC_DEF0
    if use_candidate:
        request.attributes["USE-CANDIDATE"] = None
    if pwd is not None:
        request.add_message_integrity(pwd.encode())
    if not fingerprint:
        request.attributes.pop("FINGERPRINT", None)
    elif pwd is None:
        request.add_fingerprint()
    return bytes(request)


def events(ice: IceLite) -> list[IceEvent]:
    drained = []
    while (event := ice.next_event()) is not None:
        drained.append(event)
    return drained


def verified_responses(ice: IceLite) -> list[tuple[aioice_stun.Message, Address]]:
    """Drain the engine's datagrams, checking each the way the client's ICE agent would."""
    responses = []
    for data, addr in ice.datagrams_to_send():
        response = aioice_stun.parse_message(data)  # verifies FINGERPRINT when present
        assert "FINGERPRINT" in response.attributes
        assert response.check_message_integrity(SERVER_PWD.encode())
        responses.append((response, addr))
    return responses


def assert_answered(ice: IceLite, request: bytes, addr: Address) -> None:
    [(response, sent_to)] = verified_responses(ice)
    assert sent_to == addr
    assert response.message_class == aioice_stun.Class.RESPONSE
    assert response.transaction_id == aioice_stun.parse_message(request).transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == addr


def connected_ice() -> IceLite:
    """An engine nominated from HOME at time 0."""
    ice = new_ice()
    ice.handle_stun(check(use_candidate=True), HOME, now=0.0)
    ice.datagrams_to_send()
    assert events(ice) == [IceConnected(HOME)]
    return ice


# Answering checks (RFC 8445 §7.3)


@pytest.mark.parametrize("addr", [HOME, ("2001:db8::7", 51234)], ids=["ipv4", "ipv6"])
def test_valid_check_gets_a_signed_response_mapping_its_source(addr: Address) -> None:
    ice = new_ice()
    request = check()

    ice.handle_stun(request, addr, now=1.0)

    assert_answered(ice, request, addr)
    assert ice.validated_addresses == {addr}
    assert ice.selected_address is None
    assert ice.state is IceState.CHECKING
    assert events(ice) == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(check(username=f"otherUfrag:{CLIENT_UFRAG}"), id="wrong-server-ufrag"),
        pytest.param(check(username=f"{SERVER_UFRAG}:othr"), id="wrong-client-ufrag"),
        pytest.param(check(username=SERVER_UFRAG), id="no-colon"),
        pytest.param(check(username=None), id="no-username"),
        pytest.param(check(pwd=CLIENT_PWD), id="wrong-pwd"),
        pytest.param(check(pwd=None), id="no-integrity"),
        pytest.param(check(fingerprint=False), id="no-fingerprint"),
        pytest.param(check(pwd=CLIENT_PWD, role="ICE-CONTROLLED"), id="wrong-pwd-role-conflict"),
        pytest.param(check(pwd=CLIENT_PWD, use_candidate=True), id="wrong-pwd-nomination"),
    ],
)
def test_unauthenticated_check_is_dropped_silently_and_counted(request_bytes: bytes) -> None:
    ice = new_ice()

    ice.handle_stun(request_bytes, HOME, now=1.0)

    assert ice.datagrams_to_send() == []
    assert ice.auth_failures == 1
    assert ice.validated_addresses == frozenset()
    assert events(ice) == []


def test_wrong_fingerprint_is_not_stun_so_raises_parse_error() -> None:
    ice = new_ice()
    request = bytearray(check(use_candidate=True))
    request[-1] ^= 0x01

    with pytest.raises(ParseError):
        ice.handle_stun(bytes(request), HOME, now=1.0)

    assert ice.datagrams_to_send() == []
    assert ice.validated_addresses == frozenset()
    assert events(ice) == []


@pytest.mark.parametrize(
    ("method", "message_class"),
    [
        (aioice_stun.Method.BINDING, aioice_stun.Class.INDICATION),
        (aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE),
        (aioice_stun.Method.ALLOCATE, aioice_stun.Class.REQUEST),
    ],
)
def test_stun_other_than_a_binding_request_is_ignored_and_counted(
    method: aioice_stun.Method, message_class: aioice_stun.Class
) -> None:
    ice = new_ice()
    message = aioice_stun.Message(method, message_class, attributes={"USERNAME": USERNAME})
    message.add_message_integrity(SERVER_PWD.encode())

    ice.handle_stun(bytes(message), HOME, now=1.0)

    assert ice.datagrams_to_send() == []
    assert ice.ignored_messages == 1
    assert ice.auth_failures == 0
    assert ice.validated_addresses == frozenset()


def test_ice_controlled_peer_gets_487_and_nothing_else() -> None:
    ice = new_ice()
    request = check(role="ICE-CONTROLLED", use_candidate=True)

    ice.handle_stun(request, HOME, now=1.0)

    [(response, sent_to)] = verified_responses(ice)
    assert sent_to == HOME
    assert response.message_class == aioice_stun.Class.ERROR
    assert response.attributes["ERROR-CODE"] == (487, "Role Conflict")
    assert response.transaction_id == aioice_stun.parse_message(request).transaction_id
    assert ice.validated_addresses == frozenset()
    assert ice.selected_address is None
    assert events(ice) == []


# Nomination (RFC 8445 §7.3.2, §8.2)


def test_use_candidate_connects_once() -> None:
    ice = new_ice()

    ice.handle_stun(check(), HOME, now=0.1)
    assert events(ice) == []
    ice.handle_stun(check(use_candidate=True), HOME, now=0.2)
    ice.handle_stun(check(use_candidate=True), HOME, now=0.3)

    assert len(verified_responses(ice)) == 3
    assert events(ice) == [IceConnected(HOME)]
    assert ice.selected_address == HOME
    assert ice.state is IceState.CONNECTED


def test_first_nominated_address_wins_over_earlier_validated_ones() -> None:
    ice = new_ice()

    ice.handle_stun(check(), ELSEWHERE, now=0.1)
    ice.handle_stun(check(use_candidate=True), HOME, now=0.2)

    assert events(ice) == [IceConnected(HOME)]
    assert ice.validated_addresses == {HOME, ELSEWHERE}


# Following the client (NAT rebinding, network change)


def test_nomination_from_a_new_address_switches_at_once() -> None:
    ice = connected_ice()
    request = check(use_candidate=True)

    ice.handle_stun(request, ROAMED, now=1.0)

    assert_answered(ice, request, ROAMED)
    assert events(ice) == [IceAddressChanged(HOME, ROAMED)]
    assert ice.selected_address == ROAMED
    assert ice.validated_addresses == {HOME, ROAMED}


def test_check_from_a_new_address_switches_after_two_seconds_of_silence() -> None:
    ice = connected_ice()
    ice.note_received(HOME, 9.5)

    ice.handle_stun(check(), ROAMED, now=10.0)

    assert len(verified_responses(ice)) == 1
    assert events(ice) == []
    assert ice.selected_address == HOME
    assert ice.get_timer() == 9.5 + SWITCH_AFTER_SILENCE
    ice.handle_timer(11.49)
    assert events(ice) == []
    ice.handle_timer(11.5)
    assert events(ice) == [IceAddressChanged(HOME, ROAMED)]
    assert ice.selected_address == ROAMED
    assert ice.get_timer() == 10.0 + 30.0  # only consent is left


def test_check_from_a_new_address_switches_at_once_if_already_silent() -> None:
    ice = connected_ice()
    ice.note_received(HOME, 5.0)

    ice.handle_stun(check(), ROAMED, now=7.0)

    assert events(ice) == [IceAddressChanged(HOME, ROAMED)]


def test_traffic_from_the_selected_address_keeps_it() -> None:
    ice = connected_ice()
    ice.note_received(HOME, 9.5)
    ice.handle_stun(check(), ROAMED, now=10.0)

    ice.note_received(HOME, 10.5)  # still in use: the check was from a backup path
    ice.handle_timer(13.0)

    assert events(ice) == []
    assert ice.selected_address == HOME
    assert ice.get_timer() == 10.0 + 30.0


def test_check_from_the_selected_address_counts_as_traffic() -> None:
    ice = connected_ice()
    ice.handle_stun(check(), ROAMED, now=1.0)
    ice.handle_stun(check(), HOME, now=1.5)

    ice.handle_timer(3.2)

    assert events(ice) == []
    assert ice.selected_address == HOME


def test_a_backup_validated_before_the_selected_went_quiet_is_not_taken() -> None:
    ice = new_ice()
    ice.handle_stun(check(), ELSEWHERE, now=0.0)
    ice.handle_stun(check(use_candidate=True), HOME, now=0.1)
    events(ice)

    ice.handle_timer(5.0)

    assert events(ice) == []
    assert ice.selected_address == HOME


def test_traffic_from_other_addresses_does_not_count_as_the_selected_one() -> None:
    ice = connected_ice()
    ice.handle_stun(check(), ROAMED, now=1.0)

    ice.note_received(ELSEWHERE, 2.5)
    ice.handle_timer(2.5)

    assert events(ice) == [IceAddressChanged(HOME, ROAMED)]


def test_newest_validated_address_is_the_one_switched_to() -> None:
    ice = connected_ice()
    ice.handle_stun(check(), ELSEWHERE, now=1.0)
    ice.handle_stun(check(), ROAMED, now=1.5)

    ice.handle_timer(2.0)

    assert events(ice) == [IceAddressChanged(HOME, ROAMED)]


def test_unauthenticated_traffic_from_a_new_address_never_moves_the_session() -> None:
    ice = connected_ice()

    for now in (1.0, 2.0, 3.0):
        ice.handle_stun(check(pwd=CLIENT_PWD, use_candidate=True), ROAMED, now)
        ice.handle_stun(check(username=f"{SERVER_UFRAG}:evil", use_candidate=True), ROAMED, now)
        ice.note_received(ROAMED, now)
        ice.handle_timer(now)

    assert ice.datagrams_to_send() == []
    assert events(ice) == []
    assert ice.selected_address == HOME
    assert ice.validated_addresses == {HOME}
    assert ice.auth_failures == 6


# Consent freshness (RFC 7675) and the connect timeout


def test_consent_expires_exactly_thirty_seconds_after_the_last_check() -> None:
    ice = connected_ice()
    ice.handle_stun(check(use_candidate=True), HOME, now=5.0)
    ice.note_received(HOME, 34.0)  # media alone does not refresh consent

    assert ice.get_timer() == 35.0
    ice.handle_timer(34.999)
    assert events(ice) == []
    ice.handle_timer(35.0)

    assert events(ice) == [IceFailed("consent_expired")]
    assert ice.state is IceState.FAILED
    assert ice.get_timer() is None


def test_any_authenticated_check_refreshes_consent() -> None:
    ice = connected_ice()
    ice.note_received(HOME, 19.9)
    ice.handle_stun(check(), ELSEWHERE, now=20.0)
    ice.note_received(HOME, 20.1)  # HOME is still in use, so ELSEWHERE does not take over

    ice.handle_timer(49.9)

    assert events(ice) == []
    assert ice.get_timer() == 50.0


def test_no_nomination_in_time_is_an_ice_timeout() -> None:
    ice = new_ice(now=100.0)
    ice.handle_stun(check(), HOME, now=110.0)  # checks without USE-CANDIDATE do not count

    assert ice.get_timer() == 130.0
    ice.handle_timer(129.9)
    assert events(ice) == []
    ice.handle_timer(130.0)

    assert events(ice) == [IceFailed("ice_timeout")]
    assert ice.get_timer() is None


def test_a_failed_session_answers_nothing() -> None:
    ice = new_ice()
    ice.handle_timer(30.0)
    events(ice)

    ice.handle_stun(check(use_candidate=True), HOME, now=31.0)
    ice.handle_timer(100.0)

    assert ice.datagrams_to_send() == []
    assert events(ice) == []
    assert ice.selected_address is None


# Interoperability: checks exactly as aioice's Connection builds them


def test_aioice_controlling_agent_connects_with_regular_nomination() -> None:
    """aioice against a lite peer: a check, then a nominating one, then consent checks.

    `Connection.check_start` sends `build_request(pair, nominate=ice_controlling and not
    remote_is_lite)`, then repeats it with `nominate=True`, signing with the remote password
    (`StunProtocol.request` calls `add_message_integrity`). `query_consent` sends
    `nominate=False` checks. Each response must pass `Transaction.response_received`'s
    integrity check with that same password.
    """
    client = aioice.Connection(
        ice_controlling=True, local_username=CLIENT_UFRAG, local_password=CLIENT_PWD
    )
    client.remote_username = SERVER_UFRAG
    client.remote_password = SERVER_PWD
    client.remote_is_lite = True
    pair = SimpleNamespace(component=1)  # all build_request reads of a CandidatePair
    ice = new_ice()

    def aioice_check(nominate: bool, now: float) -> aioice_stun.Message:
        request = client.build_request(pair, nominate=nominate)
        request.add_message_integrity(client.remote_password.encode())  # as StunProtocol.request
        ice.handle_stun(bytes(request), HOME, now)
        [(data, sent_to)] = ice.datagrams_to_send()
        response = aioice_stun.parse_message(data)
        assert sent_to == HOME
        assert response.message_class == aioice_stun.Class.RESPONSE
        assert response.transaction_id == request.transaction_id
        assert response.check_message_integrity(client.remote_password.encode())
        assert response.attributes["XOR-MAPPED-ADDRESS"] == HOME
        return request

    aioice_check(client.ice_controlling and not client.remote_is_lite, now=0.05)
    assert events(ice) == []
    nomination = aioice_check(True, now=0.1)
    assert list(nomination.attributes) == [
        "USERNAME",
        "PRIORITY",
        "ICE-CONTROLLING",
        "USE-CANDIDATE",
        "MESSAGE-INTEGRITY",
        "FINGERPRINT",
    ]
    assert events(ice) == [IceConnected(HOME)]
    aioice_check(False, now=5.0)
    assert ice.get_timer() == 35.0


# Properties: hostile bytes


def assert_untouched(ice: IceLite) -> None:
    assert ice.datagrams_to_send() == []
    assert events(ice) == []
    assert ice.selected_address is None
    assert ice.validated_addresses == frozenset()
    assert ice.state is IceState.CHECKING
    assert ice.get_timer() == 30.0


@given(st.binary(max_size=300) | stun_like())
def test_any_bytes_raise_only_parse_error_and_change_nothing(data: bytes) -> None:
    ice = new_ice()
    try:
        ice.handle_stun(data, HOME, now=1.0)
    except ParseError:
        pass
    assert_untouched(ice)


VALID_NOMINATION = check(use_candidate=True)


def still_valid(data: bytes) -> bool:
    """An independent judge, from aioice alone: would a lite server accept this request?"""
    try:
        message = aioice_stun.parse_message(data)
    except Exception:
        return False
    return (
        message.message_method == aioice_stun.Method.BINDING
        and message.message_class == aioice_stun.Class.REQUEST
        and message.attributes.get("USERNAME") == USERNAME
        and "FINGERPRINT" in message.attributes
        and message.check_message_integrity(SERVER_PWD.encode())
    )


@given(
    st.lists(st.tuples(st.integers(0, len(VALID_NOMINATION) - 1), st.integers(1, 255)), min_size=1)
)
def test_a_mutated_check_gets_no_response_unless_still_valid(
    flips: list[tuple[int, int]],
) -> None:
    data = bytearray(VALID_NOMINATION)
    for index, mask in flips:
        data[index] ^= mask
    ice = new_ice()

    try:
        ice.handle_stun(bytes(data), HOME, now=1.0)
    except ParseError:
        pass

    if ice.datagrams_to_send():
        assert still_valid(bytes(data))
    else:
        assert_untouched(ice)
