"""The content-addressed file store and file-name sanitising."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from chatproto.storage.blobs import MEDIA_TYPE, BlobStore, sanitise_file_name


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


def test_upload_is_stored_under_its_sha256_once(tmp_path: Path) -> None:
    """A verified upload lands at root/ab/abcd...; the same bytes again are not stored
    twice; a mismatch leaves nothing behind; unlisted files are pruned."""
    store = BlobStore(tmp_path)
    data = b"hello files"
    digest = hashlib.sha256(data).digest()
    for _ in range(2):
        upload = store.begin(len(data))
        upload.write(data[:5])
        upload.write(data[5:])
        assert upload.complete
        path = upload.finish(digest)
    assert path == tmp_path / digest.hex()[:2] / digest.hex()
    assert store.read(digest, 6, 100) == b"files"
    bad = store.begin(3)
    bad.write(b"abc")
    with pytest.raises(ValueError):
        bad.finish(digest)
    assert not bad.path.exists()
    too_much = store.begin(2)
    with pytest.raises(ValueError):
        too_much.write(b"abc")
    too_much.discard()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.remove_unlisted({digest}) == 0
    assert store.remove_unlisted(set()) == 1
    assert not path.exists()
