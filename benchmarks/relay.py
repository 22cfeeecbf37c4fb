"""The baseline: the least a relay using chatproto's codecs has to do for one chat message.

What it does per connection:

* reads a 12-byte plaintext preamble ``>IQ`` = (connection index, group id) and answers one
  byte once the connection is registered; no handshake;
* keys its :class:`FrameDecoder` / :class:`FrameEncoder` with fixed keys derived from the index
  (``benchmarks.common.relay_keys``), which the load generator knows too;
* decrypts each frame, decodes it with the real message codec (``decode_message``, with its
  validation), and for a ``Chat`` builds a ``Deliver`` (same fields the real server fills in)
  and encodes + encrypts it (``encode_message`` and the frame encoder, same padding policy) for:

  - group id 0: the partner connection ``index ^ 1`` only (the real server additionally
    sends a SendAck and an echo Deliver to the sender and stores the message);
  - group id g > 0: every connection that announced group g, the sender included (the real
    server delivers to every member too).

Anything else (DeliveryAck, Ping, ...) is decoded and dropped. No storage, no routing
tables beyond the index, no acks, no timers.

Run: ``python -m benchmarks.relay --port PORT [--core 0]``; prints ``READY <port>`` when
listening.
"""

from __future__ import annotations

import argparse
import sys
import time

from twisted.internet import protocol

from benchmarks.common import RELAY_HELLO, pin_to, raise_nofile, relay_keys
from chatproto.wire import messages as m
from chatproto.wire.errors import RemoteProtocolError
from chatproto.wire.frame import FrameDecoder, FrameEncoder


class RelayProtocol(protocol.Protocol):
    def __init__(self, factory: RelayFactory) -> None:
        self.factory = factory
        self.index: int | None = None
        self.group = 0
        self.name = ""
        self.user_seq = 0
        self.pre = b""
        self.decoder: FrameDecoder | None = None
        self.encoder: FrameEncoder | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.decoder is None:
            self.pre += data
            if len(self.pre) < RELAY_HELLO.size:
                return
            self.index, self.group = RELAY_HELLO.unpack_from(self.pre)
            data = self.pre[RELAY_HELLO.size :]
            self.pre = b""
            ck, civ, sk, siv = relay_keys(self.index)
            self.decoder = FrameDecoder(ck, civ)
            self.encoder = FrameEncoder(sk, siv)
            self.name = f"u{self.index}"
            self.factory.conns[self.index] = self
            if self.group:
                self.factory.groups.setdefault(self.group, []).append(self)
            self.transport.write(b"\x01")  # registered: the generator may start sending
        decoder = self.decoder
        try:
            decoder.receive_data(data)
            while True:
                payload = decoder.next_payload()
                if payload is None:
                    return
                msg = m.decode_message(payload)
                if isinstance(msg, m.Chat):
                    self.relay(msg)
        except RemoteProtocolError as e:
            print(f"relay: {self.name}: {e}", file=sys.stderr)
            self.transport.loseConnection()

    def relay(self, msg: m.Chat) -> None:
        now = int(time.time() * 1000)
        if msg.group_id:
            targets = self.factory.groups.get(msg.group_id, [])
        else:
            assert self.index is not None
            partner = self.factory.conns.get(self.index ^ 1)
            targets = [partner] if partner is not None else []
        image = msg.image
        if image is not None:
            image = m.ImageInfo(image.total_size, image.sha256, "image/png")
        for t in targets:
            t.user_seq += 1
            deliver = m.Deliver(t.user_seq, msg.group_id, self.name, msg.to, t.user_seq, now,
                                msg.client_msg_id, msg.content_type, msg.body, image)
            assert t.encoder is not None
            t.transport.write(t.encoder.encode(m.encode_message(deliver)))

    def connectionLost(self, reason: object = None) -> None:
        if self.index is not None and self.factory.conns.get(self.index) is self:
            del self.factory.conns[self.index]
        if self.group:
            members = self.factory.groups.get(self.group, [])
            if self in members:
                members.remove(self)


class RelayFactory(protocol.Factory):
    def __init__(self) -> None:
        self.conns: dict[int, RelayProtocol] = {}
        self.groups: dict[int, list[RelayProtocol]] = {}

    def buildProtocol(self, addr: object) -> RelayProtocol:
        return RelayProtocol(self)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--core", type=int, default=None)
    args = parser.parse_args()
    pin_to(args.core)
    raise_nofile()
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    port = reactor.listenTCP(args.port, RelayFactory(), backlog=4096,  # type: ignore[attr-defined]
                             interface="127.0.0.1")
    print(f"READY {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
