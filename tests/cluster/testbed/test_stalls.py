"""The rule that keeps the bed's own freezes out of voicewire's gaps (no namespaces needed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.cluster.testbed.stalls import STALL_S, StallLog, merged, uncovered


def test_only_lateness_beyond_the_threshold_is_a_stall():
    log = StallLog()
    log.late(1.0, 1.0 + STALL_S / 2)
    assert log.intervals == []
    log.late(2.0, 2.5)
    assert log.intervals == [(2.0, 2.5)]


def test_work_due_inside_a_stall_extends_it_rather_than_adding_one():
    log = StallLog()
    for due in (10.0, 10.02, 10.04):  # packets held through one freeze, released at 11.0
        log.late(due, 11.0)
    log.late(11.2, 11.3)
    assert log.intervals == [(10.0, 11.0), (11.2, 11.3)]
    assert log.between(10.5, 11.1) == [(10.0, 11.0)]


def test_the_log_keeps_only_the_newest_intervals():
    log = StallLog(keep=3)
    for i in range(5):
        log.late(float(i), i + 0.5)
    assert [a for a, _ in log.intervals] == [2.0, 3.0, 4.0]


def test_a_gap_counts_only_time_outside_the_stalls():
    stalls = merged([(1.0, 1.5), (1.4, 2.0), (3.0, 3.2)])
    assert stalls == [(1.0, 2.0), (3.0, 3.2)]
    assert uncovered(0.0, 4.0, stalls) == 4.0 - 1.0 - 0.2
    assert uncovered(1.2, 1.8, stalls) == 0.0
    assert uncovered(2.0, 3.0, stalls) == 1.0
    assert abs(uncovered(0.5, 1.5, stalls) - 0.5) < 1e-12


intervals = st.lists(
    st.tuples(st.floats(0, 100), st.floats(0, 5)).map(lambda t: (t[0], t[0] + t[1])), max_size=8
)


@given(intervals, st.floats(0, 100), st.floats(0, 10))
def test_uncovered_time_is_between_zero_and_the_gap(raw, start, width):
    stalls = merged(raw)
    left = uncovered(start, start + width, stalls)
    assert -1e-9 <= left <= width + 1e-9
    assert abs(uncovered(start, start + width, []) - width) < 1e-9
