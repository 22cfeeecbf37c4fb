"""The content-addressed store of image and file bodies: a body is a file named by its
SHA-256 (on disk before the commit), the database keeps the hash; images are written in
batches and checked against their announced hash; files arrive as streams; the earlier file
layout stays readable; an archived body can be fetched again; pruning removes bodies nothing
refers to, also when images and files share one directory."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from chatproto.storage.content_files import (
    STALE_TMP_SECONDS,
    TMP,
    ContentFiles,
    ContentMismatch,
    RecentBodies,
    default_file_directory,
    default_image_directory,
)
from chatproto.storage.database import Database, SqliteEngine, Transaction
from chatproto.storage.files import FileStore
from chatproto.storage.store import ChatStore, Draft, StoreError
from chatproto.wire.feature_messages import FILE
from chatproto.wire.messages import ContentType

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)


def _image(sender: str, to: str, n: int, body: bytes, now_ms: int = 5,
           sha256: bytes | None = None) -> Draft:
    return Draft(sender, 0, to, n.to_bytes(16, "big"), ContentType.IMAGE, body, "image/png",
                 sha256 or hashlib.sha256(body).digest(), now_ms)


def _stored(txn: Transaction) -> list[tuple[int, bytes, bytes | None, int | None]]:
    txn.execute("SELECT id, body, file_sha256, file_size FROM messages"
                " WHERE content_type = ? ORDER BY id", (ContentType.IMAGE,))
    return [(int(i), bytes(b), None if f is None else bytes(f), s)
            for i, b, f, s in txn.fetchall()]


def _names(directory: Path) -> list[str]:
    """The stored bodies (not the temporary directory), which must be empty."""
    assert list((directory / TMP).iterdir()) == []
    return sorted(p.name for p in directory.iterdir() if p.name != TMP)


async def _users(store: ChatStore) -> None:
    for name in ("alice", "bob"):
        await store.create_user(name, "h", 0)


# --- images through the chat store -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_image_is_a_file_and_the_database_keeps_its_hash(database: Database,
                                                                 tmp_path: Path) -> None:
    """The image's bytes are in <dir>/<sha256 hex> (no temporary file left), the row has an
    empty body, the hash and the size; the log entry and the history row report the real
    size, and both the delivery path and a history row fetch the bytes again (from the file,
    once the bodies kept in memory are gone). The same image sent twice is one file."""
    files = ContentFiles(tmp_path / "images")
    store = ChatStore(database, files=files)
    await _users(store)
    first = await store.append_message(_image("alice", "bob", 1, PNG))
    await store.append_message(_image("alice", "bob", 2, PNG))
    digest = hashlib.sha256(PNG).digest()
    assert _names(tmp_path / "images") == [digest.hex()]
    assert (tmp_path / "images" / digest.hex()).read_bytes() == PNG
    rows = await database.run_interaction("rows", _stored)
    assert [(body, f, size) for _, body, f, size in rows] == [(b"", digest, len(PNG))] * 2
    entry = (await store.read_log("bob", 0, 10))[0]
    assert entry.body is None and entry.size == len(PNG)
    store.log.recent.clear()
    assert await store.message_body(first.message_id) == PNG
    page, _ = await store.history("bob", 0, "alice", 0, 10)
    assert [r.size for r in page] == [len(PNG)] * 2
    assert [await store.message_body(r.message_id) for r in page] == [PNG, PNG]


@pytest_twisted.ensureDeferred
async def test_a_just_stored_image_is_delivered_from_memory(database: Database,
                                                            tmp_path: Path) -> None:
    """A delivery that falls back to the log gets a just-stored image's body from memory (the
    very bytes object, no file read: it is found even with the file gone); a prune forgets
    the bodies kept."""
    files = ContentFiles(tmp_path / "images")
    store = ChatStore(database, files=files)
    await _users(store)
    appended = await store.append_message(_image("alice", "bob", 1, PNG))
    files.path(hashlib.sha256(PNG).digest()).unlink()
    assert await store.message_body(appended.message_id) is PNG
    await store.prune_archive(cutoff_ms=0)
    with pytest.raises(StoreError):
        await store.message_body(appended.message_id)


@pytest_twisted.ensureDeferred
async def test_an_image_that_does_not_match_its_hash_is_not_stored(database: Database,
                                                                   tmp_path: Path) -> None:
    """With files or in the database: ContentMismatch, no file, no row."""
    await _users(ChatStore(database))
    for files in (ContentFiles(tmp_path / "i"), None):
        store = ChatStore(database, files=files)
        with pytest.raises(ContentMismatch):
            await store.append_message(_image("alice", "bob", 1, PNG, sha256=b"\1" * 32))
    assert _names(tmp_path / "i") == []
    assert await database.run_interaction("rows", _stored) == []


@pytest_twisted.ensureDeferred
async def test_images_stored_in_the_database_stay_readable(database: Database,
                                                           tmp_path: Path) -> None:
    """An image stored before files were used (body in the row) is still read from the row;
    a file-backed image without an image directory is a clear StoreError."""
    await _users(ChatStore(database))
    old = await ChatStore(database).append_message(_image("alice", "bob", 1, PNG))
    new = await ChatStore(database, files=ContentFiles(tmp_path / "i")).append_message(
        _image("alice", "bob", 2, PNG[::-1]))
    store = ChatStore(database, files=ContentFiles(tmp_path / "i"))
    assert await store.message_body(old.message_id) == PNG
    assert await store.message_body(new.message_id) == PNG[::-1]
    with pytest.raises(StoreError):
        await ChatStore(database).message_body(new.message_id)


@pytest_twisted.ensureDeferred
async def test_pruning_removes_files_no_message_refers_to(database: Database,
                                                          tmp_path: Path) -> None:
    """Pruning deletes the file of a pruned image, keeps the file another (unpruned) message
    still uses, and keeps a file written again after the cutoff."""
    files = ContentFiles(tmp_path / "images")
    store = ChatStore(database, files=files)
    await _users(store)
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
    assert _names(tmp_path / "images") == sorted(
        hashlib.sha256(b).hexdigest() for b in (shared, fresh))


@pytest_twisted.ensureDeferred
async def test_one_directory_for_images_and_files(database: Database, tmp_path: Path) -> None:
    """Images and files may share a directory: the file prune keeps the bodies of images,
    and the image prune keeps bytes a file message still refers to."""
    shared = ContentFiles(tmp_path / "bodies")
    store = ChatStore(database, files=shared)
    await _users(store)
    image, both = os.urandom(400), os.urandom(300)
    now = int(time.time() * 1000)
    await store.append_message(_image("alice", "bob", 1, image, now + 60_000))
    await store.append_message(_image("alice", "bob", 2, both, now - 10_000))
    await defer.maybeDeferred(shared.store_now, b"a file's bytes")
    file_digest = hashlib.sha256(b"a file's bytes").digest()
    # A file message whose bytes are also the second image's (as the file handler sends it).
    await store.append_message(Draft("alice", 0, "bob", b"f" * 16, FILE, b"info",
                                     "application/octet-stream",
                                     hashlib.sha256(both).digest(), now))
    keep = await FileStore(database).referenced_files()
    assert keep == {hashlib.sha256(image).digest(), hashlib.sha256(both).digest()}
    assert shared.remove_unlisted(keep, time.time() + 1) == 1  # only the unreferenced one
    assert not shared.path(file_digest).exists()
    for name in ("alice", "bob"):
        await store.acknowledge(name, b"d" * 16, 100, 0)
    old = now / 1000 - 100
    os.utime(shared.path(hashlib.sha256(both).digest()), (old, old))
    assert await store.prune_archive(cutoff_ms=now) == 1  # the second image's message
    assert shared.path(hashlib.sha256(both).digest()).exists()  # the file message's bytes


def test_the_default_directories_are_beside_a_sqlite_database(tmp_path: Path) -> None:
    """Images: beside the SQLite file, the environment variable wins, none for an in-memory
    database. Files: beside the SQLite file, else ./chat-files."""
    engine = SqliteEngine(str(tmp_path / "chat.db"))
    assert default_image_directory(engine, {}) == tmp_path / "chat.db.images"
    assert default_image_directory(engine, {"CHATPROTO_IMAGE_DIR": "/srv/i"}) == Path("/srv/i")
    assert default_image_directory(SqliteEngine(":memory:"), {}) is None
    assert default_file_directory(engine) == tmp_path / "chat.db.files"
    assert default_file_directory(SqliteEngine(":memory:")) == Path("chat-files")


# --- whole bodies in batches --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bodies_stored_while_a_batch_is_written_form_the_next_batch(
        tmp_path: Path) -> None:
    """The first body starts a batch; the four that arrive meanwhile are written together;
    a mismatch fails only its own caller."""
    files = ContentFiles(tmp_path)
    bodies = [os.urandom(100 + i) for i in range(5)]
    ds = [files.store(b, hashlib.sha256(b).digest()) for b in bodies]
    bad = files.store(b"not these bytes", b"\0" * 32)
    assert await defer.gatherResults(ds) == [hashlib.sha256(b).digest() for b in bodies]
    with pytest.raises(ContentMismatch):
        await bad
    assert (files.batches, files.batched) == (2, 6)
    assert _names(tmp_path) == sorted(hashlib.sha256(b).hexdigest() for b in bodies)


def test_a_batch_writes_each_body_once_and_touches_stored_ones(tmp_path: Path) -> None:
    """One file for the same bytes twice in a batch; a body already stored is not written
    again but its time is renewed (a prune running meanwhile keeps it); a mismatch writes
    nothing; a digest is 32 bytes."""
    files = ContentFiles(tmp_path)
    a, b = b"first body", b"second body"
    files.store_now(a)
    old = time.time() - 1000
    os.utime(files.path(hashlib.sha256(a).digest()), (old, old))
    results = files.store_batch_now([(b, None), (b, hashlib.sha256(b).digest()),
                                     (a, hashlib.sha256(b).digest()), (a, None)])
    assert results[0] == results[1] == hashlib.sha256(b).digest()
    assert isinstance(results[2], ContentMismatch)
    assert results[3] == hashlib.sha256(a).digest()
    assert files.path(hashlib.sha256(a).digest()).stat().st_mtime > old + 500
    assert _names(tmp_path) == sorted(hashlib.sha256(x).hexdigest() for x in (a, b))
    with pytest.raises(StoreError):
        files.path(b"short")


# --- streamed bodies (files) --------------------------------------------------------------------


def test_a_streamed_body_is_stored_under_its_sha256_once(tmp_path: Path) -> None:
    """A verified upload lands at root/<hex>; the same bytes again are not stored twice; a
    mismatch leaves nothing behind; a body past its size is refused; unlisted bodies are
    pruned unless written after the list was taken."""
    files = ContentFiles(tmp_path)
    data = b"hello files"
    digest = hashlib.sha256(data).digest()
    for _ in range(2):
        upload = files.begin(len(data))
        upload.write(data[:5])
        upload.write(data[5:])
        assert upload.complete
        path = upload.finish(digest)
    assert path == tmp_path / digest.hex()
    assert files.read_now(digest, 6, 100) == b"files"
    assert files.read_now(digest) == data
    bad = files.begin(3)
    bad.write(b"abc")
    with pytest.raises(ValueError):
        bad.finish(digest)
    assert not bad.path.exists()
    too_much = files.begin(2)
    with pytest.raises(ValueError):
        too_much.write(b"abc")
    too_much.discard()
    assert _names(tmp_path) == [digest.hex()]
    assert files.remove_unlisted(set(), written_before=path.stat().st_mtime) == 0
    assert files.remove_unlisted({digest}) == 0
    assert files.remove_unlisted(set(), written_before=time.time() + 1) == 1
    assert not path.exists()
    with pytest.raises(StoreError):
        files.read_now(digest)


def test_bodies_in_the_earlier_file_layout_stay_readable(tmp_path: Path) -> None:
    """A body the earlier file store kept in <hex[:2]>/<hex> is read, not written again when
    the same bytes come, and pruned where it is."""
    data = b"stored by the earlier layout"
    digest = hashlib.sha256(data).digest()
    legacy = tmp_path / digest.hex()[:2] / digest.hex()
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(data)
    files = ContentFiles(tmp_path)
    assert files.read_now(digest, 10) == b"the earlier layout"
    assert files.store_now(data) == digest
    upload = files.begin(len(data))
    upload.write(data)
    assert upload.finish(digest) == legacy
    assert not files.path(digest).exists()
    assert files.remove_unlisted({digest}) == 0
    assert files.delete_now([digest], written_before=time.time() + 1) == 1
    assert not legacy.exists()


def test_temporary_files_a_crash_left_are_removed_when_the_store_opens(tmp_path: Path) -> None:
    """A temporary file older than a day goes; a younger one (a transfer of another node
    sharing the directory) stays."""
    (tmp_path / TMP).mkdir()
    stale, fresh = tmp_path / TMP / "body-old", tmp_path / TMP / "upload-new"
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    old = time.time() - STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    assert ContentFiles(tmp_path).stale_removed == 1
    assert [p.name for p in (tmp_path / TMP).iterdir()] == ["upload-new"]


# --- bodies kept in memory ---------------------------------------------------------------------


def test_recent_bodies_are_bounded_by_bytes() -> None:
    """The oldest go first once the total passes the bound; a body larger than the bound is
    not kept; the same id is kept once."""
    recent = RecentBodies(max_bytes=250)
    for i in range(3):
        recent.put(i, bytes([i]) * 100)
    assert [recent.get(i) for i in range(3)] == [None, b"\1" * 100, b"\2" * 100]
    assert (len(recent), recent.size) == (2, 200)
    recent.put(9, b"x" * 251)
    recent.put(2, b"y" * 100)
    assert (recent.get(9), recent.get(2), recent.size) == (None, b"\2" * 100, 200)
    recent.clear()
    assert (len(recent), recent.size, recent.get(1)) == (0, 0, None)
