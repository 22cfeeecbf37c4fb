"""Protocol version 2 pads inside the encrypted message, so a frame's length says little.

The padded payload is the encoded message followed by zero bytes; the receiver decodes one
MessagePack value and requires every byte after it to be zero (BAD_PADDING otherwise). The
layer-1 header's ``msg_length`` is the padded payload's length and its ``pad_length`` is 0, so
the layer-1 layout is unchanged from version 1.

Policy (docs/protocol.rst, "Padding in version 2"): Signin and Register are always exactly
:data:`CREDENTIALS_SIZE` bytes, whatever the name and password; every other message is padded to
the smallest bucket that holds it: 32, 64, 128, ... 4,096 bytes (powers of two), then the next
multiple of 4,096 bytes, never beyond :data:`MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

from chatproto.wire.records import MAX_MESSAGE_BYTES

#: Signin and Register are padded to exactly this size (the largest Signin is 1,081 bytes).
CREDENTIALS_SIZE = 1088
#: Smallest bucket.
MIN_BUCKET = 32
#: Above this size buckets grow linearly, in steps of this size.
LINEAR_STEP = 4096


def bucket_size(n: int) -> int:
    """The padded size of an ``n``-byte message (not Signin or Register)."""
    if n <= MIN_BUCKET:
        return MIN_BUCKET
    if n <= LINEAR_STEP:
        return 1 << (n - 1).bit_length()
    return min(-(-n // LINEAR_STEP) * LINEAR_STEP, max(n, MAX_MESSAGE_BYTES))


def pad_message(body: bytes, *, credentials: bool = False) -> bytes:
    """``body`` followed by its zero padding (``credentials``: a Signin or Register)."""
    size = CREDENTIALS_SIZE if credentials else bucket_size(len(body))
    if size <= len(body):
        return body
    return body + bytes(size - len(body))
