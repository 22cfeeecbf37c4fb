"""Content-addressed files beside the database: a file's bytes live in
``<root>/<hex[:2]>/<hex>`` named by their SHA-256, never in a database row.

An upload is written to a temporary file in ``<root>/tmp`` while its hash is computed, then
checked against the announced SHA-256 and renamed into place (an identical file already
stored is kept, not written twice). The file store of images (the perf work) may use the same
layout; both keep the rule "the name is the SHA-256 of the bytes".
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from chatproto.storage.database import Database
from chatproto.wire.file_names import MEDIA_TYPE, sanitise_file_name

__all__ = ["MEDIA_TYPE", "BlobStore", "BlobUpload", "default_blob_dir", "sanitise_file_name"]

def default_blob_dir(db: Database) -> Path:
    """Beside an SQLite database file (``<db>.files``); for PostgreSQL, ``chat-files`` in the
    working directory (a server option should name a shared directory)."""
    path = getattr(db.engine, "path", None)
    if isinstance(path, str) and path not in ("", ":memory:"):
        return Path(path + ".files")
    return Path("chat-files")


class BlobUpload:
    """One file being received: bytes go to a temporary file, hashed as they come."""

    def __init__(self, store: BlobStore, expected_size: int) -> None:
        self.store = store
        self.expected_size = expected_size
        self.received = 0
        self._hash = hashlib.sha256()
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        """Append bytes (ValueError past the announced size: nothing more is written)."""
        if self.received + len(data) > self.expected_size:
            raise ValueError("more bytes than the announced size")
        self._file.write(data)
        self._hash.update(data)
        self.received += len(data)

    @property
    def complete(self) -> bool:
        return self.received == self.expected_size

    def finish(self, sha256: bytes) -> Path:
        """Check the SHA-256 and move the file into place (ValueError on a mismatch: the
        temporary file is removed)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self._hash.digest() != sha256:
            self.discard()
            raise ValueError("the file does not match its SHA-256")
        final = self.store.path_of(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            self.path.unlink()
        else:
            os.replace(self.path, final)
        return final

    def discard(self) -> None:
        """Drop a transfer that will not finish."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    """The directory of content-addressed files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: bytes) -> Path:
        digest = sha256.hex()
        return self.root / digest[:2] / digest

    def begin(self, size: int) -> BlobUpload:
        return BlobUpload(self, size)

    def read(self, sha256: bytes, offset: int, length: int) -> bytes:
        """Bytes of a stored file (OSError if it is missing)."""
        with open(self.path_of(sha256), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def remove_unlisted(self, keep: set[bytes]) -> int:
        """Delete stored files whose SHA-256 is not in ``keep`` (the archive retention
        removed their last message); how many."""
        removed = 0
        for sub in self.root.iterdir():
            if sub == self.tmp_dir or not sub.is_dir():
                continue
            for entry in sub.iterdir():
                try:
                    digest = bytes.fromhex(entry.name)
                except ValueError:
                    continue
                if digest not in keep:
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed
