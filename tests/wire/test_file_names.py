"""File names are sanitised, media types checked (the stored bodies: tests/storage/
test_content_files.py)."""

from __future__ import annotations

import pytest

from chatproto.wire.file_names import MEDIA_TYPE, sanitise_file_name


@pytest.mark.parametrize(("given", "expected"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\evil.exe", "evil.exe"),
    ("..", "file"),
    (".bashrc", "bashrc"),
    ("a\x00b\nc:d*e?.txt", "a_b_c_d_e_.txt"),
    ("/", "file"),
    ("é" * 200 + ".txt", "é" * 125 + ".txt"),
])
def test_file_names_are_never_paths(given: str, expected: str) -> None:
    """Only the last path component stays, without control or reserved characters or
    leading dots, within 255 bytes of UTF-8 (the extension kept)."""
    name = sanitise_file_name(given)
    assert name == expected
    assert "/" not in name and "\\" not in name and len(name.encode()) <= 255


def test_media_types() -> None:
    assert MEDIA_TYPE.fullmatch("application/vnd.oasis.opendocument.text")
    for bad in ("text", "text/", "/plain", "text/plain; charset=utf-8", "a/b/c"):
        assert MEDIA_TYPE.fullmatch(bad) is None

