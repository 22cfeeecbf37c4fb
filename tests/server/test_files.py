"""Any file (issue 16) end to end on SQLite and PostgreSQL: offered, accepted before any byte
is sent, chunked with a SHA-256, stored as a content-addressed file beside the database and
fetched again from history, also after a restart."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_twisted

from chatproto.client import ServerError
from chatproto.client.feature_requests import file_info_of
from chatproto.server.feature_settings import FeatureSettings
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from tests.server.conftest import Loopback, start_loopback
from tests.server.test_chat import login, users

#: A small limit, so the maximum-size file has several chunks and the test stays fast.
MAX_BYTES = 3 * f.MAX_FILE_CHUNK_BYTES + 12345


def configure(lb: Loopback, blob_dir: Path) -> None:
    lb.server.features.files.settings = replace(FeatureSettings(), max_file_bytes=MAX_BYTES,
                                                blob_dir=blob_dir)


def stored_files(blob_dir: Path) -> list[Path]:
    return sorted(p for p in blob_dir.rglob("*") if p.is_file())


@pytest_twisted.ensureDeferred
async def test_maximum_size_file_arrives_byte_identical_and_is_fetched_again_after_restart(
        database_uri: str, tmp_path: Path) -> None:
    """A file of exactly the maximum size reaches the recipient as a FILE message with its
    sanitised name, media type, size and SHA-256; its bytes, fetched in chunks, are
    identical; the body is one content-addressed file; after a restart the file is fetched
    again from history."""
    blob_dir = tmp_path / "files"
    data = os.urandom(MAX_BYTES)
    source = tmp_path / "report.pdf"
    source.write_bytes(data)
    lb, stop = await start_loopback(database_uri)
    try:
        configure(lb, blob_dir)
        alice, bob = await users(lb, "alice", "bob")
        ack = await alice.client.send_file("bob", source, name="../../etc/report.pdf")
        deliver = await bob.rec.next_chat()
        assert (deliver.content_type, deliver.sender, deliver.conv_seq) == (
            f.FILE, "alice", ack.conv_seq)
        info = file_info_of(deliver.body)
        assert (info.name, info.mime, info.size, info.sha256) == (
            "report.pdf", "application/pdf", MAX_BYTES, hashlib.sha256(data).digest())
        assert await bob.client.fetch_file("alice", deliver.conv_seq, info) == data
        [stored] = stored_files(blob_dir)
        assert stored.name == info.sha256.hex() and stored.read_bytes() == data
    finally:
        await stop()
    lb, stop = await start_loopback(database_uri)
    try:
        configure(lb, blob_dir)
        bob = await login(lb, "bob")
        page = await bob.client.history("alice")
        [entry] = page.entries
        info = file_info_of(entry.body)
        assert await bob.client.fetch_file("alice", entry.conv_seq, info) == data
    finally:
        await stop()


@pytest_twisted.ensureDeferred
async def test_oversized_file_is_refused_before_its_bytes_are_stored(
        loopback: Loopback, tmp_path: Path) -> None:
    """One byte over the limit: FILE_TOO_LARGE answers the offer, no byte is stored and no
    message is logged."""
    blob_dir = tmp_path / "files"
    configure(loopback, blob_dir)
    alice, bob = await users(loopback, "alice", "bob")
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * (MAX_BYTES + 1))
    with pytest.raises(ServerError) as info:
        await alice.client.send_file("bob", source)
    assert info.value.code == ErrorCode.FILE_TOO_LARGE
    assert stored_files(blob_dir) == []
    assert (await bob.client.history("alice")).entries == ()


@pytest_twisted.ensureDeferred
async def test_only_members_fetch_and_bad_transfers_are_refused(
        loopback: Loopback, tmp_path: Path) -> None:
    """Someone outside the conversation cannot fetch its file; a retracted file cannot be
    fetched; chunks that do not match the announced SHA-256 are refused (BAD_FILE) and
    nothing is kept; an offer to an unknown user is refused before any byte."""
    blob_dir = tmp_path / "files"
    configure(loopback, blob_dir)
    alice, bob, carol = await users(loopback, "alice", "bob", "carol")
    source = tmp_path / "notes.txt"
    source.write_bytes(b"private notes")
    ack = await alice.client.send_file("bob", source)
    for attempt in (carol.client.fetch_file("bob", ack.conv_seq),
                    carol.client.fetch_file("alice", ack.conv_seq)):
        with pytest.raises(ServerError) as info:
            await attempt
        assert info.value.code == ErrorCode.UNKNOWN_MESSAGE
    with pytest.raises(ServerError) as info:
        await alice.client.send_file("nobody", source)
    assert info.value.code == ErrorCode.UNKNOWN_USER

    wrong = f.FileInfo("x.bin", "application/octet-stream", 5, b"\0" * 32)
    offered = alice.client._request(
        lambda req: f.FileOffer(req, os.urandom(16), 0, "bob", wrong), (m.Ok,))
    ok = await offered
    refused = alice.client._expect(ok.req, (m.SendAck,))
    alice.client._session_protocol().send(f.FileChunk(ok.req, 0, b"12345"))
    with pytest.raises(ServerError) as info:
        await refused
    assert info.value.code == ErrorCode.BAD_FILE
    assert len(stored_files(blob_dir)) == 1  # only notes.txt

    await alice.client.retract("bob", ack.conv_seq)
    with pytest.raises(ServerError) as info:
        await bob.client.fetch_file("alice", ack.conv_seq)
    assert info.value.code == ErrorCode.UNKNOWN_MESSAGE


@pytest_twisted.ensureDeferred
async def test_files_of_pruned_messages_are_deleted(loopback: Loopback, tmp_path: Path) -> None:
    """Once the archive retention has deleted the last message referring to a file, the
    file's prune removes its bytes; files still referred to stay."""
    blob_dir = tmp_path / "files"
    configure(loopback, blob_dir)
    alice, bob = await users(loopback, "alice", "bob")
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_bytes(b"old file")
    new.write_bytes(b"new file")
    await alice.client.send_file("bob", old)
    await bob.rec.next_chat()
    loopback.clock.advance(3600)
    await alice.client.send_file("bob", new)
    await bob.rec.next_chat()
    await alice.client.quit()
    await bob.client.quit()  # both acknowledged everything
    cutoff = int(loopback.clock.seconds() * 1000) - 1000
    assert await loopback.store.prune_archive(cutoff) == 1
    assert await loopback.server.features.files.prune() == 1
    [kept] = stored_files(blob_dir)
    assert kept.read_bytes() == b"new file"
