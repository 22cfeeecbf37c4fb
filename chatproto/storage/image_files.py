"""Image bodies as content-addressed files beside the database.

An image's bytes go to ``<directory>/<sha256 hex>``: written to a temporary file, fsynced,
renamed into place and the directory fsynced, all in a thread (never on the reactor), before
the message that refers to it is committed, so an acknowledged image is on disk. The
database keeps only the SHA-256 of the file's contents (``messages.file_sha256``) and its
size. The same image sent twice is one file. Reading is by that hash, so an archived image
can be fetched again; a file is deleted once no message refers to it any more.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from twisted.internet import threads
from twisted.internet.defer import Deferred

from chatproto.storage.database import Engine, SqliteEngine
from chatproto.storage.errors import StoreError

#: Length of a SHA-256 digest, the only name a file may have (hex: twice that).
DIGEST_BYTES = 32


#: The environment variable naming the image directory (until twistd has an option for it).
DIRECTORY_VARIABLE = "CHATPROTO_IMAGE_DIR"


def default_image_directory(engine: Engine, environ: Mapping[str, str]) -> Path | None:
    """Where a server keeps image files: ``$CHATPROTO_IMAGE_DIR``, else beside a SQLite
    database (``<file>.images``); None (bodies in the database) for PostgreSQL without the
    variable, whose server may be on another machine, and for an in-memory SQLite."""
    configured = environ.get(DIRECTORY_VARIABLE)
    if configured:
        return Path(configured)
    if isinstance(engine, SqliteEngine) and engine.path != ":memory:" and not (
            engine.path.startswith("file:")):
        return Path(engine.path + ".images")
    return None


class ImageFiles:
    """A directory of files named by the SHA-256 of their contents."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: bytes) -> Path:
        if len(digest) != DIGEST_BYTES:
            raise StoreError("an image file is named by a 32-byte SHA-256")
        return self.directory / digest.hex()

    def store(self, body: bytes) -> Deferred[bytes]:
        """Write ``body`` durably (in a thread); fires with its SHA-256 once it is on disk."""
        return threads.deferToThread(self.store_now, body)

    def store_now(self, body: bytes) -> bytes:
        """Write ``body`` durably in the calling thread; its SHA-256."""
        digest = hashlib.sha256(body).digest()
        target = self.path(digest)
        if target.exists():  # the same bytes are already on disk (synced when written)
            os.utime(target)  # written again now: pruning keeps it (see delete_now)
            return digest
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, target)
        self._sync_directory()
        return digest

    def read(self, digest: bytes) -> Deferred[bytes]:
        """The file's bytes (read in a thread)."""
        return threads.deferToThread(self.read_now, digest)

    def read_now(self, digest: bytes) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"image file {digest.hex()} is missing") from None

    def delete_now(self, digests: list[bytes], written_before: float) -> None:
        """Remove files no message refers to any more (missing ones are fine), except those
        written at or after ``written_before`` (seconds since the epoch): the same image
        sent again while the archive was pruned, whose message is not committed yet."""
        removed = False
        for digest in digests:
            path = self.path(digest)
            try:
                if path.stat().st_mtime >= written_before:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed = True
        if removed:
            self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
