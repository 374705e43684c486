"""Settings for the whole suite.

Hypothesis's per-example deadline (200 ms) and its "data generation is too slow" health check
are timing assertions: on a shared 2-core CI machine a busy moment fails them while the code
under test is right. Property tests here assert behaviour; how fast things are is measured in
``benchmarks/``, never asserted in a unit test.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("voicewire", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("voicewire")
