"""What a signed-in user can ask: the conversation flows, one handler per request type.

The handlers are shared by every connection: per-connection state (the delivery stream, image
uploads) lives on the :class:`Connection`; every push to other users goes through the
:class:`Router`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from chatproto.server.connection import Connection, RequestHandler
from chatproto.server.refusals import RequestError, request_error
from chatproto.server.router import Router
from chatproto.server.uploads import ImageUpload
from chatproto.storage import store as st
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from chatproto.wire.images import SIGNATURE_BYTES, image_type

#: History page sizes.
MAX_HISTORY = 100
#: Entries in a Presence answer.
MAX_PRESENCE = 4096


def _by_name(name: str) -> bytes:
    """Lists the server sends are ordered by name, bytewise on UTF-8 (not by a collation)."""
    return name.encode("utf-8")


class ChatHandlers:
    """The conversation flows, shared by every connection of one server."""

    def __init__(self, store: st.ChatStore, router: Router, now_ms: Callable[[], int]) -> None:
        self.store = store
        self.router = router
        self.now_ms = now_ms
        self.dispatch: dict[type[m.Message], RequestHandler] = {
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

    # --- delivery ------------------------------------------------------------------------------

    def fan_out(self, appended: st.Appended, body: bytes) -> None:
        """Tell every recipient's streams that their log advanced (with the entry)."""
        entry = appended.entry
        if entry is None:
            return
        log_advanced = self.router.log_advanced
        for name, user_seq in appended.recipients:
            log_advanced(name, user_seq, entry, body)

    def _store_and_fan_out(self, conn: Connection, draft: st.Draft, req: int) -> Deferred[Any]:
        def stored(appended: st.Appended) -> None:
            conn.push(m.encode_send_ack(req, draft.client_msg_id or b"\0" * 16,
                                        appended.group_id, appended.conv_seq,
                                        appended.created_ms), "SendAck")
            if not appended.duplicate:
                self.fan_out(appended, draft.body)

        # The store's refusals become request errors; ``stored`` runs only on success.
        return self.store.append_message(draft).addCallbacks(stored, request_error)

    # --- conversations -------------------------------------------------------------------------

    def create(self, conn: Connection, msg: m.Create) -> Deferred[Any]:
        return defer.ensureDeferred(self._create(conn, msg))

    async def _create(self, conn: Connection, msg: m.Create) -> None:
        try:
            await self.store.create_direct(conn.name, msg.peer, self.now_ms())
        except st.UnknownUsers as e:
            raise RequestError(ErrorCode.UNKNOWN_USER, str(e), e.names) from None
        user = await self.store.get_user(msg.peer)
        online = msg.peer in await self.router.online([msg.peer])
        last_seen = None if online or user is None else user.last_seen_ms
        conn.send(m.AckCreate(msg.req, msg.peer, online, last_seen))

    def create_group(self, conn: Connection, msg: m.CreateGroup) -> Deferred[Any]:
        if msg.count != len(msg.names):
            raise RequestError(ErrorCode.INVALID_REQUEST, "count must equal the number of names")
        if len(set(msg.names)) != len(msg.names):
            raise RequestError(ErrorCode.INVALID_REQUEST, "a name is listed twice")
        others = [n for n in msg.names if n != conn.name]
        if msg.kind == m.GroupKind.PAIR and len(others) != 1:
            raise RequestError(ErrorCode.INVALID_REQUEST, "a two-person group has one other name")
        if msg.kind not in (m.GroupKind.PAIR, m.GroupKind.MANY) or not others:
            raise RequestError(ErrorCode.INVALID_REQUEST, "a group needs other members")
        d = self.store.create_group(conn.name, others, msg.title, self.now_ms())
        d.addErrback(request_error)

        def created(appended: st.Appended) -> Deferred[None]:
            # The offline members in the request's order.
            acked = self.router.online(others).addCallback(lambda on: conn.send(
                m.AckCreateGroup(msg.req, appended.group_id,
                                 tuple(n for n in others if n not in on))))
            self.fan_out(appended, appended.entry.body or b"" if appended.entry else b"")
            return acked

        d.addCallback(created)
        return d

    # --- messages and images -------------------------------------------------------------------

    def chat(self, conn: Connection, msg: m.Chat) -> Deferred[Any] | None:
        if (msg.group_id == 0) != (msg.to is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names its recipient; a group chat does not")
        if msg.content_type == m.ContentType.TEXT:
            if msg.image is not None:
                raise RequestError(ErrorCode.INVALID_REQUEST, "a text message has no image info")
            if not msg.body:
                raise RequestError(ErrorCode.INVALID_REQUEST, "empty text")
            if len(msg.body) > m.MAX_TEXT_BYTES:
                raise RequestError(ErrorCode.MESSAGE_TOO_LARGE, "texts are at most 64 KiB")
            try:
                msg.body.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(ErrorCode.INVALID_REQUEST, "a text must be UTF-8") from None
            return self._store_and_fan_out(conn, self._draft(conn, msg, msg.body, None, None),
                                           msg.req)
        if msg.content_type == m.ContentType.IMAGE:
            upload = conn.uploads.start(msg)
            return None if upload is None else self._image_complete(conn, upload)
        raise RequestError(ErrorCode.INVALID_REQUEST, "clients send text or images")

    def _draft(self, conn: Connection, msg: m.Chat, body: bytes, mime: str | None,
               sha256: bytes | None) -> st.Draft:
        return st.Draft(conn.name, msg.group_id, msg.to, msg.client_msg_id, msg.content_type,
                        body, mime, sha256, self.now_ms())

    def image_chunk(self, conn: Connection, msg: m.ImageChunk) -> Deferred[Any] | None:
        upload = conn.uploads.chunk(msg)
        return None if upload is None else self._image_complete(conn, upload)

    def _image_complete(self, conn: Connection, upload: ImageUpload) -> Deferred[Any]:
        """All bytes are in: check the type and store (the store checks the SHA-256 off the
        reactor, BAD_IMAGE), answer; the transfer keeps its slot (and its req stays in use)
        until then."""
        body = upload.take_body()
        req = upload.chat.req
        mime = image_type(body[:SIGNATURE_BYTES])
        if mime is None:
            conn.uploads.finished(req)
            raise RequestError(ErrorCode.BAD_IMAGE, "not a PNG, JPEG, GIF or WebP image")
        d = self._store_and_fan_out(conn, self._draft(conn, upload.chat, body, mime,
                                                      upload.sha256), req)

        def finished(result: object) -> object:
            conn.uploads.finished(req)
            return result

        return d.addBoth(finished)

    # --- acknowledgements, receipts, typing ----------------------------------------------------

    def delivery_ack(self, conn: Connection, msg: m.DeliveryAck) -> Deferred[Any]:
        name = conn.name
        d = self.store.acknowledge(name, conn.device_id, msg.up_to, self.now_ms())

        def receipts(rows: list[st.DeliveredReceipt]) -> None:
            for row in rows:
                receipt = m.Receipt(m.ReceiptKind.DELIVERED, row.group_id, name, row.conv_seq)
                self.router.push((row.sender,), m.encode_message(receipt))

        d.addCallback(receipts)
        return d

    def _audience(self, conn: Connection, group_id: int,
                  peer: str | None) -> Deferred[list[str]]:
        """Who hears a read receipt or typing: the peer (only if the two have a direct
        conversation: otherwise nobody, silently), or the group's members."""
        if (group_id == 0) != (peer is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names the peer; a group chat does not")
        if peer is not None:
            to: list[str] = [peer]
            return self.store.direct_exists(conn.name, peer).addCallback(
                lambda exists: to if exists else [])
        d = self.store.conversation_members(conn.name, group_id)
        d.addErrback(request_error)
        return d

    def _tell(self, names: list[str], sender: str, msg: m.Message) -> None:
        self.router.push([n for n in names if n != sender], m.encode_message(msg))

    def read(self, conn: Connection, msg: m.Read) -> Deferred[Any]:
        receipt = m.Receipt(m.ReceiptKind.READ, msg.group_id, conn.name, msg.up_to)
        d = self._audience(conn, msg.group_id, msg.peer)
        d.addCallback(self._tell, conn.name, receipt)
        return d

    def typing(self, conn: Connection, msg: m.Typing) -> Deferred[Any]:
        d = self._audience(conn, msg.group_id, msg.to)
        d.addCallback(self._tell, conn.name, m.TypingEvent(msg.group_id, conn.name, msg.active))
        return d

    # --- groups --------------------------------------------------------------------------------

    def _change_group(self, conn: Connection, req: int, group_id: int, action: int,
                      names: tuple[str, ...], title: str | None) -> Deferred[Any]:
        d = self.store.change_group(conn.name, group_id, action, names, title, self.now_ms())
        d.addErrback(request_error)

        def changed(appended: st.Appended) -> None:
            conn.send(m.Ok(req))
            # An owner leaving is followed by OWNER_CHANGED in the same transaction.
            for event in (appended, *appended.followed_by):
                body = event.entry.body if event.entry and event.entry.body else b""
                self.fan_out(event, body)

        d.addCallback(changed)
        return d

    def group_add(self, conn: Connection, msg: m.GroupAdd) -> Deferred[Any]:
        return self._change_group(conn, msg.req, msg.group_id, m.GroupAction.ADDED, msg.names,
                                  None)

    def group_remove(self, conn: Connection, msg: m.GroupRemove) -> Deferred[Any]:
        return self._change_group(conn, msg.req, msg.group_id, m.GroupAction.REMOVED, msg.names,
                                  None)

    def group_leave(self, conn: Connection, msg: m.GroupLeave) -> Deferred[Any]:
        return self._change_group(conn, msg.req, msg.group_id, m.GroupAction.LEFT, (), None)

    def group_rename(self, conn: Connection, msg: m.GroupRename) -> Deferred[Any]:
        return self._change_group(conn, msg.req, msg.group_id, m.GroupAction.RENAMED, (),
                                  msg.title)

    def group_set_role(self, conn: Connection, msg: m.GroupSetRole) -> Deferred[Any]:
        action = m.GroupAction.PROMOTED if msg.admin else m.GroupAction.DEMOTED
        return self._change_group(conn, msg.req, msg.group_id, action, msg.names, None)

    def group_list(self, conn: Connection, msg: m.GroupList) -> Deferred[Any]:
        d = self.store.user_groups(conn.name)
        d.addCallback(lambda rows: conn.send(m.Groups(
            msg.req, tuple(m.GroupInfo(*row) for row in rows[: m.MAX_PAGE]))))
        return d

    def group_members(self, conn: Connection, msg: m.GroupMembers) -> Deferred[Any]:
        d = self.store.group_members(conn.name, msg.group_id)
        d.addErrback(request_error)

        def answer(rows: list[st.MemberRow]) -> Deferred[None]:
            rows = sorted(rows, key=lambda row: _by_name(row[0]))[: m.MAX_NAMES]
            return self.router.online(row[0] for row in rows).addCallback(
                lambda on: conn.send(m.Members(msg.req, msg.group_id, tuple(
                m.MemberInfo(name, role, name in on, None if name in on else seen)
                for name, role, seen in rows))))

        d.addCallback(answer)
        return d

    def presence(self, conn: Connection, msg: m.PresenceQuery) -> Deferred[Any]:
        d = self.store.contacts(conn.name)

        def answer(rows: list[tuple[str, int | None]]) -> Deferred[None]:
            rows = sorted(rows, key=lambda row: _by_name(row[0]))[:MAX_PRESENCE]
            return self.router.online(row[0] for row in rows).addCallback(
                lambda on: conn.send(m.Presence(msg.req, tuple(
                m.PresenceInfo(name, name in on, None if name in on else seen)
                for name, seen in rows))))

        d.addCallback(answer)
        return d

    def history(self, conn: Connection, msg: m.History) -> Deferred[Any]:
        if not 1 <= msg.limit <= MAX_HISTORY:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"limit is 1 to {MAX_HISTORY}")
        if (msg.group_id == 0) != (msg.peer is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names the peer; a group chat does not")
        d = self.store.history(conn.name, msg.group_id, msg.peer, msg.before_seq, msg.limit)
        d.addErrback(request_error)

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

    # --- delivery start ------------------------------------------------------------------------

    def sync(self, conn: Connection, msg: m.Sync) -> Deferred[Any]:
        stream = conn.stream
        stream.claim()
        d = self.store.sync_position(conn.name, conn.device_id)

        def start(position: tuple[int, int]) -> None:
            acked, end = position
            cursor = acked if msg.cursor is None else msg.cursor
            # A cursor past the end of the log is clipped: otherwise the live messages up to
            # it would look already delivered and be skipped.
            stream.start(msg.req, min(cursor, end))

        d.addCallback(start)
        return d
