"""The everyday features in the client library: edits and retractions, the conversation list,
search, account self-service and blocking.

:class:`FeatureRequests` gives :class:`~chatproto.client.api.ChatClient` one method per
request; :class:`FeatureSessionCalls` forwards them from a
:class:`~chatproto.client.reconnect.ChatSession` to its current connection. Clients hide
the group messages of the users they block themselves (the server refuses only their direct
messages): :func:`hidden_by_block` is that rule.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail

from chatproto.client.outgoing import Target, split_target
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m

#: Replies to the requests below (the client library matches them to their request).
FEATURE_REPLIES: tuple[type[m.Message], ...] = (
    f.Conversations, f.SearchResults, f.Devices, f.BlockedNames, f.FileData)


class FileMismatch(Exception):
    """A fetched file does not match the size or SHA-256 of its FileInfo."""


def file_info_of(body: bytes) -> f.FileInfo:
    """The FileInfo in the body of a FILE message (Deliver or HistoryEntry)."""
    return m.decode_record(f.FileInfo, body)


def _file_chunks(path: Path, req: int) -> Iterator[m.Message]:
    """FILE_CHUNK frames of a file, read as they are sent."""
    with open(path, "rb") as source:
        index = 0
        while data := source.read(f.MAX_FILE_CHUNK_BYTES):
            yield f.FileChunk(req, index, data)
            index += 1


def hidden_by_block(deliver: m.Deliver, blocked: Collection[str]) -> bool:
    """Whether a client hides this message: a group message from a user it blocks."""
    return deliver.group_id != 0 and deliver.sender in blocked


class FeatureRequests:
    """Request methods of :class:`ChatClient` (which provides ``_request``)."""

    _request: Callable[..., Deferred[Any]]
    _expect: Callable[[int, tuple[type[m.Message], ...]], Deferred[Any]]
    _session_protocol: Callable[[], Any]
    #: The names this user blocks, as last listed, blocked or unblocked by this client.
    blocked: set[str]

    def edit(self, to: Target, target_seq: int, text: str,
             client_msg_id: bytes | None = None) -> Deferred[m.SendAck]:
        """Replace the text of our message ``target_seq`` in a conversation (a user name or
        a group id); fails with ServerError (UNKNOWN_MESSAGE, NOT_ALLOWED after the edit
        window)."""
        try:
            group_id, peer = split_target(to)
        except TypeError as e:
            return fail(e)
        msg_id = client_msg_id or os.urandom(16)
        return self._request(lambda req: f.Edit(req, msg_id, group_id, peer, target_seq,
                                                text.encode("utf-8")), (m.SendAck,))

    def retract(self, to: Target, target_seq: int,
                client_msg_id: bytes | None = None) -> Deferred[m.SendAck]:
        """Delete message ``target_seq`` of a conversation (ours, or any in a group we own or
        administer)."""
        try:
            group_id, peer = split_target(to)
        except TypeError as e:
            return fail(e)
        msg_id = client_msg_id or os.urandom(16)
        return self._request(lambda req: f.Retract(req, msg_id, group_id, peer, target_seq),
                             (m.SendAck,))

    def send_file(self, to: Target, path: str | os.PathLike[str], name: str | None = None,
                  mime: str | None = None,
                  client_msg_id: bytes | None = None) -> Deferred[m.SendAck]:
        """Send any file: FILE_OFFER, then (once the server accepts it) its chunks; fires
        with SendAck, or fails with ServerError (FILE_TOO_LARGE before any byte is sent).

        Args:
            to: A user name or a group id.
            path: The file (read twice: once for its SHA-256, once to send it).
            name: The name shown (default: the file's name; the server sanitises it).
            mime: The media type (default: guessed from the name, else
                ``application/octet-stream``).
        """
        try:
            group_id, peer = split_target(to)
            source = Path(path)
            digest = hashlib.sha256()
            with open(source, "rb") as data:
                while block := data.read(1 << 20):
                    digest.update(block)
            size = source.stat().st_size
        except Exception as e:
            return fail(e)
        info = f.FileInfo(name or source.name or "file",
                          mime or mimetypes.guess_type(source.name)[0]
                          or "application/octet-stream", size, digest.digest())
        msg_id = client_msg_id or os.urandom(16)
        offered: list[int] = []

        def offer(req: int) -> m.Message:
            offered.append(req)
            return f.FileOffer(req, msg_id, group_id, peer, info)

        def accepted(_: m.Ok) -> Deferred[Any]:
            req = offered[0]
            done = self._expect(req, (m.SendAck,))
            if size:
                sent = self._session_protocol().send_stream(_file_chunks(source, req))
                sent.addErrback(lambda failure: done.errback(failure) if not done.called
                                else None)
            return done

        return self._request(offer, (m.Ok,)).addCallback(accepted)

    def fetch_file(self, to: Target, conv_seq: int,
                   info: f.FileInfo | None = None) -> Deferred[bytes]:
        """The bytes of file message ``conv_seq`` (live or from history), fetched in chunks;
        checked against ``info`` (its FileInfo) if given: FileMismatch otherwise."""
        try:
            group_id, peer = split_target(to)
        except TypeError as e:
            return fail(e)
        parts: list[bytes] = []

        def more(reply: f.FileData | None, offset: int) -> Deferred[bytes] | bytes:
            if reply is not None:
                parts.append(reply.data)
                offset += len(reply.data)
                if offset >= reply.total or not reply.data:
                    return finish(b"".join(parts))
            d = self._request(lambda req: f.FileFetch(req, group_id, peer, conv_seq, offset,
                                                      f.MAX_FILE_CHUNK_BYTES), (f.FileData,))
            return d.addCallback(more, offset)

        def finish(data: bytes) -> bytes:
            if info is not None and (len(data) != info.size
                                     or hashlib.sha256(data).digest() != info.sha256):
                raise FileMismatch("the file does not match its size or SHA-256")
            return data

        result = more(None, 0)
        assert isinstance(result, Deferred)
        return result

    def conversations(self) -> Deferred[tuple[f.ConversationInfo, ...]]:
        """Our direct conversations and groups, the most recently active first."""
        d = self._request(f.ConversationList, (f.Conversations,))
        return d.addCallback(lambda reply: reply.conversations)

    def search(self, query: str, before_id: int = 0, limit: int = 20) -> Deferred[f.SearchResults]:
        """Messages with every word of ``query``, newest first; pass the last hit's
        ``hit_id`` as ``before_id`` for the next page."""
        return self._request(lambda req: f.Search(req, query, before_id, limit),
                             (f.SearchResults,))

    def change_password(self, current: str, new: str) -> Deferred[None]:
        """Change our password; the account's other sessions are signed out."""
        d = self._request(lambda req: f.ChangePassword(req, current, new), (m.Ok,))
        return d.addCallback(lambda _: None)

    def delete_account(self, password: str) -> Deferred[None]:
        """Delete our account (the server then closes the connection)."""
        d = self._request(lambda req: f.DeleteAccount(req, password), (m.Ok,))
        return d.addCallback(lambda _: None)

    def devices(self) -> Deferred[tuple[f.DeviceInfo, ...]]:
        """The devices of our account."""
        d = self._request(f.DeviceList, (f.Devices,))
        return d.addCallback(lambda reply: reply.devices)

    def sign_out_device(self, device_id: bytes) -> Deferred[None]:
        """Sign out another device of our account."""
        d = self._request(lambda req: f.SignOutDevice(req, device_id), (m.Ok,))
        return d.addCallback(lambda _: None)

    def block(self, name: str) -> Deferred[None]:
        """Block a user."""
        d = self._request(lambda req: f.Block(req, name), (m.Ok,))
        return d.addCallback(lambda _: self.blocked.add(name))

    def unblock(self, name: str) -> Deferred[None]:
        """Unblock a user."""
        d = self._request(lambda req: f.Unblock(req, name), (m.Ok,))
        return d.addCallback(lambda _: self.blocked.discard(name))

    def block_list(self) -> Deferred[tuple[str, ...]]:
        """The users we block (also kept in :attr:`blocked`)."""
        d = self._request(f.BlockList, (f.BlockedNames,))

        def listed(reply: f.BlockedNames) -> tuple[str, ...]:
            self.blocked.clear()
            self.blocked.update(reply.names)
            return reply.names

        return d.addCallback(listed)


class FeatureSessionCalls:
    """The same requests on a :class:`ChatSession` (which provides ``_call``)."""

    _call: Callable[..., Deferred[Any]]

    def edit(self, to: Target, target_seq: int, text: str) -> Deferred[m.SendAck]:
        return self._call("edit", to, target_seq, text)

    def send_file(self, to: Target, path: str | os.PathLike[str], name: str | None = None,
                  mime: str | None = None) -> Deferred[m.SendAck]:
        """Not through the outbox: fails with ConnectionLost while reconnecting."""
        return self._call("send_file", to, path, name, mime)

    def fetch_file(self, to: Target, conv_seq: int,
                   info: f.FileInfo | None = None) -> Deferred[bytes]:
        return self._call("fetch_file", to, conv_seq, info)

    def retract(self, to: Target, target_seq: int) -> Deferred[m.SendAck]:
        return self._call("retract", to, target_seq)

    def conversations(self) -> Deferred[tuple[f.ConversationInfo, ...]]:
        return self._call("conversations")

    def search(self, query: str, before_id: int = 0, limit: int = 20) -> Deferred[f.SearchResults]:
        return self._call("search", query, before_id, limit)

    def change_password(self, current: str, new: str) -> Deferred[None]:
        return self._call("change_password", current, new)

    def delete_account(self, password: str) -> Deferred[None]:
        return self._call("delete_account", password)

    def devices(self) -> Deferred[tuple[f.DeviceInfo, ...]]:
        return self._call("devices")

    def sign_out_device(self, device_id: bytes) -> Deferred[None]:
        return self._call("sign_out_device", device_id)

    def block(self, name: str) -> Deferred[None]:
        return self._call("block", name)

    def unblock(self, name: str) -> Deferred[None]:
        return self._call("unblock", name)

    def block_list(self) -> Deferred[tuple[str, ...]]:
        return self._call("block_list")
