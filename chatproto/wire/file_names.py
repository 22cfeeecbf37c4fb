"""File names and media types of file messages (docs/protocol.rst, "Any file"): the rules a
server applies to a FileInfo and a client applies before saving a received file."""

from __future__ import annotations

import re
import unicodedata

#: Characters never kept in a file name.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,62}"
#: Media types: type/subtype of RFC 6838 restricted names (no parameters).
MEDIA_TYPE = re.compile(f"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")
#: The name used when nothing of the given name is left.
FALLBACK_NAME = "file"


def sanitise_file_name(name: str, max_bytes: int = 255) -> str:
    """A file name that is never a path: the last path component, without control and
    reserved characters, no leading dots, NFC, at most ``max_bytes`` bytes of UTF-8."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    while len(name.encode("utf-8")) > max_bytes:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:-1] + dot + ext) if dot and len(ext) < 16 and stem else name[:-1]
    return name or FALLBACK_NAME
