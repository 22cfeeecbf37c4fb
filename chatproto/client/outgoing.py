"""What a client sends, checked and shaped before it goes out: texts (:func:`encode_text`),
images (:func:`load_image`, :func:`image_frames`) and targets (a user name or a group id)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from chatproto.client.errors import ImageTooLarge
from chatproto.wire import messages as m

__all__ = ["IMAGE_CHUNK_BYTES", "MAX_IMAGE_BYTES", "Target", "encode_text", "image_frames",
           "load_image", "split_target"]

#: The largest image the client sends or accepts.
MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: The size of the image chunks the client sends (at most ``messages.MAX_CHUNK_BYTES``).
IMAGE_CHUNK_BYTES = 256 * 1024

#: A user name (a direct chat) or a group id.
Target = str | int


def encode_text(text: str) -> bytes:
    """A message text as UTF-8; ValueError if it is empty or longer than
    ``messages.MAX_TEXT_BYTES`` (the one check every client uses before sending)."""
    body = text.encode("utf-8")
    if not body:
        raise ValueError("the text is empty")
    if len(body) > m.MAX_TEXT_BYTES:
        raise ValueError(f"the text is longer than {m.MAX_TEXT_BYTES} bytes")
    return body


def load_image(data: bytes | str | os.PathLike[str]) -> bytes:
    """An image's bytes, from bytes or a file path; ImageTooLarge above MAX_IMAGE_BYTES
    (a file is refused by its size before it is read), ValueError if empty."""
    if not isinstance(data, bytes):
        path = Path(data)
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageTooLarge(f"{path} is larger than {MAX_IMAGE_BYTES} bytes")
        data = path.read_bytes()
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLarge(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
    if not data:
        raise ValueError("the image is empty")
    return data


def split_target(to: Target) -> tuple[int, str | None]:
    """(group_id, peer) for a user name (a direct chat) or a group id."""
    if isinstance(to, bool) or not isinstance(to, str | int):
        raise TypeError(f"a target is a user name or a group id, not {to!r}")
    if isinstance(to, str):
        return 0, to
    return to, None


def image_frames(req: int, msg_id: bytes, group_id: int, peer: str | None, data: bytes,
                  info: m.ImageInfo) -> Iterator[m.Message]:
    """CHAT with the first chunk, then IMAGE_CHUNK(ref=req) for the rest, built lazily."""
    view = memoryview(data)
    size = IMAGE_CHUNK_BYTES
    yield m.Chat(req, msg_id, group_id, peer, None, m.ContentType.IMAGE, bytes(view[:size]),
                 info)
    for index, offset in enumerate(range(size, len(data), size), start=1):
        yield m.ImageChunk(req, index, bytes(view[offset:offset + size]))
