"""The session after the handshake: layer-2 messages over layer-1 frames, no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from chatproto.wire.frame import FrameDecoder, FrameEncoder
from chatproto.wire.messages import Message, decode_message, encode_message


class Session:
    """Encrypts outgoing messages and decrypts incoming ones under the session keys.

    Args:
        encoder: the frame encoder, already keyed for our sending direction.
        decoder: the frame decoder, keyed for the peer's direction; it may already hold
            buffered bytes that arrived with the last handshake frame.
    """

    def __init__(self, encoder: FrameEncoder, decoder: FrameDecoder) -> None:
        self._encoder = encoder
        self._decoder = decoder
        #: Size of the payload of the last message returned by next_message.
        self.last_payload_size = 0

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer, in any split."""
        self._decoder.receive_data(data)

    def next_message(self) -> Message | None:
        """The next complete message, or None; RemoteProtocolError on any violation."""
        payload = self._decoder.next_payload()
        if payload is None:
            return None
        self.last_payload_size = len(payload)
        return decode_message(payload)

    def send(self, msg: Message, *, check: bool = True) -> bytes:
        """The frame bytes carrying one message (``check``: see :func:`encode_message`)."""
        return self._encoder.encode(encode_message(msg, check=check))

    def send_many(self, msgs: Iterable[Message]) -> bytes:
        """The frame bytes carrying several messages, in order."""
        encode = self._encoder.encode
        return b"".join([encode(encode_message(m)) for m in msgs])

    def send_encoded(self, payload: bytes) -> bytes:
        """The frame bytes carrying an already encoded message (fan-out encodes once)."""
        return self._encoder.encode(payload)

    @property
    def frames_sent(self) -> int:
        """Frames sent under the session keys."""
        return self._encoder.seq

    @property
    def frames_received(self) -> int:
        """Frames received under the session keys."""
        return self._decoder.seq
