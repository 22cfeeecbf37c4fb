"""Images arriving in chunks on one connection: ``Chat`` (the first chunk), then ImageChunks.

The chunks are kept as they arrived and joined once, when the last one is in (an image of
one chunk is never copied); its SHA-256 is checked where it is stored, off the reactor.

A transfer occupies one of the connection's :data:`MAX_TRANSFERS` slots from its Chat until
the server has answered it (SendAck or Error after the last chunk). A transfer refused at
once (IMAGE_TOO_LARGE, or BAD_IMAGE before its end) does not occupy a slot: its remaining
chunks are counted and dropped silently until its announced total has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatproto.server.refusals import RequestError
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from chatproto.wire.images import SIGNATURE_BYTES, image_type

#: Image transfers in progress per connection.
MAX_TRANSFERS = 4
#: Refused transfers whose remaining chunks are still dropped silently, per connection (the
#: oldest is forgotten first: a client SHOULD stop sending them, and most do).
MAX_DRAINING = 16


@dataclass(slots=True)
class ImageUpload:
    """One image transfer."""

    chat: m.Chat
    total: int
    sha256: bytes
    #: The chunks received, in order (dropped when the transfer is refused).
    chunks: list[bytes] = field(default_factory=list)
    next_index: int = 1
    received: int = 0

    @property
    def complete(self) -> bool:
        return self.received >= self.total

    def take_body(self) -> bytes:
        """The image's bytes (the chunks joined; one chunk as it is), once."""
        chunks, self.chunks = self.chunks, []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ImageUploads:
    """One connection's image transfers, by the ``req`` of their Chat."""

    __slots__ = ("active", "draining", "max_image_bytes")

    def __init__(self, max_image_bytes: int) -> None:
        self.max_image_bytes = max_image_bytes
        #: Transfers receiving chunks, or complete and being checked and stored.
        self.active: dict[int, ImageUpload] = {}
        #: Refused transfers whose remaining chunks are dropped.
        self.draining: dict[int, ImageUpload] = {}

    def start(self, msg: m.Chat) -> ImageUpload | None:
        """An image's Chat: the upload if this first chunk is all of it, else None.

        Raises RequestError for a refusal (answered to the Chat's req)."""
        image = msg.image
        if image is None:
            raise RequestError(ErrorCode.INVALID_REQUEST, "an image needs its size and SHA-256")
        if image.mime is not None:
            raise RequestError(ErrorCode.INVALID_REQUEST, "a sent image's mime must be nil")
        if msg.req in self.active:
            raise RequestError(ErrorCode.INVALID_REQUEST, "that request number is in use")
        if len(self.active) >= MAX_TRANSFERS:
            raise RequestError(ErrorCode.INVALID_REQUEST, "too many image transfers at once")
        self.draining.pop(msg.req, None)  # a refused transfer's number may be used again
        if image.total_size == 0:
            raise RequestError(ErrorCode.BAD_IMAGE, "an image has at least one byte")
        upload = ImageUpload(msg, image.total_size, image.sha256)
        upload.received = len(msg.body)
        if image.total_size > self.max_image_bytes:
            self._refuse(upload, ErrorCode.IMAGE_TOO_LARGE,
                         f"images are at most {self.max_image_bytes} bytes")
        if len(msg.body) > image.total_size or image_type(msg.body[:SIGNATURE_BYTES]) is None:
            self._refuse(upload, ErrorCode.BAD_IMAGE, "not a PNG, JPEG, GIF or WebP image")
        upload.chunks.append(msg.body)
        self.active[msg.req] = upload
        return upload if upload.complete else None

    def chunk(self, msg: m.ImageChunk) -> ImageUpload | None:
        """An ImageChunk: the upload if it is now complete, else None.

        Raises RequestError for a refusal (answered to ``ref``, the Chat's req)."""
        upload = self.active.get(msg.ref)
        if upload is None or upload.complete:
            draining = self.draining.get(msg.ref)
            if draining is None:
                raise RequestError(ErrorCode.INVALID_REQUEST, "no image transfer with that ref")
            draining.received += len(msg.data)
            if draining.complete:
                del self.draining[msg.ref]
            return None
        upload.received += len(msg.data)
        if msg.index != upload.next_index or upload.received > upload.total:
            del self.active[msg.ref]
            self._refuse(upload, ErrorCode.BAD_IMAGE,
                         "image chunks out of order or beyond the announced size")
        upload.next_index += 1
        upload.chunks.append(msg.data)
        return upload if upload.complete else None

    def finished(self, req: int) -> None:
        """The complete transfer ``req`` was answered (stored, or refused): its slot is free."""
        self.active.pop(req, None)

    def _refuse(self, upload: ImageUpload, code: ErrorCode, reason: str) -> None:
        """Refuse at once; the remaining chunks (if any) are dropped as they arrive."""
        upload.chunks = []
        if not upload.complete:
            if len(self.draining) >= MAX_DRAINING:
                del self.draining[next(iter(self.draining))]
            self.draining[upload.chat.req] = upload
        raise RequestError(code, reason)
