"""Content-addressed files beside the database: the bodies of images and of files.

One store serves both (two directories by default, ``--image-dir`` and ``--file-dir``; they
may name the same directory). A body lives in ``<directory>/<sha256 hex>``, named by the
SHA-256 of its bytes and never in a database row; the database keeps the hash, so an
archived image or file can be fetched again. The same bytes sent twice are one file.

Durability: a body is written to ``<directory>/tmp``, fsynced, renamed into place and the
directory fsynced before the message that refers to it is committed, so an acknowledged
body is on disk. Image bodies arrive whole and are written in batches by one thread job at a
time (:meth:`ContentFiles.store`): every file of a batch is written and synced, then all are
renamed and the directory is synced once for the batch (the one directory is why the layout
is flat). File bodies arrive as a stream (:meth:`ContentFiles.begin`), hashed as they come.

Earlier layouts stay readable: file bodies were kept in ``<directory>/<hex[:2]>/<hex>``;
such a file is found, kept and pruned where it is.

:class:`RecentBodies` keeps the bodies of the images stored last in memory (bounded), so the
delivery of a just-stored image that falls back to the log does not read its file again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatproto.storage.database import Engine, SqliteEngine
from chatproto.storage.errors import StoreError

#: Length of a SHA-256 digest, the only name a file may have (hex: twice that).
DIGEST_BYTES = 32
#: The environment variable naming the image directory (``--image-dir`` wins).
DIRECTORY_VARIABLE = "CHATPROTO_IMAGE_DIR"
#: The sub-directory of temporary files (bodies being written).
TMP = "tmp"
#: Bytes of recently stored image bodies kept in memory for their delivery, by default.
DEFAULT_RECENT_BYTES = 16 * 1024 * 1024
#: A temporary file older than this (seconds) when the store is opened was left by a crash
#: and is removed (younger ones may be transfers of another node sharing the directory).
STALE_TMP_SECONDS = 24 * 3600

_sync_data = getattr(os, "fdatasync", os.fsync)


class ContentMismatch(StoreError):
    """The bytes do not match the SHA-256 they were announced with."""


def default_image_directory(engine: Engine, environ: Mapping[str, str]) -> Path | None:
    """Where a server keeps image bodies without ``--image-dir``: ``$CHATPROTO_IMAGE_DIR``,
    else beside a SQLite database (``<file>.images``); None (bodies in the database) for
    PostgreSQL without the variable, whose server may be on another machine, and for an
    in-memory SQLite."""
    configured = environ.get(DIRECTORY_VARIABLE)
    if configured:
        return Path(configured)
    if isinstance(engine, SqliteEngine) and engine.path != ":memory:" and not (
            engine.path.startswith("file:")):
        return Path(engine.path + ".images")
    return None


def default_file_directory(engine: Engine) -> Path:
    """Where a server keeps file bodies without ``--file-dir``: beside a SQLite database file
    (``<file>.files``); for PostgreSQL, ``chat-files`` in the working directory (a server
    option should name a shared directory)."""
    path = getattr(engine, "path", None)
    if isinstance(path, str) and path not in ("", ":memory:"):
        return Path(path + ".files")
    return Path("chat-files")


class ContentUpload:
    """One body arriving as a stream: bytes go to a temporary file, hashed as they come."""

    def __init__(self, files: ContentFiles, expected_size: int) -> None:
        self.files = files
        self.expected_size = expected_size
        self.received = 0
        self._hash = hashlib.sha256()
        fd, name = tempfile.mkstemp(dir=files.tmp_dir, prefix="upload-")
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
        """Check the SHA-256, sync the file and move it into place, directory synced (call in
        a thread). ValueError on a mismatch: the temporary file is removed."""
        self._file.flush()
        if self._hash.digest() != sha256:
            self.discard()
            raise ValueError("the file does not match its SHA-256")
        _sync_data(self._file.fileno())
        self._file.close()
        existing = self.files.existing(sha256)
        if existing is not None:  # the same bytes are stored: keep that file
            self.path.unlink()
            os.utime(existing)
        else:
            existing = self.files.path(sha256)
            os.replace(self.path, existing)
        self.files.sync_directory()
        return existing

    def discard(self) -> None:
        """Drop a transfer that will not finish."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class ContentFiles:
    """A directory of files named by the SHA-256 of their contents."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.tmp_dir = self.directory / TMP
        self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.stale_removed = sum(_remove_older(p, time.time() - STALE_TMP_SECONDS)
                                 for p in self.tmp_dir.iterdir())
        #: Bodies waiting for the next batch, with who waits for them.
        self._pending: list[tuple[bytes, bytes | None, Deferred[bytes]]] = []
        self._writing = False
        #: Batches written and files in them (for tests and the benchmark's counts).
        self.batches = 0
        self.batched = 0

    # --- names -------------------------------------------------------------------------------

    def path(self, digest: bytes) -> Path:
        """Where the body named ``digest`` is written."""
        if len(digest) != DIGEST_BYTES:
            raise StoreError("a stored body is named by a 32-byte SHA-256")
        return self.directory / digest.hex()

    def legacy_path(self, digest: bytes) -> Path:
        """Where the file store before the unified one kept a body (``<hex[:2]>/<hex>``)."""
        name = digest.hex()
        return self.directory / name[:2] / name

    def existing(self, digest: bytes) -> Path | None:
        """The body's file if it is stored (in either layout)."""
        for path in (self.path(digest), self.legacy_path(digest)):
            if path.exists():
                return path
        return None

    # --- whole bodies, written in batches ----------------------------------------------------

    def store(self, body: bytes, sha256: bytes | None = None) -> Deferred[bytes]:
        """Write ``body`` durably (in a thread, batched with the bodies that arrive while a
        batch is being written); fires with its SHA-256 once it is on disk. With ``sha256``,
        the bytes are checked against it first (ContentMismatch: nothing is written)."""
        d: Deferred[bytes] = Deferred()
        self._pending.append((body, sha256, d))
        if not self._writing:
            self._write_pending()
        return d

    def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._writing = True
        work = threads.deferToThread(self.store_batch_now, [(b, s) for b, s, _ in batch])

        def written(results: list[bytes | StoreError] | Failure) -> None:
            self._writing = False
            for (_, _, d), result in zip(batch, results if isinstance(results, list)
                                         else [results] * len(batch), strict=True):
                if isinstance(result, bytes):
                    d.callback(result)
                else:
                    d.errback(result)
            if self._pending:
                self._write_pending()

        work.addBoth(written)

    def store_now(self, body: bytes, sha256: bytes | None = None) -> bytes:
        """Write one body durably in the calling thread; its SHA-256 (ContentMismatch)."""
        result = self.store_batch_now([(body, sha256)])[0]
        if isinstance(result, StoreError):
            raise result
        return result

    def store_batch_now(self, bodies: list[tuple[bytes, bytes | None]]
                        ) -> list[bytes | StoreError]:
        """Write bodies durably in the calling thread: each file written and synced, then all
        renamed into place and the directory synced once. Per body, its SHA-256 or
        ContentMismatch. A file already stored is kept (its time touched, so a prune running
        now keeps it) and written again by nobody."""
        results: list[bytes | StoreError] = []
        moves: list[tuple[Path, Path]] = []
        seen: set[bytes] = set()
        try:
            for body, expected in bodies:
                digest = hashlib.sha256(body).digest()
                if expected is not None and digest != expected:
                    results.append(ContentMismatch("the bytes do not match their SHA-256"))
                    continue
                results.append(digest)
                if digest in seen:
                    continue
                seen.add(digest)
                existing = self.existing(digest)
                if existing is not None:
                    os.utime(existing)
                    continue
                moves.append((self._write_synced(body), self.path(digest)))
            for tmp, target in moves:
                os.replace(tmp, target)
        except BaseException:
            for tmp, _ in moves:
                tmp.unlink(missing_ok=True)
            raise
        if seen:
            # Also for a batch of files already stored: another writer's rename (a stream's,
            # another node's) may not be synced yet, and the acknowledgement follows this.
            self.sync_directory()
        self.batches += 1
        self.batched += len(bodies)
        return results

    def _write_synced(self, body: bytes) -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="body-")
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            _sync_data(fd)
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        os.close(fd)
        return Path(name)

    # --- streamed bodies ---------------------------------------------------------------------

    def begin(self, size: int) -> ContentUpload:
        """A body arriving in pieces (write, then finish with its SHA-256, in a thread)."""
        return ContentUpload(self, size)

    # --- reading -----------------------------------------------------------------------------

    def read(self, digest: bytes, offset: int = 0, length: int = -1) -> Deferred[bytes]:
        """The body's bytes, all or ``length`` from ``offset`` (read in a thread)."""
        return threads.deferToThread(self.read_now, digest, offset, length)

    def read_now(self, digest: bytes, offset: int = 0, length: int = -1) -> bytes:
        """StoreError if the body is not stored (pruned, or the directory was lost)."""
        path = self.existing(digest)
        try:
            if path is None:
                raise FileNotFoundError
            with open(path, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise StoreError(f"stored body {digest.hex()} is missing") from None

    # --- pruning -----------------------------------------------------------------------------

    def delete_now(self, digests: Iterable[bytes], written_before: float) -> int:
        """Remove the named bodies (missing ones are fine), except those written at or after
        ``written_before`` (seconds since the epoch): the same bytes sent again while the
        archive was pruned, whose message is not committed yet. How many were removed."""
        removed = 0
        for digest in digests:
            for path in (self.path(digest), self.legacy_path(digest)):
                removed += _remove_older(path, written_before)
        if removed:
            self.sync_directory()
        return removed

    def remove_unlisted(self, keep: set[bytes], written_before: float | None = None) -> int:
        """Delete stored bodies whose SHA-256 is not in ``keep`` (no archived message refers
        to them), except those written at or after ``written_before`` (default: now), which
        may belong to a message not committed yet; how many."""
        cutoff = time.time() if written_before is None else written_before
        removed = 0
        for entry in self.directory.iterdir():
            if entry.name == TMP:
                continue
            if entry.is_dir():
                if len(entry.name) == 2:  # the earlier layout's <hex[:2]>/<hex>
                    removed += sum(_remove_older(e, cutoff) for e in entry.iterdir()
                                   if _digest(e.name) not in (None, *keep))
                continue
            if _digest(entry.name) not in (None, *keep):
                removed += _remove_older(entry, cutoff)
        if removed:
            self.sync_directory()
        return removed

    def sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _digest(name: str) -> bytes | None:
    """The SHA-256 a file's name spells, if it is one."""
    if len(name) != 2 * DIGEST_BYTES:
        return None
    try:
        return bytes.fromhex(name)
    except ValueError:
        return None


def _remove_older(path: Path, written_before: float) -> int:
    try:
        if path.stat().st_mtime >= written_before:
            return 0
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


class RecentBodies:
    """The bodies of the images stored last, by message id, up to ``max_bytes`` in all (the
    oldest go first). The bytes are the ones the reactor already holds: keeping them costs no
    copy, and a delivery that falls back to the log (its connection's write buffer was full)
    finds them here instead of reading the file again."""

    __slots__ = ("_bodies", "_size", "max_bytes")

    def __init__(self, max_bytes: int = DEFAULT_RECENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[int, bytes] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._bodies)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size

    def put(self, message_id: int, body: bytes) -> None:
        if len(body) > self.max_bytes or message_id in self._bodies:
            return
        self._bodies[message_id] = body
        self._size += len(body)
        while self._size > self.max_bytes:
            _, old = self._bodies.popitem(last=False)
            self._size -= len(old)

    def get(self, message_id: int) -> bytes | None:
        return self._bodies.get(message_id)

    def clear(self) -> None:
        self._bodies.clear()
        self._size = 0
