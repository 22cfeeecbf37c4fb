"""Image types are recognised by their signatures only."""

from __future__ import annotations

import pytest

from chatproto.wire.images import EXTENSIONS, SIGNATURE_BYTES, image_type


@pytest.mark.parametrize(("data", "mime"), [
    (b"\x89PNG\r\n\x1a\n" + b"rest", "image/png"),
    (b"\xff\xd8\xff\xe0", "image/jpeg"),
    (b"GIF87a...", "image/gif"),
    (b"GIF89a...", "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
])
def test_allowed_signatures(data: bytes, mime: str) -> None:
    """Each allowed type is recognised from its first SIGNATURE_BYTES bytes and has a file
    extension."""
    assert image_type(data[:SIGNATURE_BYTES]) == mime
    assert mime in EXTENSIONS


@pytest.mark.parametrize("data", [
    b"", b"\x89PNG\r\n\x1a", b"%PDF-1.4", b"RIFF\x00\x00\x00\x00WAVE", b"RIFF\x00\x00\x00\x00WEB",
    b"GIF88a", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\xff\xd8",
])
def test_anything_else_is_not_an_image(data: bytes) -> None:
    """Truncated signatures, other RIFF kinds, SVG (scriptable) and PDF are refused."""
    assert image_type(data) is None
