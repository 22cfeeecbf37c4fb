"""The session after the handshake: layer-2 messages over layer-1 frames, no I/O.

Volume per key (docs/protocol.rst, "Volume per key"): AES-GCM should encrypt far fewer than
2^34.5 blocks under one key. In protocol version 2 each direction's traffic secret is ratcheted
with a KeyUpdate message before :data:`V2_VOLUME_LIMIT` bytes were encrypted under it; the
receiver closes the connection (FRAME_LIMIT) when a sender goes beyond it. Version 1 has no
KeyUpdate: after :data:`V1_VOLUME_LIMIT` bytes in one direction the sender refuses to send
(LocalProtocolError FRAME_LIMIT, the adapter closes and the client reconnects) and the receiver
closes the connection. Both are handled here, invisible to the adapters.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatproto.wire.frame import FrameDecoder, FrameEncoder
from chatproto.wire.messages import KeyUpdate, Message, decode_message, encode_message
from chatproto.wire.padding import pad_message
from chatproto.wire.schedule import next_traffic_secret, traffic_key_iv

#: Version 1: bytes (msg_length + pad_length summed) per direction and connection: 2^32 blocks.
V1_VOLUME_LIMIT = 2**36
#: Version 2: bytes per traffic secret (2^28 AES blocks) before a KeyUpdate is due.
V2_VOLUME_LIMIT = 2**32
#: Room a version-2 sender keeps under the limit for the KeyUpdate frame itself.
KEY_UPDATE_ROOM = 64

_KEY_UPDATE_PAYLOAD = pad_message(encode_message(KeyUpdate()))


class Session:
    """Encrypts outgoing messages and decrypts incoming ones under the session keys.

    Args:
        encoder: the frame encoder, already keyed for our sending direction.
        decoder: the frame decoder, keyed for the peer's direction; it may already hold
            buffered bytes that arrived with the last handshake frame.
        send_secret: version 2: our direction's traffic secret (None: version 1).
        receive_secret: version 2: the peer's direction's traffic secret.
        volume_limit: bytes per key (tests lower it); default by version.
    """

    def __init__(
        self,
        encoder: FrameEncoder,
        decoder: FrameDecoder,
        *,
        send_secret: bytes | None = None,
        receive_secret: bytes | None = None,
        volume_limit: int | None = None,
    ) -> None:
        self._encoder = encoder
        self._decoder = decoder
        self._send_secret = send_secret
        self._receive_secret = receive_secret
        self.version = 1 if send_secret is None else 2
        if volume_limit is None:
            volume_limit = V1_VOLUME_LIMIT if self.version == 1 else V2_VOLUME_LIMIT
        self._limit = volume_limit
        #: Size of the payload of the last message returned by next_message.
        self.last_payload_size = 0
        #: KeyUpdates sent and received (version 2).
        self.key_updates_sent = 0
        self.key_updates_received = 0

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer, in any split."""
        self._decoder.receive_data(data)

    def next_message(self) -> Message | None:
        """The next complete message, or None; RemoteProtocolError on any violation.
        KeyUpdate is handled here and never returned."""
        decoder = self._decoder
        while True:
            payload = decoder.next_payload()
            if payload is None:
                return None
            if decoder.volume > self._limit:
                raise RemoteProtocolError(
                    ErrorCode.FRAME_LIMIT, f"more than {self._limit} bytes under one key"
                )
            self.last_payload_size = len(payload)
            if self._receive_secret is None:
                msg = decode_message(payload)
                if isinstance(msg, KeyUpdate):
                    raise RemoteProtocolError(
                        ErrorCode.UNKNOWN_MESSAGE_TYPE, "KeyUpdate is not part of version 1"
                    )
                return msg
            msg = decode_message(payload, padded=True)
            if not isinstance(msg, KeyUpdate):
                return msg
            self._receive_secret = next_traffic_secret(self._receive_secret)
            decoder.set_keys(*traffic_key_iv(self._receive_secret))
            self.key_updates_received += 1

    def send(self, msg: Message, *, check: bool = True) -> bytes:
        """The frame bytes carrying one message (``check``: see :func:`encode_message`)."""
        return self._frame(encode_message(msg, check=check))

    def send_many(self, msgs: Iterable[Message]) -> bytes:
        """The frame bytes carrying several messages, in order."""
        return b"".join([self._frame(encode_message(m)) for m in msgs])

    def send_encoded(self, payload: bytes) -> bytes:
        """The frame bytes carrying an already encoded message (fan-out encodes once)."""
        return self._frame(payload)

    def _frame(self, payload: bytes) -> bytes:
        encoder = self._encoder
        if self._send_secret is None:
            if encoder.volume + len(payload) + 255 > self._limit:
                raise LocalProtocolError(
                    ErrorCode.FRAME_LIMIT, "volume limit of the session keys reached; reconnect"
                )
            return encoder.encode(payload)
        payload = pad_message(payload)
        if encoder.volume + len(payload) <= self._limit - KEY_UPDATE_ROOM:
            return encoder.encode(payload)
        update = encoder.encode(_KEY_UPDATE_PAYLOAD)
        self._send_secret = next_traffic_secret(self._send_secret)
        encoder.set_keys(*traffic_key_iv(self._send_secret))
        self.key_updates_sent += 1
        return update + encoder.encode(payload)

    @property
    def frames_sent(self) -> int:
        """Frames sent under the current keys."""
        return self._encoder.seq

    @property
    def frames_received(self) -> int:
        """Frames received under the current keys."""
        return self._decoder.seq
