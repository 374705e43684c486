"""The jitter buffer in simulated time: what comes out, when, and how the delay adapts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicewire.rtc.jitter_buffer import Frame, JitterBuffer, Lost

FRAME = 0.020
NETWORK = 0.050  # one-way delay of an undelayed packet
SAMPLES = 960


@dataclass(frozen=True)
class Packet:
    sequence: int
    timestamp: int
    payload: bytes
    arrival: float


def talk(
    count: int, *, first: int = 1000, timestamp: int = 5000, start: float = 0.0
) -> list[Packet]:
    """`count` packets sent every 20 ms from `start`, each arriving `NETWORK` later."""
    return [
        Packet(
            (first + index) & 0xFFFF,
            (timestamp + SAMPLES * index) & 0xFFFFFFFF,
            b"frame %d" % index,
            start + index * FRAME + NETWORK,
        )
        for index in range(count)
    ]


def delayed(packets: list[Packet], index: int, by: float) -> list[Packet]:
    packets = list(packets)
    packets[index] = replace(packets[index], arrival=packets[index].arrival + by)
    return packets


def play(
    buffer: JitterBuffer,
    packets: list[Packet],
    targets: list[tuple[float, float]] | None = None,
) -> list[tuple[float, Frame | Lost]]:
    """Push each packet when it arrives, and pop at every deadline the buffer gives.

    This is the caller's contract: a timer at `next_deadline()` (or at once, if that is past),
    popping until None. A deadline at which nothing comes out would spin that timer, so it fails
    the test. `targets` collects the target delay after each push.
    """
    arrivals = sorted(packets, key=lambda packet: packet.arrival)
    played: list[tuple[float, Frame | Lost]] = []
    clock = 0.0
    index = 0
    while True:
        deadline = buffer.next_deadline()
        arrival = arrivals[index].arrival if index < len(arrivals) else None
        if deadline is not None and (arrival is None or deadline <= arrival):
            clock = max(clock, deadline)
            item = buffer.pop(clock)
            assert item is not None, "next_deadline() named a time when nothing was due"
            played.append((clock, item))
            while (item := buffer.pop(clock)) is not None:
                played.append((clock, item))
        elif arrival is not None:
            clock = arrival
            packet = arrivals[index]
            buffer.push(packet.sequence, packet.timestamp, packet.payload, clock)
            if targets is not None:
                targets.append((clock, buffer.target_delay))
            index += 1
        else:
            return played


def sequences(played: list[tuple[float, Frame | Lost]]) -> list[int]:
    return [item.sequence for _, item in played]


def arrival_of(packets: list[Packet], sequence: int) -> float:
    return next(packet.arrival for packet in packets if packet.sequence == sequence)


def test_on_a_clean_link_every_frame_waits_exactly_one_frame() -> None:
    packets = talk(100)

    played = play(JitterBuffer(), packets)

    assert sequences(played) == [packet.sequence for packet in packets]
    assert all(isinstance(item, Frame) for _, item in played)
    assert [item.payload for _, item in played] == [packet.payload for packet in packets]
    for time, item in played:
        assert time - arrival_of(packets, item.sequence) == pytest.approx(FRAME)


def test_with_no_minimum_a_clean_link_adds_only_the_margin() -> None:
    packets = talk(100)

    played = play(JitterBuffer(min_delay=0.0), packets)

    waits = [time - arrival_of(packets, item.sequence) for time, item in played]
    assert max(waits) == pytest.approx(0.002)  # the margin for event-loop wake-ups


def test_frames_keep_a_steady_cadence_through_arrival_jitter() -> None:
    packets = talk(100)
    for index in range(3, 100, 3):  # every third packet 15 ms late: within the delay
        packets = delayed(packets, index, 0.015)

    played = play(JitterBuffer(), packets)

    times = [time for time, _ in played]
    assert sequences(played) == [packet.sequence for packet in talk(100)]
    assert all(later - earlier == pytest.approx(FRAME) for earlier, later in pairwise(times))


def test_a_reordered_packet_within_the_delay_is_put_back_in_order() -> None:
    packets = delayed(talk(20), 5, 0.030)  # frame 5 overtaken by frame 6

    played = play(JitterBuffer(min_delay=0.040), packets)

    assert sequences(played) == [packet.sequence for packet in talk(20)]
    assert all(isinstance(item, Frame) for _, item in played)


def test_a_lost_packet_is_declared_at_its_slot_with_the_next_payload_for_fec() -> None:
    packets = talk(20)
    del packets[7]
    buffer = JitterBuffer()

    played = play(buffer, packets)

    lost = [(time, item) for time, item in played if isinstance(item, Lost)]
    assert [item for _, item in lost] == [Lost(1007, next_payload=b"frame 8")]
    assert lost[0][0] == pytest.approx(7 * FRAME + NETWORK + FRAME)  # its own slot
    assert sequences(played) == list(range(1000, 1020))
    assert (buffer.lost, buffer.late) == (1, 0)


def test_a_burst_loss_gives_one_lost_item_per_frame_and_fec_only_to_the_last() -> None:
    packets = talk(20)
    del packets[5:8]

    played = play(JitterBuffer(), packets)

    losses = [item for _, item in played if isinstance(item, Lost)]
    assert losses == [Lost(1005, None), Lost(1006, None), Lost(1007, b"frame 8")]


def test_a_duplicate_is_played_once() -> None:
    packets = talk(10)
    packets.append(replace(packets[4], arrival=packets[4].arrival + 0.005))
    buffer = JitterBuffer()

    played = play(buffer, packets)

    assert sequences(played) == list(range(1000, 1010))
    assert buffer.duplicates == 1


def test_a_packet_later_than_its_slot_is_dropped_and_the_delay_grows_to_cover_it() -> None:
    packets = delayed(talk(40), 10, 0.060)
    buffer = JitterBuffer()

    played = play(buffer, packets)

    assert sequences(played) == list(range(1000, 1040))
    assert [item for _, item in played if isinstance(item, Lost)] == [Lost(1010, b"frame 11")]
    assert buffer.late == 1
    assert buffer.target_delay == pytest.approx(0.062)  # 60 ms more transit, plus the margin


def test_sequence_and_timestamp_wrap_around() -> None:
    packets = talk(40, first=65520, timestamp=2**32 - 960 * 10)
    packets = delayed(packets, 15, 0.010)  # 65535 arrives a little late

    played = play(JitterBuffer(), packets)

    assert sequences(played) == [packet.sequence for packet in talk(40, first=65520)]
    assert all(isinstance(item, Frame) for _, item in played)


def test_a_jitter_spike_raises_the_delay_at_once_and_it_comes_back_down() -> None:
    packets = talk(500)  # ten seconds
    for index in range(100, 105):  # a 100 ms stall: five frames arrive together
        packets[index] = replace(packets[index], arrival=packets[104].arrival + 0.020)
    buffer = JitterBuffer()
    targets: list[tuple[float, float]] = []

    played = play(buffer, packets, targets)

    spike_at = packets[100].arrival
    assert max(target for _, target in targets) == pytest.approx(0.102)  # the stall + margin
    assert next(t for t, target in targets if target > FRAME + 0.001) == spike_at
    settled_at = max(t for t, target in targets if target > FRAME + 0.001)
    assert 4.0 < settled_at - spike_at < 7.0  # held 1-2 s, then down a frame a second
    assert sequences(played) == [packet.sequence for packet in talk(500)]
    assert (buffer.lost, buffer.late, buffer.resyncs) == (0, 0, 0)  # in order: none lost
    last_time, last = played[-1]
    assert last_time - arrival_of(packets, last.sequence) == pytest.approx(FRAME)


def test_dtx_silence_loses_nothing_and_resumes_with_the_minimum_delay() -> None:
    before = talk(50)
    # DTX: the sender stops for two seconds; sequence numbers continue, timestamps do not.
    after = talk(50, first=1050, timestamp=5000 + SAMPLES * (50 + 100), start=(50 + 100) * FRAME)
    buffer = JitterBuffer()

    played = play(buffer, before + after)

    assert sequences(played) == list(range(1000, 1100))
    assert buffer.lost == 0 and buffer.resyncs == 0
    resumed_at, first_after = next((t, i) for t, i in played if i.sequence == 1050)
    assert resumed_at - after[0].arrival == pytest.approx(FRAME)


def test_a_loss_just_before_silence_is_reported_when_talk_resumes() -> None:
    before = talk(50)[:-1]  # the last frame before the silence is lost
    after = talk(50, first=1050, timestamp=5000 + SAMPLES * 150, start=150 * FRAME)
    buffer = JitterBuffer()

    played = play(buffer, before + after)

    assert sequences(played) == list(range(1000, 1100))
    assert [item for _, item in played if isinstance(item, Lost)] == [Lost(1049, b"frame 0")]
    assert buffer.lost == 1 and buffer.resyncs == 0


def test_the_buffer_idles_through_silence() -> None:
    buffer = JitterBuffer()
    play(buffer, talk(10))

    assert buffer.next_deadline() is None
    assert buffer.pop(1000.0) is None


def test_a_sender_that_pauses_without_advancing_its_clock_is_resynchronised() -> None:
    before = talk(50)
    # Paused three seconds, then resumed with timestamps that ignore the pause.
    after = talk(50, first=1050, timestamp=5000 + SAMPLES * 50, start=50 * FRAME + 3.0)
    buffer = JitterBuffer()

    played = play(buffer, before + after)

    assert sequences(played) == list(range(1000, 1100))
    assert buffer.resyncs == 1 and buffer.lost == 0
    for time, item in played[50:]:
        assert time - arrival_of(after, item.sequence) == pytest.approx(FRAME)


def test_a_timestamp_jump_ahead_is_resynchronised_instead_of_waited_out() -> None:
    before = talk(50)
    after = talk(50, first=1050, timestamp=5000 + SAMPLES * 50 + 48000 * 60, start=50 * FRAME)
    buffer = JitterBuffer()

    played = play(buffer, before + after)

    assert sequences(played) == list(range(1000, 1100))
    assert buffer.resyncs == 1
    assert played[-1][0] - after[-1].arrival == pytest.approx(FRAME)


def test_a_sequence_jump_beyond_the_buffer_starts_over_from_the_new_packet() -> None:
    before = talk(20)
    after = talk(20, first=1020 + 500, timestamp=5000 + SAMPLES * 20, start=20 * FRAME + 0.005)
    buffer = JitterBuffer()

    played = play(buffer, before + after)

    assert sequences(played) == list(range(1000, 1020)) + list(range(1520, 1540))
    assert buffer.resyncs == 1 and buffer.lost == 0


def test_a_sender_restarting_with_lower_sequence_numbers_is_followed_after_two_packets() -> None:
    before = talk(20)
    after = talk(20, first=100, timestamp=5000 + SAMPLES * 20, start=20 * FRAME + 0.005)
    buffer = JitterBuffer()

    played = play(buffer, before + after)

    assert sequences(played) == list(range(1000, 1020)) + list(range(101, 120))
    assert buffer.resyncs == 1 and buffer.late == 1  # the first of the two is taken as a stray


def test_one_stray_old_packet_is_just_late() -> None:
    packets = talk(40)
    packets.append(replace(packets[0], sequence=1000 - 200, arrival=packets[20].arrival))
    buffer = JitterBuffer()

    played = play(buffer, packets)

    assert sequences(played) == list(range(1000, 1040))
    assert (buffer.late, buffer.resyncs) == (1, 0)


def test_a_packet_before_the_first_is_taken_while_nothing_has_played() -> None:
    packets = talk(10)
    packets[0] = replace(packets[0], arrival=packets[1].arrival + 0.001)

    played = play(JitterBuffer(min_delay=0.040), packets)

    assert sequences(played) == list(range(1000, 1010))


def test_memory_stays_bounded_when_nobody_pops() -> None:
    buffer = JitterBuffer(capacity=10)
    for packet in talk(35):
        buffer.push(packet.sequence, packet.timestamp, packet.payload, packet.arrival)
        assert len(buffer) <= 10

    assert buffer.resyncs == 3 and buffer.discarded == 30


def test_before_the_first_packet_there_is_nothing_to_do() -> None:
    buffer = JitterBuffer(min_delay=0.030)

    assert buffer.next_deadline() is None and buffer.pop(0.0) is None
    assert buffer.target_delay == 0.030 and len(buffer) == 0


def test_pop_before_the_deadline_returns_nothing() -> None:
    buffer = JitterBuffer()
    buffer.push(7, 0, b"x", now=1.0)
    deadline = buffer.next_deadline()

    assert deadline == pytest.approx(1.0 + FRAME)
    assert buffer.pop(deadline - 0.001) is None
    assert buffer.pop(deadline) == Frame(7, 0, b"x")
    assert buffer.pop(deadline + 1.0) is None


@settings(max_examples=300)
@given(
    first=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    fates=st.lists(
        st.tuples(
            st.sampled_from(["arrive", "arrive", "arrive", "drop", "duplicate"]),
            st.floats(0.0, 0.3),  # extra network delay
            st.floats(0.0, 0.3),  # extra delay of the duplicate
        ),
        min_size=1,
        max_size=150,
    ),
    extra_pops=st.lists(st.floats(0.0, 4.0), max_size=30),
)
def test_any_arrival_order_plays_each_frame_at_most_once_in_order(
    first: int,
    timestamp: int,
    fates: list[tuple[str, float, float]],
    extra_pops: list[float],
) -> None:
    sent = talk(len(fates), first=first, timestamp=timestamp)
    arrivals = []
    for packet, (fate, delay, again) in zip(sent, fates, strict=True):
        if fate != "drop":
            arrivals.append(replace(packet, arrival=packet.arrival + delay))
        if fate == "duplicate":
            arrivals.append(replace(packet, arrival=packet.arrival + delay + again))
    payloads = {packet.sequence: packet.payload for packet in sent}
    buffer = JitterBuffer(capacity=len(sent) + 1)  # no packet can jump a whole buffer ahead

    played = play(buffer, arrivals)
    for time in sorted(extra_pops):  # a caller polling at odd times changes nothing
        assert buffer.pop(time + 10.0) is None

    out = sequences(played)
    steps = [(later - earlier) & 0xFFFF for earlier, later in pairwise(out)]
    assert all(step == 1 for step in steps)  # in order, never twice, gaps filled with Lost
    for _, item in played:
        if isinstance(item, Frame):
            assert item.payload == payloads[item.sequence]
    frames = sum(isinstance(item, Frame) for _, item in played)
    assert buffer.received == frames + buffer.late + buffer.duplicates + buffer.discarded
    assert buffer.resyncs == 0 and len(buffer) == 0


@settings(max_examples=200)
@given(
    pushes=st.lists(
        st.tuples(
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.floats(0.0, 100.0),
            st.booleans(),
        ),
        max_size=100,
    )
)
def test_any_input_at_all_never_raises_or_replays_and_stays_bounded(
    pushes: list[tuple[int, int, float, bool]],
) -> None:
    buffer = JitterBuffer(capacity=8)
    now = 0.0
    last_played: int | None = None
    resyncs = 0
    for sequence, timestamp, step, pop in pushes:
        now += step / 10
        buffer.push(sequence, timestamp, b"", now)
        assert len(buffer) <= 8
        if buffer.resyncs != resyncs:  # a resynchronisation may start anywhere
            resyncs, last_played = buffer.resyncs, None
        while pop and (item := buffer.pop(now)) is not None:
            if last_played is not None:
                assert (item.sequence - last_played) & 0xFFFF == 1
            last_played = item.sequence
