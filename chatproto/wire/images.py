"""Which images the protocol carries: recognised by their first bytes, never by a name."""

from __future__ import annotations

#: Bytes needed to recognise every allowed type (WebP's signature is the longest).
SIGNATURE_BYTES = 12

#: File name extension for each allowed MIME type.
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
              "image/webp": ".webp"}


def image_type(data: bytes) -> str | None:
    """The MIME type of an image from its signature, or None if it is not an allowed type:
    PNG ``89 50 4E 47 0D 0A 1A 0A``, JPEG ``FF D8 FF``, GIF ``GIF87a``/``GIF89a``, WebP
    ``RIFF`` + 4 bytes + ``WEBP``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None
