"""Image bodies as content-addressed files beside the database: the file holds the bytes
(named by their SHA-256, on disk before the commit), the database the hash and size; an
archived image can be fetched again; pruning removes files nothing refers to."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import pytest_twisted

from chatproto.storage.database import Database, SqliteEngine, Transaction
from chatproto.storage.image_files import ImageFiles, default_image_directory
from chatproto.storage.store import ChatStore, Draft, StoreError
from chatproto.wire.messages import ContentType

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)


def _image(sender: str, to: str, n: int, body: bytes, now_ms: int = 5) -> Draft:
    return Draft(sender, 0, to, n.to_bytes(16, "big"), ContentType.IMAGE, body, "image/png",
                 hashlib.sha256(body).digest(), now_ms)


def _stored(txn: Transaction) -> list[tuple[int, bytes, bytes | None, int | None]]:
    txn.execute("SELECT id, body, file_sha256, file_size FROM messages"
                " WHERE content_type = ? ORDER BY id", (ContentType.IMAGE,))
    return [(int(i), bytes(b), None if f is None else bytes(f), s)
            for i, b, f, s in txn.fetchall()]


@pytest_twisted.ensureDeferred
async def test_an_image_is_a_file_and_the_database_keeps_its_hash(database: Database,
                                                                 tmp_path: Path) -> None:
    """The image's bytes are in <dir>/<sha256 hex> (no temporary file left), the row has an
    empty body, the hash and the size; the log entry and the history row report the real
    size, and both the delivery path and a history row fetch the bytes again. The same
    image sent twice is one file."""
    files = ImageFiles(tmp_path / "images")
    store = ChatStore(database, files=files)
    for name in ("alice", "bob"):
        await store.create_user(name, "h", 0)
    first = await store.append_message(_image("alice", "bob", 1, PNG))
    await store.append_message(_image("alice", "bob", 2, PNG))
    digest = hashlib.sha256(PNG).digest()
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [digest.hex()]
    assert (tmp_path / "images" / digest.hex()).read_bytes() == PNG
    rows = await database.run_interaction("rows", _stored)
    assert [(body, f, size) for _, body, f, size in rows] == [(b"", digest, len(PNG))] * 2
    entry = (await store.read_log("bob", 0, 10))[0]
    assert entry.body is None and entry.size == len(PNG)
    assert await store.message_body(first.message_id) == PNG
    page, _ = await store.history("bob", 0, "alice", 0, 10)
    assert [r.size for r in page] == [len(PNG)] * 2
    assert [await store.message_body(r.message_id) for r in page] == [PNG, PNG]


@pytest_twisted.ensureDeferred
async def test_images_stored_in_the_database_stay_readable(database: Database,
                                                           tmp_path: Path) -> None:
    """An image stored before files were used (body in the row) is still read from the row;
    a file-backed image without an image directory is a clear StoreError."""
    for name in ("alice", "bob"):
        await ChatStore(database).create_user(name, "h", 0)
    old = await ChatStore(database).append_message(_image("alice", "bob", 1, PNG))
    new = await ChatStore(database, files=ImageFiles(tmp_path / "i")).append_message(
        _image("alice", "bob", 2, PNG[::-1]))
    store = ChatStore(database, files=ImageFiles(tmp_path / "i"))
    assert await store.message_body(old.message_id) == PNG
    assert await store.message_body(new.message_id) == PNG[::-1]
    with pytest.raises(StoreError):
        await ChatStore(database).message_body(new.message_id)


@pytest_twisted.ensureDeferred
async def test_pruning_removes_files_no_message_refers_to(database: Database,
                                                          tmp_path: Path) -> None:
    """Pruning deletes the file of a pruned image, keeps the file another (unpruned) message
    still uses, and keeps a file written again after the cutoff."""
    files = ImageFiles(tmp_path / "images")
    store = ChatStore(database, files=files)
    for name in ("alice", "bob"):
        await store.create_user(name, "h", 0)
    now = int(time.time() * 1000)
    gone, shared, fresh = os.urandom(500), os.urandom(600), os.urandom(700)
    for n, (body, at) in enumerate(((gone, now - 10_000), (shared, now - 10_000),
                                    (shared, now + 60_000), (fresh, now - 10_000)), 1):
        await store.append_message(_image("alice", "bob", n, body, at))
    for name in ("alice", "bob"):
        await store.acknowledge(name, b"d" * 16, 100, 0)
    old = now / 1000 - 100
    for body in (gone, shared):
        os.utime(files.path(hashlib.sha256(body).digest()), (old, old))
    # fresh's file was just written (as if sent again while the archive is pruned): kept
    assert await store.prune_archive(cutoff_ms=now) == 3
    left = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert left == sorted(hashlib.sha256(b).hexdigest() for b in (shared, fresh))


def test_the_image_directory_is_beside_a_sqlite_database_or_configured(tmp_path: Path) -> None:
    """Beside the SQLite file by default; the environment variable wins; none for an
    in-memory database."""
    engine = SqliteEngine(str(tmp_path / "chat.db"))
    assert default_image_directory(engine, {}) == tmp_path / "chat.db.images"
    assert default_image_directory(engine, {"CHATPROTO_IMAGE_DIR": "/srv/i"}) == Path("/srv/i")
    assert default_image_directory(SqliteEngine(":memory:"), {}) is None
