"""Fixtures for tests on the multi-host bed: one bed per session, always torn down.

Missing root or ``ip netns`` FAILS these tests instead of skipping them, so a CI machine that
lost its privileges cannot report green while testing nothing; a developer who knowingly has
no namespaces leaves them out with ``pytest --ignore=tests/cluster/testbed``.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator

import pytest

from tests.cluster.testbed import netns, topology
from tests.cluster.testbed.bed import STATE_ROOT, Bed, Service

LOCK_WAIT = 300.0  # seconds to wait for another session's bed (ours takes well under a minute)


@pytest.fixture(scope="session")
def bed() -> Iterator[Bed]:
    """The bed, up for the whole session; down (and checked empty) at the end, pass or fail."""
    problems = netns.missing_prerequisites()
    if problems:
        pytest.fail(
            "the multi-host test bed cannot run here (leave it out on purpose with "
            "--ignore=tests/cluster/testbed):\n  " + "\n  ".join(problems),
            pytrace=False,
        )
    with exclusive(topology.default_prefix()):
        running = Bed()
        try:
            running.up()
            yield running
        finally:
            running.down()
        left = running.namespaces()
        assert not left, f"bed teardown left namespaces behind: {left}"


@contextlib.contextmanager
def exclusive(prefix: str) -> Iterator[None]:
    """Hold the bed's lock: two sessions building ``vw-*`` at once would tear each other down."""
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / f"{prefix.rstrip('-')}.lock", "w") as handle:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session held the {prefix}* bed for {LOCK_WAIT} s")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def lb(bed: Bed) -> Iterator:
    """The load balancer, put back to every relay in its starting mode after the test."""
    mode = bed.lb.mode
    yield bed.lb
    bed.lb.restore()
    bed.lb.set_mode(mode)


@pytest.fixture
def impairment(bed: Bed) -> Iterator:
    """Lets a test change the hop; the session's impairment comes back afterwards."""
    original = bed.impairment
    yield bed.set_impairment
    bed.set_impairment(original)


@pytest.fixture
def echo_relays(bed: Bed) -> Iterator[dict[str, Service]]:
    """Stand-in relays: a UDP echo on port 3478 in each relay host, naming itself in replies."""
    started = {}
    try:
        for host in topology.RELAYS:
            started[host] = bed.start_echo_relay(host)
        yield started
    finally:
        for service in started.values():
            service.stop()
            bed.services.remove(service)
