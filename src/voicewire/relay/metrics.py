"""Prometheus view of the relay: every worker's published counters, summed at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voicewire.relay.counters import Drop, RelayCounters
from voicewire.relay.stats_board import StatsBoard


class RelayCollector(Collector):
    def __init__(self, board: StatsBoard, workers_alive: Callable[[], int]) -> None:
        self.board = board
        self.workers_alive = workers_alive

    def collect(self) -> Iterator[Metric]:
        total = RelayCounters()
        for slot in range(self.board.slots):
            counters = self.board.read(slot)
            for name in RelayCounters.SCALARS:
                setattr(total, name, getattr(total, name) + getattr(counters, name))
            total.drops = [a + b for a, b in zip(total.drops, counters.drops, strict=True)]

        packets = CounterMetricFamily(
            "voicewire_relay_packets", "Datagrams forwarded, by direction.", labels=["direction"]
        )
        octets = CounterMetricFamily(
            "voicewire_relay_bytes", "Payload bytes forwarded, by direction.", labels=["direction"]
        )
        packets.add_metric(["upstream"], total.upstream_packets)
        packets.add_metric(["downstream"], total.downstream_packets)
        octets.add_metric(["upstream"], total.upstream_bytes)
        octets.add_metric(["downstream"], total.downstream_bytes)
        drops = CounterMetricFamily(
            "voicewire_relay_drops", "Datagrams not forwarded, by reason.", labels=["reason"]
        )
        for reason in Drop:
            drops.add_metric([reason.label], total.drops[reason])
        learned = CounterMetricFamily(
            "voicewire_relay_flows_learned",
            "Flows installed, by what taught them: a verified STUN token, a downstream packet, "
            "or a flow record in Redis.",
            labels=["source"],
        )
        learned.add_metric(["stun"], total.learned_from_stun)
        learned.add_metric(["downstream"], total.learned_from_downstream)
        learned.add_metric(["redis"], total.learned_from_redis)
        lookups = CounterMetricFamily(
            "voicewire_relay_flow_lookups", "Flow records asked of Redis, for clients with no flow."
        )
        lookups.add_metric([], total.lookups)
        results = CounterMetricFamily(
            "voicewire_relay_flow_lookup_results",
            "Flow lookups answered, by result: hit, miss, refused (a record naming an address "
            "outside the allow-list), or error (Redis failed).",
            labels=["result"],
        )
        results.add_metric(["hit"], total.lookup_hits)
        results.add_metric(["miss"], total.lookup_misses)
        results.add_metric(["refused"], total.lookup_refused)
        results.add_metric(["error"], total.lookup_errors)
        expired = CounterMetricFamily(
            "voicewire_relay_flows_expired", "Flows forgotten after the idle timeout."
        )
        expired.add_metric([], total.expired)
        yield from (packets, octets, drops, learned, lookups, results, expired)
        yield GaugeMetricFamily("voicewire_relay_flows", "Live flows.", value=total.flows)
        yield GaugeMetricFamily(
            "voicewire_relay_workers", "Worker processes running.", value=self.workers_alive()
        )
