"""What a signed-in user can do: the conversation flows, dispatched per message type."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.storage import store as st
from chatproto.storage.database import StorageUnavailable
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, RemoteProtocolError
from chatproto.wire.images import SIGNATURE_BYTES, image_type

if TYPE_CHECKING:
    from chatproto.server.protocol import ChatServerProtocol
    from chatproto.server.service import ChatServer

log = Logger()


class RequestError(Exception):
    """A request-level failure: answered with Error(req, code, reason, names); not fatal."""

    def __init__(self, code: ErrorCode, reason: str, names: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.code = code
        # The wire allows 1024 bytes of reason and 256 names; a long list of unknown names
        # must not turn a refusal into an encoding failure.
        self.reason = reason.encode("utf-8")[:1000].decode("utf-8", "ignore")
        self.names = names[: m.MAX_NAMES]


class ConnectionHandlers:
    """Dispatches one connection's session messages to the shared :class:`ChatHandlers`."""

    def __init__(self, chat: ChatHandlers, conn: ChatServerProtocol) -> None:
        self.chat = chat
        self.conn = conn
        self.in_flight: set[Deferred[Any]] = set()

    def handle(self, msg: m.Message) -> None:
        handler = self.chat.dispatch.get(type(msg))
        if handler is None:
            raise RemoteProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"{type(msg).__name__} is not a request a client may send",
            )
        d = defer.maybeDeferred(handler, self.conn, msg)
        req = getattr(msg, "req", getattr(msg, "ref", 0))
        d.addErrback(self._failed, req if req < 2**32 else 0)
        if not d.called:
            self.in_flight.add(d)
            d.addBoth(self._done, d)

    def _done(self, result: object, d: Deferred[Any]) -> object:
        self.in_flight.discard(d)
        return result

    def drain(self) -> Deferred[Any]:
        """Fires when every request received so far has been handled (Quit waits for it, so
        an ack sent just before Quit is stored before the session ends)."""
        return defer.DeferredList(list(self.in_flight), consumeErrors=True)

    def _failed(self, f: Failure, req: int) -> None:
        e = f.value
        if isinstance(e, RequestError):
            self.conn.send(m.Error(req, int(e.code), e.reason, e.names))
        elif isinstance(e, RemoteProtocolError):
            self.conn._fail(e.code, e.message)
        elif isinstance(e, StorageUnavailable):
            log.warn("request {req} from {name}: {e}", req=req, name=self.conn.name, e=e)
            self.conn.send(m.Error(req, int(ErrorCode.STORAGE_UNAVAILABLE),
                                   "the database is unavailable; try again", ()))
        else:
            log.failure("request {req} from {name} failed", f, req=req, name=self.conn.name)
            self.conn.send(m.Error(req, int(ErrorCode.INTERNAL_ERROR), "internal server error", ()))


#: Log entries read per query when replaying a user's log.
REPLAY_PAGE = 200
#: Image transfers in progress per connection.
MAX_TRANSFERS = 4
#: History page sizes.
MAX_HISTORY = 100

_STORE_ERRORS: tuple[tuple[type[st.StoreError], ErrorCode], ...] = (
    (st.UnknownUsers, ErrorCode.UNKNOWN_USER),
    (st.UnknownGroup, ErrorCode.UNKNOWN_GROUP),
    (st.NotAMember, ErrorCode.NOT_A_MEMBER),
    (st.NotAllowed, ErrorCode.NOT_ALLOWED),
)


def _request_error(f: Failure) -> Failure:
    """Turn the store's refusals into request errors (other failures pass through)."""
    for cls, code in _STORE_ERRORS:
        if f.check(cls):
            names = f.value.names if isinstance(f.value, st.UnknownUsers) else ()
            raise RequestError(code, str(f.value), names)
    return f


@dataclass
class ImageUpload:
    """An image arriving in chunks: Chat (first chunk) then ImageChunk 1, 2, ..."""

    chat: m.Chat
    total: int
    sha256: bytes
    data: bytearray = field(default_factory=bytearray)
    next_index: int = 1
    failed: bool = False  # refused: later chunks are dropped until the total has arrived
    received: int = 0


class DeliveryStream:
    """Delivers one connection's share of its user's log: exactly once, in order.

    Sync starts it at a cursor; it replays the log from the database in pages, then switches
    to live delivery. A live message that is exactly the next one is sent at once; anything
    else (a gap, or arriving while a page is being read) makes it read the log again, so the
    seam between replay and live delivery has neither a gap nor a duplicate.
    """

    def __init__(self, chat: ChatHandlers, conn: ChatServerProtocol) -> None:
        self.chat = chat
        self.conn = conn
        self.in_flight: set[Deferred[Any]] = set()
        self.sent_seq = 0
        self.live = False
        self.reading = False
        self.dirty = False
        self.sync_req: int | None = None

    def start(self, req: int, cursor: int) -> None:
        self.sent_seq = cursor
        self.sync_req = req
        self.live = False
        self.dirty = True
        self._pump()

    def offer(self, user_seq: int, entry: st.LogEntry, body: bytes) -> None:
        if self.reading or (not self.live and self.sync_req is not None):
            self.dirty = True
            return
        if not self.live or user_seq <= self.sent_seq:
            return
        if user_seq == self.sent_seq + 1:
            self._send(user_seq, entry, body)
            return
        self.dirty = True
        self._pump()

    def _send(self, user_seq: int, entry: st.LogEntry, body: bytes) -> None:
        self.sent_seq = user_seq
        self.chat.send_delivery(self.conn, user_seq, entry, body)

    def _pump(self) -> None:
        if self.reading:
            return
        self.reading = True
        d = defer.ensureDeferred(self._read())

        def done(result: object) -> object:
            self.reading = False
            return result

        d.addBoth(done)
        d.addErrback(self._failed)

    def _failed(self, f: Failure) -> None:
        log.failure("replaying the log of {name} failed", f, name=self.conn.name)
        self.conn._fail(ErrorCode.STORAGE_UNAVAILABLE, "could not read your messages; reconnect")

    async def _read(self) -> None:
        store = self.chat.server.store
        name = self.conn.name
        while self.dirty and not self.conn.closed and name is not None:
            self.dirty = False
            entries = await store.read_log(name, self.sent_seq, REPLAY_PAGE)
            for entry in entries:
                if entry.user_seq <= self.sent_seq:
                    continue
                body = entry.body
                if body is None:
                    body = await store.message_body(entry.message_id)
                if self.conn.closed:
                    return
                self._send(entry.user_seq, entry, body)
            if len(entries) == REPLAY_PAGE:
                self.dirty = True
        if self.sync_req is not None and not self.conn.closed:
            self.conn.send(m.SyncDone(self.sync_req, self.sent_seq))
            self.sync_req = None
            self.live = True


class ChatHandlers:
    """The conversation flows, shared by every connection of one server."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.streams: dict[int, DeliveryStream] = {}
        self.uploads: dict[int, dict[int, ImageUpload]] = {}
        self.dispatch: dict[type[m.Message], Callable[[ChatServerProtocol, Any], Any]] = {
            m.Create: self.create,
            m.CreateGroup: self.create_group,
            m.Chat: self.chat,
            m.ImageChunk: self.image_chunk,
            m.DeliveryAck: self.delivery_ack,
            m.Read: self.read,
            m.Typing: self.typing,
            m.GroupAdd: self.group_add,
            m.GroupRemove: self.group_remove,
            m.GroupLeave: self.group_leave,
            m.GroupRename: self.group_rename,
            m.GroupSetRole: self.group_set_role,
            m.GroupList: self.group_list,
            m.GroupMembers: self.group_members,
            m.PresenceQuery: self.presence,
            m.History: self.history,
            m.Sync: self.sync,
        }

    def for_connection(self, conn: ChatServerProtocol) -> ConnectionHandlers:
        return ConnectionHandlers(self, conn)

    def replaying(self) -> int:
        """Sessions currently reading their log from the database (metrics)."""
        return sum(1 for stream in self.streams.values() if stream.reading)

    @property
    def store(self) -> st.ChatStore:
        return self.server.store

    # --- sessions and presence ---------------------------------------------------------------

    def session_started(self, conn: ChatServerProtocol) -> None:
        assert conn.name is not None
        self.streams[id(conn)] = DeliveryStream(self, conn)
        if self.server.router.attach(conn.name, conn):
            self._announce(conn.name, True, None)

    def session_ended(self, conn: ChatServerProtocol) -> Deferred[None]:
        """The session is over (quit or disconnect): offline if it was the last one."""
        self.streams.pop(id(conn), None)
        self.uploads.pop(id(conn), None)
        name = conn.name
        if name is None:
            return defer.succeed(None)
        conn.name = None
        if not self.server.router.detach(name, conn):
            return defer.succeed(None)
        now = self.server.now_ms()
        d = self.store.record_last_seen(name, now)
        d.addCallback(lambda _: self._announce(name, False, now))
        return d

    def _announce(self, name: str, online: bool, last_seen_ms: int | None) -> None:
        event = m.encode_message(m.PresenceEvent(name, online, last_seen_ms))

        def push(contacts: list[tuple[str, int | None]]) -> None:
            for contact, _ in contacts:
                for other in self.server.router.connections(contact):
                    other.send_encoded(event)  # type: ignore[attr-defined]

        d = self.store.contacts(name)
        d.addCallback(push)
        d.addErrback(lambda f: log.failure("presence of {name}", f, name=name))

    # --- delivery ------------------------------------------------------------------------------

    def fan_out(self, appended: st.Appended, body: bytes) -> None:
        """Offer a stored message to every online session of every recipient."""
        entry = appended.entry
        if entry is None:
            return
        router = self.server.router
        for name, user_seq in appended.recipients:
            for conn in router.connections(name):
                stream = self.streams.get(id(conn))
                if stream is not None:
                    stream.offer(user_seq, entry, body)

    def send_delivery(self, conn: ChatServerProtocol, user_seq: int, entry: st.LogEntry,
                      body: bytes) -> None:
        image = None
        first = body
        if entry.content_type == m.ContentType.IMAGE:
            assert entry.sha256 is not None
            image = m.ImageInfo(len(body), entry.sha256, entry.mime)
            first = body[: m.MAX_CHUNK_BYTES]
        conn.send(m.Deliver(user_seq, entry.group_id, entry.sender, entry.to, entry.conv_seq,
                            entry.created_ms, entry.client_msg_id, entry.content_type, first,
                            image), check=False)
        view = memoryview(body)
        for index, offset in enumerate(range(len(first), len(body), m.MAX_CHUNK_BYTES), 1):
            conn.send(m.ImageChunk(user_seq, index, bytes(view[offset:offset + m.MAX_CHUNK_BYTES])))

    def _store_and_fan_out(self, conn: ChatServerProtocol, draft: st.Draft,
                           req: int) -> Deferred[Any]:
        d = self.store.append_message(draft)
        d.addErrback(_request_error)

        def stored(appended: st.Appended) -> None:
            conn.send(m.SendAck(req, draft.client_msg_id or b"\0" * 16, appended.group_id,
                                appended.conv_seq, appended.created_ms), check=False)
            if not appended.duplicate:
                self.fan_out(appended, draft.body)

        d.addCallback(stored)
        return d

    # --- requests ------------------------------------------------------------------------------

    def create(self, conn: ChatServerProtocol, msg: m.Create) -> Deferred[Any]:
        assert conn.name is not None
        return defer.ensureDeferred(self._create(conn, msg))

    async def _create(self, conn: ChatServerProtocol, msg: m.Create) -> None:
        assert conn.name is not None
        try:
            await self.store.create_direct(conn.name, msg.peer, self.server.now_ms())
        except st.UnknownUsers as e:
            raise RequestError(ErrorCode.UNKNOWN_USER, str(e), e.names) from None
        user = await self.store.get_user(msg.peer)
        online = self.server.router.is_online(msg.peer)
        last_seen = None if online or user is None else user.last_seen_ms
        conn.send(m.AckCreate(msg.req, msg.peer, online, last_seen))

    def create_group(self, conn: ChatServerProtocol, msg: m.CreateGroup) -> Deferred[Any]:
        assert conn.name is not None
        if msg.count != len(msg.names):
            raise RequestError(ErrorCode.INVALID_REQUEST, "count must equal the number of names")
        if len(set(msg.names)) != len(msg.names):
            raise RequestError(ErrorCode.INVALID_REQUEST, "a name is listed twice")
        others = [n for n in msg.names if n != conn.name]
        if msg.kind == m.GroupKind.PAIR and len(others) != 1:
            raise RequestError(ErrorCode.INVALID_REQUEST, "a two-person group has one other name")
        if msg.kind not in (m.GroupKind.PAIR, m.GroupKind.MANY) or not others:
            raise RequestError(ErrorCode.INVALID_REQUEST, "a group needs other members")
        d = self.store.create_group(conn.name, others, msg.title, self.server.now_ms())
        d.addErrback(_request_error)

        def created(appended: st.Appended) -> None:
            offline = tuple(n for n in others if not self.server.router.is_online(n))
            conn.send(m.AckCreateGroup(msg.req, appended.group_id, offline))
            self.fan_out(appended, appended.entry.body or b"" if appended.entry else b"")

        d.addCallback(created)
        return d

    def chat(self, conn: ChatServerProtocol, msg: m.Chat) -> Deferred[Any] | None:
        assert conn.name is not None
        if (msg.group_id == 0) != (msg.to is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names its recipient; a group chat does not")
        if msg.content_type == m.ContentType.TEXT:
            if msg.image is not None:
                raise RequestError(ErrorCode.INVALID_REQUEST, "a text message has no image info")
            if len(msg.body) > m.MAX_TEXT_BYTES:
                raise RequestError(ErrorCode.MESSAGE_TOO_LARGE, "texts are at most 64 KiB")
            try:
                msg.body.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(ErrorCode.INVALID_REQUEST, "a text must be UTF-8") from None
            return self._store_and_fan_out(conn, self._draft(conn, msg, msg.body, None, None),
                                           msg.req)
        if msg.content_type == m.ContentType.IMAGE:
            return self._image_start(conn, msg)
        raise RequestError(ErrorCode.INVALID_REQUEST, "clients send text or images")

    def _draft(self, conn: ChatServerProtocol, msg: m.Chat, body: bytes, mime: str | None,
               sha256: bytes | None) -> st.Draft:
        assert conn.name is not None
        return st.Draft(conn.name, msg.group_id, msg.to, msg.client_msg_id, msg.content_type,
                        body, mime, sha256, self.server.now_ms())

    def _image_start(self, conn: ChatServerProtocol, msg: m.Chat) -> Deferred[Any] | None:
        uploads = self.uploads.setdefault(id(conn), {})
        if msg.image is None:
            raise RequestError(ErrorCode.INVALID_REQUEST, "an image needs its size and SHA-256")
        if msg.req in uploads:
            raise RequestError(ErrorCode.INVALID_REQUEST, "that request number is in use")
        if len(uploads) >= MAX_TRANSFERS:
            raise RequestError(ErrorCode.INVALID_REQUEST, "too many image transfers at once")
        upload = ImageUpload(msg, msg.image.total_size, msg.image.sha256)
        upload.received = len(msg.body)
        uploads[msg.req] = upload
        limit = self.server.limits.max_image_bytes
        if msg.image.total_size > limit:
            self._refuse(conn, upload, ErrorCode.IMAGE_TOO_LARGE,
                                f"images are at most {limit} bytes")
            return None
        if len(msg.body) > msg.image.total_size or image_type(msg.body[:SIGNATURE_BYTES]) is None:
            self._refuse(conn, upload, ErrorCode.BAD_IMAGE,
                                "not a PNG, JPEG, GIF or WebP image")
            return None
        upload.data += msg.body
        return self._image_progress(conn, upload)

    def image_chunk(self, conn: ChatServerProtocol, msg: m.ImageChunk) -> Deferred[Any] | None:
        upload = self.uploads.get(id(conn), {}).get(msg.ref)
        if upload is None:
            raise RequestError(ErrorCode.INVALID_REQUEST, "no image transfer with that ref")
        upload.received += len(msg.data)
        if upload.failed:
            self._forget_if_complete(conn, upload)
            return None
        if msg.index != upload.next_index or upload.received > upload.total:
            self._refuse(conn, upload, ErrorCode.BAD_IMAGE,
                                "image chunks out of order or beyond the announced size")
            return None
        upload.next_index += 1
        upload.data += msg.data
        return self._image_progress(conn, upload)

    def _refuse(self, conn: ChatServerProtocol, upload: ImageUpload, code: ErrorCode,
                reason: str) -> None:
        upload.failed = True
        upload.data = bytearray()
        conn.send(m.Error(upload.chat.req, int(code), reason, ()))
        self._forget_if_complete(conn, upload)

    def _forget_if_complete(self, conn: ChatServerProtocol, upload: ImageUpload) -> None:
        if upload.received >= upload.total:
            self.uploads.get(id(conn), {}).pop(upload.chat.req, None)

    def _image_progress(self, conn: ChatServerProtocol,
                        upload: ImageUpload) -> Deferred[Any] | None:
        if upload.received < upload.total:
            return None
        self.uploads.get(id(conn), {}).pop(upload.chat.req, None)
        body = bytes(upload.data)
        upload.data = bytearray()
        # Hashing megabytes happens off the reactor thread.
        d: Deferred[bytes] = threads.deferToThread(lambda: hashlib.sha256(body).digest())

        def verified(digest: bytes) -> Deferred[Any]:
            mime = image_type(body[:SIGNATURE_BYTES])
            if digest != upload.sha256 or mime is None:
                raise RequestError(ErrorCode.BAD_IMAGE, "the image does not match its SHA-256")
            return self._store_and_fan_out(conn, self._draft(conn, upload.chat, body, mime,
                                                             digest), upload.chat.req)

        d.addCallback(verified)
        return d

    def delivery_ack(self, conn: ChatServerProtocol, msg: m.DeliveryAck) -> Deferred[Any]:
        assert conn.name is not None and conn.device_id is not None
        name = conn.name
        d = self.store.acknowledge(name, conn.device_id, msg.up_to, self.server.now_ms())

        def receipts(rows: list[st.DeliveredReceipt]) -> None:
            for row in rows:
                receipt = m.Receipt(m.ReceiptKind.DELIVERED, row.group_id, name, row.conv_seq)
                for other in self.server.router.connections(row.sender):
                    other.send(receipt)  # type: ignore[attr-defined]

        d.addCallback(receipts)
        return d

    def _audience(self, conn: ChatServerProtocol, group_id: int,
                  peer: str | None) -> Deferred[list[str]]:
        """Who hears a read receipt or typing: the peer, or the group's other members."""
        assert conn.name is not None
        if (group_id == 0) != (peer is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names the peer; a group chat does not")
        if group_id == 0:
            assert peer is not None
            return defer.succeed([peer])
        d = self.store.conversation_members(conn.name, group_id)
        d.addErrback(_request_error)
        return d

    def _tell(self, names: list[str], sender: str, msg: m.Message) -> None:
        payload = m.encode_message(msg)
        for name in names:
            if name != sender:
                for other in self.server.router.connections(name):
                    other.send_encoded(payload)  # type: ignore[attr-defined]

    def read(self, conn: ChatServerProtocol, msg: m.Read) -> Deferred[Any]:
        name = conn.name
        assert name is not None
        receipt = m.Receipt(m.ReceiptKind.READ, msg.group_id, name, msg.up_to)
        d = self._audience(conn, msg.group_id, msg.peer)
        d.addCallback(self._tell, name, receipt)
        return d

    def typing(self, conn: ChatServerProtocol, msg: m.Typing) -> Deferred[Any]:
        name = conn.name
        assert name is not None
        d = self._audience(conn, msg.group_id, msg.to)
        d.addCallback(self._tell, name, m.TypingEvent(msg.group_id, name, msg.active))
        return d

    def _change_group(self, conn: ChatServerProtocol, req: int, group_id: int, action: int,
                      names: tuple[str, ...], title: str | None) -> Deferred[Any]:
        assert conn.name is not None
        d = self.store.change_group(conn.name, group_id, action, names, title,
                                    self.server.now_ms())
        d.addErrback(_request_error)

        def changed(appended: st.Appended) -> None:
            conn.send(m.Ok(req))
            body = appended.entry.body if appended.entry and appended.entry.body else b""
            self.fan_out(appended, body)

        d.addCallback(changed)
        return d

    def group_add(self, conn: ChatServerProtocol, msg: m.GroupAdd) -> Deferred[Any]:
        return self._change_group(conn, msg.req, msg.group_id, st.GROUP_ADDED, msg.names, None)

    def group_remove(self, conn: ChatServerProtocol, msg: m.GroupRemove) -> Deferred[Any]:
        return self._change_group(conn, msg.req, msg.group_id, st.GROUP_REMOVED, msg.names,
                                  None)

    def group_leave(self, conn: ChatServerProtocol, msg: m.GroupLeave) -> Deferred[Any]:
        return self._change_group(conn, msg.req, msg.group_id, st.GROUP_LEFT, (), None)

    def group_rename(self, conn: ChatServerProtocol, msg: m.GroupRename) -> Deferred[Any]:
        return self._change_group(conn, msg.req, msg.group_id, st.GROUP_RENAMED, (), msg.title)

    def group_set_role(self, conn: ChatServerProtocol, msg: m.GroupSetRole) -> Deferred[Any]:
        action = st.GROUP_PROMOTED if msg.admin else st.GROUP_DEMOTED
        return self._change_group(conn, msg.req, msg.group_id, action, msg.names, None)

    def group_list(self, conn: ChatServerProtocol, msg: m.GroupList) -> Deferred[Any]:
        assert conn.name is not None
        d = self.store.user_groups(conn.name)
        d.addCallback(lambda rows: conn.send(m.Groups(
            msg.req, tuple(m.GroupInfo(*row) for row in rows[: m.MAX_PAGE]))))
        return d

    def group_members(self, conn: ChatServerProtocol, msg: m.GroupMembers) -> Deferred[Any]:
        assert conn.name is not None
        d = self.store.group_members(conn.name, msg.group_id)
        d.addErrback(_request_error)
        online = self.server.router.is_online
        d.addCallback(lambda rows: conn.send(m.Members(msg.req, msg.group_id, tuple(
            m.MemberInfo(name, role, online(name), None if online(name) else seen)
            for name, role, seen in rows[: m.MAX_NAMES]))))
        return d

    def presence(self, conn: ChatServerProtocol, msg: m.PresenceQuery) -> Deferred[Any]:
        assert conn.name is not None
        d = self.store.contacts(conn.name)
        online = self.server.router.is_online
        d.addCallback(lambda rows: conn.send(m.Presence(msg.req, tuple(
            m.PresenceInfo(name, online(name), None if online(name) else seen)
            for name, seen in rows[:4096]))))
        return d

    def history(self, conn: ChatServerProtocol, msg: m.History) -> Deferred[Any]:
        assert conn.name is not None
        if not 1 <= msg.limit <= MAX_HISTORY:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"limit is 1 to {MAX_HISTORY}")
        if (msg.group_id == 0) != (msg.peer is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names the peer; a group chat does not")
        d = self.store.history(conn.name, msg.group_id, msg.peer, msg.before_seq, msg.limit)
        d.addErrback(_request_error)

        def page(result: tuple[list[st.HistoryRow], bool]) -> None:
            rows, more = result
            entries = tuple(
                m.HistoryEntry(r.conv_seq, r.sender, r.to, r.created_ms, r.content_type,
                               r.body if r.content_type != m.ContentType.IMAGE else b"",
                               m.ImageInfo(r.size, r.sha256, r.mime) if r.sha256 else None)
                for r in rows
            )
            conn.send(m.HistoryPage(msg.req, msg.group_id, msg.peer, entries, more))

        d.addCallback(page)
        return d

    def sync(self, conn: ChatServerProtocol, msg: m.Sync) -> Deferred[Any]:
        assert conn.name is not None and conn.device_id is not None
        stream = self.streams[id(conn)]
        d = self.store.sync_position(conn.name, conn.device_id)

        def start(position: tuple[int, int]) -> None:
            acked, end = position
            cursor = acked if msg.cursor is None else msg.cursor
            # A cursor past the end of the log is clipped: otherwise the live messages up to
            # it would look already delivered and be skipped.
            stream.start(msg.req, min(cursor, end))

        d.addCallback(start)
        return d
