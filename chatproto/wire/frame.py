"""Layer 1 of the wire protocol: plaintext and AES-256-GCM encrypted frames.

This module is sans-IO: it turns payloads into bytes and bytes into payloads and never
touches a socket, a clock or Twisted.

Encrypted frame::

    header (17 bytes, struct ">IB12s")       ciphertext                      tag
    +------------+---------+-------------+  +----------------------------+  +----------+
    | msg_length | pad_len | iv          |  | payload | pad_len x 0x00   |  | 16 bytes |
    | uint32 BE  | uint8   | 12 bytes    |  | (msg_length + pad_len)     |  |          |
    +------------+---------+-------------+  +----------------------------+  +----------+

    ciphertext || tag = AESGCM(key).encrypt(iv, payload + zero padding, aad=header)
    iv = static_iv XOR (4 zero bytes || seq as uint64 BE)

``seq`` counts the frames sent in one direction under the current keys, starting at 0.
The receiver computes the iv it expects and rejects any other before decrypting, which
rejects replayed, reordered, dropped and reflected frames.

Plaintext frame (only for the two handshake messages sent before any key exists)::

    uint32 BE length (1..MAX_PLAIN_BODY) | body
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_BODY",
    "HEADER_LEN",
    "IV_LEN",
    "KEY_LEN",
    "MAX_FRAMES",
    "MAX_BUFFER_SLACK",
    "MAX_PLAIN_BODY",
    "PLAIN_HEADER_LEN",
    "TAG_LEN",
    "FrameDecoder",
    "FrameEncoder",
    "no_padding",
    "pad_to_block",
]

DEFAULT_MAX_BODY = 1024 * 1024
"""Default bound on ``msg_length + pad_length`` of an encrypted frame."""
MAX_PLAIN_BODY = 4096
"""Largest body of a plaintext (handshake) frame (version 2's hybrid key shares need 1,300)."""
HEADER_LEN = 17
"""Length of an encrypted frame header."""
PLAIN_HEADER_LEN = 4
"""Length of a plaintext frame header."""
TAG_LEN = 16
"""Length of the AES-GCM authentication tag."""
KEY_LEN = 32
"""Length of an AES-256 key."""
IV_LEN = 12
"""Length of the static iv and of the per-frame iv."""
MAX_FRAMES = 2**32
"""Number of frames that may be sent in one direction under one key."""

MAX_BUFFER_SLACK = 64 * 1024
"""The decoder buffers at most two whole frames plus this many bytes (one read's worth)."""

_MAX_UINT32 = 0xFFFFFFFF
_MAX_PAD = 0xFF

_HEADER = struct.Struct(">IB12s")
_LEN_PAD = struct.Struct(">IB")
_PLAIN_HEADER = struct.Struct(">I")
_ZEROS = bytes(_MAX_PAD)

# Compact the receive buffer only when at least this many consumed bytes sit in front.
_COMPACT_MIN = 64 * 1024


def pad_to_block(block: int) -> Callable[[int], int]:
    """Return a padding policy that pads payloads to a multiple of ``block`` bytes.

    Args:
        block: The block size, 1 to 256 (1 means no padding).

    Returns:
        A function mapping a payload length to a pad length in 0..block-1.

    Raises:
        ValueError: If ``block`` is outside 1..256.
    """
    if not 1 <= block <= _MAX_PAD + 1:
        raise ValueError(f"block must be in 1..256, not {block}")

    def policy(n: int) -> int:
        return (-n) % block

    policy.__name__ = f"pad_to_block_{block}"
    policy.__qualname__ = policy.__name__
    return policy


def no_padding(n: int) -> int:
    """Padding policy that never pads.

    Args:
        n: The payload length (ignored).

    Returns:
        Always 0.
    """
    return 0


_DEFAULT_PADDING = pad_to_block(16)


def _check_keys(key: bytes, static_iv: bytes) -> tuple[AESGCM, int]:
    """Validate a key and static iv and return the AEAD object and the iv as an int."""
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_LEN:
        raise LocalProtocolError(ErrorCode.INTERNAL_ERROR, f"key must be {KEY_LEN} bytes")
    if not isinstance(static_iv, bytes | bytearray | memoryview) or len(static_iv) != IV_LEN:
        raise LocalProtocolError(ErrorCode.INTERNAL_ERROR, f"static iv must be {IV_LEN} bytes")
    return AESGCM(bytes(key)), int.from_bytes(static_iv, "big")


def _check_limits(max_body: int, max_frames: int) -> None:
    """Validate the ``max_body`` and ``max_frames`` constructor arguments."""
    if not 0 <= max_body <= _MAX_UINT32:
        raise LocalProtocolError(ErrorCode.INTERNAL_ERROR, f"invalid max_body {max_body}")
    if not 0 <= max_frames <= MAX_FRAMES:
        raise LocalProtocolError(ErrorCode.INTERNAL_ERROR, f"invalid max_frames {max_frames}")


class FrameEncoder:
    """Turns payloads into frames for one direction of a connection.

    Without keys the encoder is in plaintext mode and only :meth:`encode_plain` works;
    with keys only :meth:`encode` works.
    """

    def __init__(
        self,
        key: bytes | None = None,
        static_iv: bytes | None = None,
        *,
        padding: Callable[[int], int] = _DEFAULT_PADDING,
        max_body: int = DEFAULT_MAX_BODY,
        max_frames: int = MAX_FRAMES,
    ) -> None:
        """Create an encoder.

        Args:
            key: The 32-byte AES-256 key, or None for plaintext mode.
            static_iv: The 12-byte static iv (required with ``key``).
            padding: Padding policy mapping a payload length to a pad length (0..255).
            max_body: Largest ``msg_length + pad_length`` the peer accepts.
            max_frames: Number of frames allowed under one key (tests lower it).

        Raises:
            LocalProtocolError: If the key, iv or limits are invalid.
        """
        _check_limits(max_body, max_frames)
        self._padding = padding
        self._max_body = max_body
        self._max_frames = max_frames
        self._aead: AESGCM | None = None
        self._iv_int = 0
        self._seq = 0
        self._volume = 0
        if key is not None or static_iv is not None:
            if key is None or static_iv is None:
                raise LocalProtocolError(
                    ErrorCode.INTERNAL_ERROR, "key and static_iv must be given together"
                )
            self.set_keys(key, static_iv)

    def set_keys(self, key: bytes, static_iv: bytes) -> None:
        """Switch to (new) keys; the frame counter and the volume restart at 0.

        Args:
            key: The 32-byte AES-256 key.
            static_iv: The 12-byte static iv.

        Raises:
            LocalProtocolError: If the key or iv has the wrong length.
        """
        self._aead, self._iv_int = _check_keys(key, static_iv)
        self._seq = 0
        self._volume = 0

    def set_padding(self, padding: Callable[[int], int]) -> None:
        """Change the padding policy for later frames (version 2 pads inside messages)."""
        self._padding = padding

    @property
    def seq(self) -> int:
        """Number of encrypted frames sent under the current keys."""
        return self._seq

    @property
    def volume(self) -> int:
        """Bytes encrypted under the current keys (``msg_length + pad_length`` summed)."""
        return self._volume

    @property
    def keyed(self) -> bool:
        """Whether keys are set (encrypted mode)."""
        return self._aead is not None

    def encode(self, payload: bytes) -> bytes:
        """Encrypt one payload into a frame.

        Args:
            payload: The payload, 0 to ``max_body`` bytes.

        Returns:
            The complete frame: header, ciphertext and tag.

        Raises:
            LocalProtocolError: UNEXPECTED_MESSAGE without keys, FRAME_TOO_LARGE if the
                payload exceeds ``max_body``, FRAME_LIMIT once ``max_frames`` frames were
                sent under the current keys, BAD_PADDING if the padding policy returns a
                value outside 0..255.
        """
        aead = self._aead
        if aead is None:
            raise LocalProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "encode() needs keys")
        seq = self._seq
        if seq >= self._max_frames:
            raise LocalProtocolError(ErrorCode.FRAME_LIMIT, "frame counter exhausted; rekey")
        n = len(payload)
        room = self._max_body - n
        if room < 0:
            raise LocalProtocolError(
                ErrorCode.FRAME_TOO_LARGE, f"payload of {n} bytes exceeds {self._max_body}"
            )
        pad = self._padding(n)
        if not 0 <= pad <= _MAX_PAD:
            raise LocalProtocolError(ErrorCode.BAD_PADDING, f"padding policy returned {pad}")
        if pad > room:
            pad = room
        iv = (self._iv_int ^ seq).to_bytes(IV_LEN, "big")
        header = _HEADER.pack(n, pad, iv)
        self._seq = seq + 1
        self._volume += n + pad
        if pad:
            payload = bytes(payload) + _ZEROS[:pad]
        return header + aead.encrypt(iv, payload, header)

    def encode_plain(self, payload: bytes) -> bytes:
        """Wrap a handshake payload in a plaintext frame.

        Args:
            payload: The payload, 1 to ``MAX_PLAIN_BODY`` bytes.

        Returns:
            The complete plaintext frame.

        Raises:
            LocalProtocolError: UNEXPECTED_MESSAGE if keys are set (never send plaintext
                once keys exist), MALFORMED_FRAME for an empty payload, FRAME_TOO_LARGE
                for one longer than ``MAX_PLAIN_BODY``.
        """
        if self._aead is not None:
            raise LocalProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "plaintext frame after keys")
        n = len(payload)
        if n == 0:
            raise LocalProtocolError(ErrorCode.MALFORMED_FRAME, "empty plaintext frame")
        if n > MAX_PLAIN_BODY:
            raise LocalProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"plaintext payload of {n} bytes exceeds {MAX_PLAIN_BODY}",
            )
        return _PLAIN_HEADER.pack(n) + payload


class FrameDecoder:
    """Turns received bytes into payloads for one direction of a connection.

    Without keys the decoder expects plaintext frames; with keys, encrypted frames.
    After any :class:`RemoteProtocolError` the decoder is broken: every later call to
    :meth:`receive_data`, :meth:`next_payload`, :meth:`peek_iv` or :meth:`set_keys`
    raises the same error again.
    """

    def __init__(
        self,
        key: bytes | None = None,
        static_iv: bytes | None = None,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_frames: int = MAX_FRAMES,
        max_buffer: int | None = None,
    ) -> None:
        """Create a decoder.

        Args:
            key: The 32-byte AES-256 key, or None for plaintext mode.
            static_iv: The 12-byte static iv (required with ``key``).
            max_body: Largest ``msg_length + pad_length`` accepted.
            max_frames: Number of frames accepted under one key (tests lower it).
            max_buffer: Most bytes held unconsumed (default: two largest frames plus
                ``MAX_BUFFER_SLACK``); more is FRAME_TOO_LARGE.

        Raises:
            LocalProtocolError: If the key, iv or limits are invalid.
        """
        _check_limits(max_body, max_frames)
        self._max_body = max_body
        self._max_frames = max_frames
        if max_buffer is None:
            largest = max(max_body, MAX_PLAIN_BODY) + HEADER_LEN + TAG_LEN
            max_buffer = 2 * largest + MAX_BUFFER_SLACK
        self._max_buffer = max_buffer
        self._buf = bytearray()
        self._pos = 0
        self._aead: AESGCM | None = None
        self._iv_int = 0
        self._seq = 0
        self._volume = 0
        self._error: RemoteProtocolError | None = None
        if key is not None or static_iv is not None:
            if key is None or static_iv is None:
                raise LocalProtocolError(
                    ErrorCode.INTERNAL_ERROR, "key and static_iv must be given together"
                )
            self.set_keys(key, static_iv)

    def set_keys(self, key: bytes, static_iv: bytes) -> None:
        """Switch to (new) keys for the next frame; the frame counter restarts at 0.

        Bytes already buffered but not yet returned are decrypted with the new keys.

        Args:
            key: The 32-byte AES-256 key.
            static_iv: The 12-byte static iv.

        Raises:
            LocalProtocolError: If the key or iv has the wrong length.
            RemoteProtocolError: If the decoder is broken.
        """
        if self._error is not None:
            raise self._error
        self._aead, self._iv_int = _check_keys(key, static_iv)
        self._seq = 0
        self._volume = 0

    @property
    def seq(self) -> int:
        """Number of encrypted frames received under the current keys."""
        return self._seq

    @property
    def volume(self) -> int:
        """Bytes decrypted under the current keys (``msg_length + pad_length`` summed)."""
        return self._volume

    @property
    def keyed(self) -> bool:
        """Whether keys are set (encrypted mode)."""
        return self._aead is not None

    @property
    def buffered(self) -> int:
        """Number of bytes received and not yet consumed."""
        return len(self._buf) - self._pos

    def expected_iv(self) -> bytes | None:
        """Return the iv the next encrypted frame must carry, or None in plaintext mode."""
        if self._aead is None:
            return None
        return (self._iv_int ^ self._seq).to_bytes(IV_LEN, "big")

    def peek_iv(self) -> bytes | None:
        """Return the iv field of the next buffered frame.

        The buffered bytes are read as an encrypted frame header whatever the mode, so
        the caller can tell which of two keys the next frame was sent under before
        calling :meth:`set_keys`.

        Returns:
            The 12 iv bytes, or None if fewer than ``HEADER_LEN`` bytes are buffered.

        Raises:
            RemoteProtocolError: If the decoder is broken.
        """
        if self._error is not None:
            raise self._error
        pos = self._pos
        if len(self._buf) - pos < HEADER_LEN:
            return None
        return bytes(self._buf[pos + 5 : pos + HEADER_LEN])

    def receive_data(self, data: bytes) -> None:
        """Buffer received bytes; call :meth:`next_payload` until it returns None.

        Args:
            data: Any number of bytes, split anywhere.

        Raises:
            RemoteProtocolError: FRAME_TOO_LARGE if more than ``max_buffer`` bytes would be
                held unconsumed; or the error that broke the decoder.
        """
        if self._error is not None:
            raise self._error
        if self.buffered + len(data) > self._max_buffer:
            self._error = self._fail(
                ErrorCode.FRAME_TOO_LARGE, f"more than {self._max_buffer} bytes buffered"
            )
            raise self._error
        pos = self._pos
        if pos:
            buf = self._buf
            if pos >= len(buf):
                buf.clear()
                self._pos = 0
            elif pos >= _COMPACT_MIN and pos * 2 >= len(buf):
                del buf[:pos]
                self._pos = 0
        self._buf += data

    def next_payload(self) -> bytes | None:
        """Return the next complete frame's payload, or None if more bytes are needed.

        In plaintext mode this is the plaintext frame body; in keyed mode the decrypted
        payload without its padding.

        Returns:
            The payload, or None.

        Raises:
            RemoteProtocolError: On any protocol violation (FRAME_TOO_LARGE,
                MALFORMED_FRAME, FRAME_LIMIT, BAD_IV, BAD_TAG, BAD_PADDING). Once raised,
                the same error is raised by every later call.
        """
        if self._error is not None:
            raise self._error
        try:
            aead = self._aead
            if aead is None:
                return self._next_plain()
            return self._next_encrypted(aead)
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _fail(self, code: ErrorCode, message: str) -> RemoteProtocolError:
        """Build the error that breaks the decoder."""
        return RemoteProtocolError(code, message)

    def _next_plain(self) -> bytes | None:
        """Parse one plaintext frame from the buffer."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < PLAIN_HEADER_LEN:
            return None
        (n,) = _PLAIN_HEADER.unpack_from(buf, pos)
        if n == 0:
            raise self._fail(ErrorCode.MALFORMED_FRAME, "empty plaintext frame")
        if n > MAX_PLAIN_BODY:
            raise self._fail(ErrorCode.FRAME_TOO_LARGE, f"plaintext frame of {n} bytes")
        end = pos + PLAIN_HEADER_LEN + n
        if end > len(buf):
            return None
        payload = bytes(buf[pos + PLAIN_HEADER_LEN : end])
        self._pos = end
        return payload

    def _next_encrypted(self, aead: AESGCM) -> bytes | None:
        """Parse, check and decrypt one encrypted frame from the buffer."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < HEADER_LEN:
            return None
        msg_len, pad_len = _LEN_PAD.unpack_from(buf, pos)
        body = msg_len + pad_len
        if body > self._max_body:
            raise self._fail(ErrorCode.FRAME_TOO_LARGE, f"frame body of {body} bytes")
        seq = self._seq
        if seq >= self._max_frames:
            raise self._fail(ErrorCode.FRAME_LIMIT, "frame counter exhausted")
        total = HEADER_LEN + body + TAG_LEN
        if avail < total:
            return None
        iv = (self._iv_int ^ seq).to_bytes(IV_LEN, "big")
        with memoryview(buf) as view:
            if not hmac.compare_digest(view[pos + 5 : pos + HEADER_LEN], iv):
                raise self._fail(ErrorCode.BAD_IV, f"unexpected iv for frame {seq}")
            try:
                plain = aead.decrypt(
                    iv, view[pos + HEADER_LEN : pos + total], view[pos : pos + HEADER_LEN]
                )
            except InvalidTag:
                raise self._fail(ErrorCode.BAD_TAG, f"bad tag on frame {seq}") from None
        if pad_len:
            if plain.count(0, msg_len) != pad_len:
                raise self._fail(ErrorCode.BAD_PADDING, f"nonzero padding in frame {seq}")
            plain = plain[:msg_len]
        self._seq = seq + 1
        self._volume += body
        pos += total
        if pos == len(buf):
            buf.clear()
            pos = 0
        self._pos = pos
        return plain
