"""The load generator's flood producer and RSS sampler (benchmarks/loadgen.py), without a
server: a fake client and transport, and task.Clock."""

from __future__ import annotations

import argparse
import os
from typing import Any

from twisted.internet import task

from benchmarks.loadgen import Flood, Gen, RssSampler


class Transport:
    def __init__(self) -> None:
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert not streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class Client:
    def __init__(self) -> None:
        self.transport = Transport()
        self.chats = 0

    def send_chat(self) -> None:
        self.chats += 1


def test_the_flood_writes_a_batch_per_drained_buffer_and_stops_at_its_count() -> None:
    client = Client()
    flood = Flood(client, 250, 100)  # type: ignore[arg-type]
    client.transport.registerProducer(flood, False)
    sent = []
    while client.transport.producer is not None:
        client.transport.producer.resumeProducing()
        sent.append(client.chats)
    assert sent == [100, 200, 250]
    assert flood.sent == 250


def test_a_stopped_flood_sends_no_more() -> None:
    client = Client()
    flood = Flood(client, 1000, 100)  # type: ignore[arg-type]
    flood.resumeProducing()
    flood.stopProducing()
    flood.resumeProducing()
    assert client.chats == 100


def test_the_sampler_records_rss_on_its_clock_and_reports_the_peak() -> None:
    clock = task.Clock()
    gen = Gen(argparse.Namespace(target="server", prefix="t", server_pid=os.getpid()), clock)
    sampler = RssSampler(gen, interval=0.1)
    for _ in range(5):
        clock.advance(0.1)
    assert len(sampler.samples) == 6  # at start, then every interval
    assert all(kib > 0 for _, kib in sampler.samples)
    peak = sampler.peak_since(0.0)
    assert peak == max(kib for _, kib in sampler.samples)
    sampler.stop()
    clock.advance(1.0)
    assert len(sampler.samples) == 7
