"""Prometheus metrics of a transceiver: sessions, their endings, setup time, dropped datagrams.

Per-session RTT, jitter and loss are not labels here (one series per call would explode the
metrics store); they are in each call's stats, its closing log line, and the setup histogram.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class TransceiverMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sessions = Gauge(
            "voicewire_transceiver_sessions", "Sessions open now.", registry=self.registry
        )
        self._opened = Counter(
            "voicewire_transceiver_sessions_opened", "Sessions created.", registry=self.registry
        )
        self._closed = Counter(
            "voicewire_transceiver_sessions_closed",
            "Sessions ended, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._setup = Histogram(
            "voicewire_transceiver_setup_seconds",
            "From answer to connected (ICE nominated and DTLS up).",
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self._drops = Counter(
            "voicewire_transceiver_drops",
            "Datagrams dropped before reaching a session layer, by reason.",
            ["reason"],
            registry=self.registry,
        )

        self._event_drops = Counter(
            "voicewire_transceiver_event_drops",
            "Events for a client that it never got, by reason.",
            ["reason"],
            registry=self.registry,
        )

    def opened(self) -> None:
        self._opened.inc()
        self.sessions.inc()

    def connected(self, setup_seconds: float) -> None:
        self._setup.observe(setup_seconds)

    def closed(self, reason: str) -> None:
        self._closed.labels(reason).inc()
        self.sessions.dec()

    def drop(self, reason: str) -> None:
        self._drops.labels(reason).inc()

    def drop_event(self, reason: str) -> None:
        self._event_drops.labels(reason).inc()
