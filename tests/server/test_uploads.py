"""One connection's image transfers, without a server."""

from __future__ import annotations

import hashlib

import pytest

from chatproto.server.refusals import RequestError
from chatproto.server.uploads import MAX_DRAINING, ImageUploads
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode

PNG = b"\x89PNG\r\n\x1a\n"


def chat(req: int, total: int, first: bytes = PNG) -> m.Chat:
    return m.Chat(req, b"c" * 16, 0, "bob", None, m.ContentType.IMAGE, first,
                  m.ImageInfo(total, hashlib.sha256(first).digest(), None))


def refused(uploads: ImageUploads, msg: m.Chat | m.ImageChunk) -> ErrorCode:
    with pytest.raises(RequestError) as info:
        if isinstance(msg, m.Chat):
            uploads.start(msg)
        else:
            uploads.chunk(msg)
    return info.value.code


def test_chunks_complete_an_upload_in_order() -> None:
    """The upload is returned when its last byte has arrived, with every byte in order."""
    uploads = ImageUploads(1000)
    assert uploads.start(chat(1, 12)) is None
    upload = uploads.chunk(m.ImageChunk(1, 1, b"abcd"))
    assert upload is not None and upload.take_body() == PNG + b"abcd"
    assert list(uploads.active) == [1]  # until it is answered
    uploads.finished(1)
    assert uploads.active == {}


def test_an_image_in_one_chunk_is_not_copied() -> None:
    """An image whose first chunk is all of it comes back as that very bytes object; the
    chunks are given up once taken."""
    msg = chat(1, len(PNG) + 60, PNG + b"z" * 60)
    upload = ImageUploads(1000).start(msg)
    assert upload is not None and upload.take_body() is msg.body
    assert upload.chunks == []


def test_only_the_newest_refused_transfers_are_drained() -> None:
    """At most MAX_DRAINING refused transfers are remembered; the oldest is forgotten first
    (its chunks then get INVALID_REQUEST, like any unknown ref)."""
    uploads = ImageUploads(10)
    for req in range(1, MAX_DRAINING + 2):
        assert refused(uploads, chat(req, 100)) == ErrorCode.IMAGE_TOO_LARGE
    assert len(uploads.draining) == MAX_DRAINING
    assert refused(uploads, m.ImageChunk(1, 1, b"x")) == ErrorCode.INVALID_REQUEST
    assert uploads.chunk(m.ImageChunk(2, 1, b"x")) is None


def test_a_refused_transfers_number_may_be_used_again() -> None:
    """A new image Chat may reuse the req of a refused transfer: it starts afresh."""
    uploads = ImageUploads(10)
    assert refused(uploads, chat(1, 100)) == ErrorCode.IMAGE_TOO_LARGE
    assert uploads.start(chat(1, 10)) is None
    assert 1 in uploads.active and 1 not in uploads.draining
