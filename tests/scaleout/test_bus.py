"""The bus's Redis connections without a Redis: the reply parser on a StringTransport."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport

from chatproto.server.bus import _Subscriber


class _Bus:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []

    def _message(self, channel: bytes, message: bytes) -> None:
        self.messages.append((channel, message))


class _Factory:
    def __init__(self, bus: _Bus) -> None:
        self.bus = bus


def _published(channel: bytes, message: bytes) -> bytes:
    """A pub/sub message as Redis sends it to a subscriber (RESP2)."""
    return (b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
            % (len(channel), channel, len(message), message))


def _subscriber() -> tuple[Any, _Bus, StringTransport]:
    bus = _Bus()
    proto = _Subscriber(charset=None, convertNumbers=False)
    proto.factory = _Factory(bus)
    transport = StringTransport()
    proto.transport = transport  # no connectionMade: it would send AUTH/SELECT
    return proto, bus, transport


def test_every_message_of_one_read_is_handled_in_that_read() -> None:
    """A burst of pokes read at once reaches the router at once, without pausing the socket
    (txredisapi's pure-Python parser handled one per reactor iteration)."""
    proto, bus, transport = _subscriber()
    sent = [(b"chat:u:user%d" % i, b"\x93\x01poke%d" % i + b"\r\n" * (i % 3))
            for i in range(300)]
    proto.dataReceived(b"".join(_published(c, msg) for c, msg in sent))
    assert bus.messages == sent
    assert transport.producerState == "producing"


def test_messages_split_anywhere_are_reassembled() -> None:
    proto, bus, _ = _subscriber()
    sent = [(b"chat:u:a", b"x" * 70), (b"chat:u:bb", b""), (b"chat:u:c", b"$3\r\n*1\r\n")]
    data = b"".join(_published(c, msg) for c, msg in sent)
    for cut in range(1, len(data)):
        bus.messages.clear()
        proto.dataReceived(data[:cut])
        proto.dataReceived(data[cut:])
        assert bus.messages == sent, cut
