"""Any file: FILE_OFFER (checked before any byte is accepted), FILE_CHUNK (written to a
temporary file, hashed as it comes), and FILE_FETCH (bytes of a file message, from history
as well). Bodies are content-addressed files (:mod:`chatproto.storage.content_files`, the
store image bodies use too); the message in the log carries only the FileInfo.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import Connection
from chatproto.server.feature_settings import (
    MAX_FILE_UPLOADS,
    MAX_FILE_UPLOADS_PER_CONNECTION,
    FeatureSettings,
)
from chatproto.server.refusals import RequestError, request_error
from chatproto.storage import store as st
from chatproto.storage.content_files import ContentFiles, ContentUpload, default_file_directory
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from chatproto.wire.file_names import MEDIA_TYPE, sanitise_file_name


@dataclass
class _Upload:
    offer: f.FileOffer
    info: f.FileInfo  # with the sanitised name
    blob: ContentUpload
    next_index: int = 0
    finishing: bool = False


class FileHandlers:
    """File transfers of every connection; at most a few at once per connection."""

    def __init__(self, chat: ChatHandlers, settings: FeatureSettings) -> None:
        self.chat = chat
        self.settings = settings
        self._blobs: ContentFiles | None = None
        self.uploads: dict[Connection, dict[int, _Upload]] = {}
        self.dispatch = {f.FileOffer: self.offer, f.FileChunk: self.chunk,
                         f.FileFetch: self.fetch}

    @property
    def blobs(self) -> ContentFiles:
        """Made on first use (the directory is created then)."""
        if self._blobs is None:
            self._blobs = ContentFiles(self._root())
        return self._blobs

    def _root(self) -> Path:
        return self.settings.blob_dir or default_file_directory(self.chat.store.db.engine)

    def _drop_closed(self) -> None:
        """Discard the transfers of connections that have gone."""
        for conn in [c for c in self.uploads if c.closed]:
            for upload in self.uploads.pop(conn).values():
                upload.blob.discard()

    # --- upload ------------------------------------------------------------------------------

    def offer(self, conn: Connection, msg: f.FileOffer) -> Deferred[Any]:
        if (msg.group_id == 0) != (msg.to is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names its recipient; a group chat does not")
        info = msg.info
        if info.size > self.settings.max_file_bytes:
            raise RequestError(ErrorCode.FILE_TOO_LARGE,
                               f"files are at most {self.settings.max_file_bytes} bytes")
        if MEDIA_TYPE.fullmatch(info.mime) is None:
            raise RequestError(ErrorCode.INVALID_REQUEST, "the media type is not type/subtype")
        self._drop_closed()
        mine = self.uploads.get(conn, {})
        if msg.req in mine:
            raise RequestError(ErrorCode.INVALID_REQUEST, "that req is a transfer in progress")
        if len(mine) >= MAX_FILE_UPLOADS_PER_CONNECTION:
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f"at most {MAX_FILE_UPLOADS_PER_CONNECTION} file transfers "
                               "at once")
        if sum(len(u) for u in self.uploads.values()) >= MAX_FILE_UPLOADS:
            raise RequestError(ErrorCode.TRY_LATER, "too many file transfers; try later")
        info = replace(info, name=sanitise_file_name(info.name, f.MAX_FILE_NAME_BYTES))
        return defer.ensureDeferred(self._offer(conn, msg, info))

    async def _offer(self, conn: Connection, msg: f.FileOffer, info: f.FileInfo) -> None:
        # The recipient is checked before a byte is accepted.
        try:
            if msg.to is not None:
                await self.chat.store.create_direct(conn.name, msg.to, self.chat.now_ms())
            else:
                await self.chat.store.conversation_members(conn.name, msg.group_id)
        except st.StoreError as e:
            request_error(Failure(e))
            raise
        if conn.closed:
            return
        upload = _Upload(msg, info, self.blobs.begin(info.size))
        self.uploads.setdefault(conn, {})[msg.req] = upload
        conn.send(m.Ok(msg.req))
        if info.size == 0:
            await self._complete(conn, upload)

    def chunk(self, conn: Connection, msg: f.FileChunk) -> Deferred[Any] | None:
        upload = self.uploads.get(conn, {}).get(msg.ref)
        if upload is None or upload.finishing:
            raise RequestError(ErrorCode.INVALID_REQUEST, "no file transfer with that req")
        try:
            if msg.index != upload.next_index:
                raise ValueError(f"chunk {msg.index} where {upload.next_index} was due")
            upload.blob.write(msg.data)
        except (ValueError, OSError) as e:
            self._end(conn, msg.ref)
            raise RequestError(ErrorCode.BAD_FILE, str(e)) from None
        upload.next_index += 1
        if not upload.blob.complete:
            return None
        return defer.ensureDeferred(self._complete(conn, upload))

    def _end(self, conn: Connection, req: int) -> _Upload | None:
        mine = self.uploads.get(conn, {})
        upload = mine.pop(req, None)
        if not mine:
            self.uploads.pop(conn, None)
        if upload is not None:
            upload.blob.discard()
        return upload

    async def _complete(self, conn: Connection, upload: _Upload) -> None:
        upload.finishing = True
        offer, info = upload.offer, upload.info
        try:
            # fsync and rename off the reactor thread.
            await threads.deferToThread(upload.blob.finish, info.sha256)
        except ValueError as e:
            raise RequestError(ErrorCode.BAD_FILE, str(e)) from None
        finally:
            self._end(conn, offer.req)
        body = m.encode_record(info)
        draft = st.Draft(conn.name, offer.group_id, offer.to, offer.client_msg_id, f.FILE, body,
                         info.mime, info.sha256, self.chat.now_ms())
        try:
            appended = await self.chat.store.append_message(draft)
        except st.StoreError as e:
            request_error(Failure(e))
            raise
        conn.send(m.SendAck(offer.req, offer.client_msg_id, appended.group_id,
                            appended.conv_seq, appended.created_ms), check=False)
        if not appended.duplicate:
            self.chat.fan_out(appended, body)

    # --- fetch -------------------------------------------------------------------------------

    def fetch(self, conn: Connection, msg: f.FileFetch) -> Deferred[Any]:
        if (msg.group_id == 0) != (msg.to is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names the peer; a group chat does not")
        if not 1 <= msg.length <= f.MAX_FILE_CHUNK_BYTES:
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f"length is 1 to {f.MAX_FILE_CHUNK_BYTES}")
        return defer.ensureDeferred(self._fetch(conn, msg))

    async def _fetch(self, conn: Connection, msg: f.FileFetch) -> None:
        try:
            info = await self.chat.store.features.files.file_info(
                conn.name, msg.group_id, msg.to, msg.conv_seq)
        except st.StoreError as e:
            request_error(Failure(e))
            raise
        if msg.offset > info.size:
            raise RequestError(ErrorCode.INVALID_REQUEST, "offset past the end of the file")
        try:
            data = await self.blobs.read(info.sha256, msg.offset, msg.length)
        except (OSError, st.StoreError):
            raise RequestError(ErrorCode.UNKNOWN_MESSAGE,
                               "the file is no longer stored") from None
        conn.send(f.FileData(msg.req, msg.offset, data, info.size))

    def prune(self) -> Deferred[int]:
        """Delete the stored files no archived message refers to any more (a file written
        since the list was read is kept: its message may not be committed yet)."""
        if not self._root().exists():
            return defer.succeed(0)
        started = time.time()
        d = self.chat.store.features.files.referenced_files()
        return d.addCallback(lambda keep: threads.deferToThread(self.blobs.remove_unlisted, keep,
                                                                started))

