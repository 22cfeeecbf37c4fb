"""The per-node metrics and the in-process router's cross-node interface."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from chatproto.server.metrics import LATENCY_BUCKETS, NodeCollector, NodeStats
from chatproto.server.router import LocalRouter


class Live:
    def open_connections(self) -> int:
        return 7

    def handshakes_in_progress(self) -> int:
        return 0

    def users_online(self) -> int:
        return 0

    def queued_writes(self) -> int:
        return 0


def test_node_metrics_are_labelled_with_the_node() -> None:
    """Pokes, catch-up reads, reconnects and open connections carry the node label; the
    cross-node latency histogram is cumulative with +Inf and a sum."""
    stats = NodeStats()
    stats.pokes_sent, stats.pokes_received, stats.catch_up_reads = 3, 2, 1
    stats.observe_latency(0.0005)
    stats.observe_latency(0.02)
    stats.observe_latency(60)
    registry = CollectorRegistry()
    registry.register(NodeCollector("n1", stats, Live(), lambda: 4))
    text = generate_latest(registry).decode()
    for line in ('chatproto_node_pokes_sent_total{node="n1"} 3.0',
                 'chatproto_node_pokes_received_total{node="n1"} 2.0',
                 'chatproto_node_catch_up_reads_total{node="n1"} 1.0',
                 'chatproto_node_bus_reconnects_total{node="n1"} 4.0',
                 'chatproto_node_connections_open{node="n1"} 7.0',
                 'chatproto_node_cross_node_delivery_seconds_bucket{le="0.001",node="n1"} 1.0',
                 'chatproto_node_cross_node_delivery_seconds_bucket{le="0.025",node="n1"} 2.0',
                 'chatproto_node_cross_node_delivery_seconds_bucket{le="+Inf",node="n1"} 3.0',
                 'chatproto_node_cross_node_delivery_seconds_count{node="n1"} 3.0'):
        assert line in text, text
    assert len(stats.latency_counts) == len(LATENCY_BUCKETS) + 1


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name

    def push(self, payload: bytes) -> None:
        pass

    def log_advanced(self, user_seq: int, entry: object, body: bytes | None) -> None:
        pass


def test_local_router_arrive_and_leave_are_attach_and_detach() -> None:
    """In one process the first session is the first anywhere, the last the last anywhere;
    there are no presence changes to report from elsewhere."""
    router = LocalRouter()
    a, b = Conn("ann"), Conn("ann")
    results: list[bool] = []
    router.arrive(a).addCallback(results.append)
    router.arrive(b).addCallback(results.append)
    assert router.names() == ["ann"] and "ann" in router.names_set()
    router.leave(a).addCallback(results.append)
    router.leave(b).addCallback(results.append)
    assert results == [True, False, False, True]
    router.presence_changes(lambda n: None, lambda n, s: None)
    assert router.names() == []


def test_bus_addresses() -> None:
    """redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=P], with defaults; anything else is a
    ValueError saying what is wrong; the password is not in the repr."""
    import pytest

    from chatproto.server.bus import BusAddress, check_node_name

    a = BusAddress.parse("redis://10.0.0.5")
    assert (a.host, a.port, a.db, a.prefix, a.password) == ("10.0.0.5", 6379, 0, b"chat:", None)
    b = BusAddress.parse("redis://:s3cret@h:6380/2?prefix=prod:")
    assert (b.host, b.port, b.db, b.prefix, b.password) == ("h", 6380, 2, b"prod:", "s3cret")
    assert "s3cret" not in repr(b)
    for bad, why in (("http://h", "redis://"), ("redis://h/x", "a number"),
                     ("redis://h?x=1", "unknown"), ("redis://u:p@h", "ACL"),
                     ("redis://h:99999", "port")):
        with pytest.raises(ValueError, match=why):
            BusAddress.parse(bad)
    assert check_node_name("n1.2") == "n1.2"
    for bad_name in ("", "a b", "x" * 65):
        with pytest.raises(ValueError):
            check_node_name(bad_name)
