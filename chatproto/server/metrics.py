"""Prometheus metrics: plain counters on the hot paths, turned into metric families on scrape.

The connection and message paths only increment ints in dicts (no locks, no label look-ups);
:class:`ChatCollector` reads them when Prometheus scrapes ``--metrics``. Database transaction
latency and group-commit batch sizes are observed from the pool thread into thread-safe
prometheus_client histograms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol as TypingProtocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource


class ServerStats:
    """Counters the server increments as things happen."""

    def __init__(self) -> None:
        self.connections = 0
        self.handshakes_completed = 0
        self.logins: Counter[str] = Counter()  # ok, failed, limited
        self.registrations: Counter[str] = Counter()  # ok, refused, limited
        self.messages_in: Counter[str] = Counter()
        self.bytes_in: Counter[str] = Counter()
        self.messages_out: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        #: Delivery streams reading their user's log from the database now.
        self.replaying = 0
        #: Live entries that arrived ahead of a gap and went out once it filled (no read).
        self.gap_entries_held = 0
        #: Gaps that stayed open for the whole wait, so the stream read the log.
        self.gap_reads = 0


#: Upper bounds (seconds) of the cross-node delivery latency histogram.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NodeStats:
    """The counters of one node among several (the Redis router increments them)."""

    def __init__(self) -> None:
        self.pokes_sent = 0
        self.pokes_received = 0
        #: Log checks that found a user's log further than any poke had said.
        self.catch_up_reads = 0
        #: Per bucket of LATENCY_BUCKETS (then +Inf): pokes received, by commit-to-poke time.
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe_latency(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1
                return
        self.latency_counts[-1] += 1


class NodeCollector:
    """The per-node metrics, each labelled with the node's name."""

    def __init__(self, node: str, stats: NodeStats, live: LiveState,
                 reconnects: Callable[[], int]) -> None:
        self.node = node
        self.stats = stats
        self.live = live
        self.reconnects = reconnects

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        label = [self.node]
        for family, doc, value in (
            (CounterMetricFamily, ("chatproto_node_pokes_sent", "Pokes published to the bus"),
             stats.pokes_sent),
            (CounterMetricFamily, ("chatproto_node_pokes_received",
                                   "Pokes from other nodes received"), stats.pokes_received),
            (CounterMetricFamily, ("chatproto_node_catch_up_reads",
                                   "Log checks that found entries no poke had announced"),
             stats.catch_up_reads),
            (CounterMetricFamily, ("chatproto_node_bus_reconnects",
                                   "Redis connections re-established"), self.reconnects()),
            (GaugeMetricFamily, ("chatproto_node_connections_open", "Connections open now"),
             self.live.open_connections()),
        ):
            metric = family(*doc, labels=["node"])
            metric.add_metric(label, value)
            yield metric
        histogram = HistogramMetricFamily(
            "chatproto_node_cross_node_delivery_seconds",
            "From a commit on another node to its poke arriving here", labels=["node"])
        buckets, total = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), stats.latency_counts,
                                strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        histogram.add_metric(label, buckets, stats.latency_sum)
        yield histogram


class StoreObserver:
    """Histograms the storage layer feeds (safe to call from pool threads)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.transaction_seconds = Histogram(
            "chatproto_store_transaction_seconds", "Database transaction latency",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=registry,
        )
        self.batch_size = Histogram(
            "chatproto_store_batch_size", "Writes per group-commit transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )

    def transaction(self, desc: str, seconds: float) -> None:
        self.transaction_seconds.observe(seconds)

    def batch(self, size: int) -> None:
        self.batch_size.observe(size)


class LiveState(TypingProtocol):
    """The server's state read at scrape time."""

    def open_connections(self) -> int: ...
    def handshakes_in_progress(self) -> int: ...
    def users_online(self) -> int: ...
    def queued_writes(self) -> int: ...


class ChatCollector:
    """Reads :class:`ServerStats` and the server's live state at scrape time."""

    def __init__(self, stats: ServerStats, live: LiveState) -> None:
        self.stats = stats
        self.live = live

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        live = self.live
        yield CounterMetricFamily("chatproto_connections", "Connections accepted",
                                  value=stats.connections)
        yield GaugeMetricFamily("chatproto_connections_open", "Connections open now",
                                value=live.open_connections())
        yield GaugeMetricFamily("chatproto_handshakes_in_progress", "Handshakes in progress",
                                value=live.handshakes_in_progress())
        yield CounterMetricFamily("chatproto_handshakes_completed",
                                  "Handshakes that reached Hello done",
                                  value=stats.handshakes_completed)
        yield GaugeMetricFamily("chatproto_users_online", "Users with at least one session",
                                value=live.users_online())
        yield _labelled("chatproto_logins", "Sign-in answers by result", "result", stats.logins)
        yield _labelled("chatproto_registrations", "Registration answers by result", "result",
                        stats.registrations)
        yield _labelled("chatproto_messages_in", "Messages received by type", "type",
                        stats.messages_in)
        yield _labelled("chatproto_bytes_in", "Frame payload bytes received by type", "type",
                        stats.bytes_in)
        yield _labelled("chatproto_messages_out", "Messages sent by type", "type",
                        stats.messages_out)
        yield _labelled("chatproto_bytes_out", "Frame bytes sent by type", "type",
                        stats.bytes_out)
        yield _labelled("chatproto_errors", "Errors sent to peers, by code", "code",
                        stats.errors)
        yield GaugeMetricFamily("chatproto_store_write_queue",
                                "Writes waiting for the next group commit",
                                value=live.queued_writes())
        yield GaugeMetricFamily("chatproto_delivery_replays",
                                "Sessions replaying their log from the database",
                                value=stats.replaying)
        yield CounterMetricFamily("chatproto_delivery_gap_entries_held",
                                  "Live entries held until the gap before them filled",
                                  value=stats.gap_entries_held)
        yield CounterMetricFamily("chatproto_delivery_gap_reads",
                                  "Gaps still open after the wait, read from the log",
                                  value=stats.gap_reads)


def _labelled(name: str, doc: str, label: str, counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counts.items()):
        family.add_metric([key], value)
    return family


def metrics_resource(stats: ServerStats, live: LiveState,
                     registry: CollectorRegistry) -> Resource:
    """A web root serving the registry at ``/metrics``."""
    registry.register(ChatCollector(stats, live))
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))  # type: ignore[arg-type]  # zope interface
    return root
