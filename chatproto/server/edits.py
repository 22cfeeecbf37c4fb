"""EDIT and RETRACT: a change to an earlier message is a new log entry referring to it by
(conversation, conv_seq), so it reaches every device the way messages do."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import Connection
from chatproto.server.feature_settings import FeatureSettings
from chatproto.server.refusals import RequestError, request_error
from chatproto.storage import store as st
from chatproto.storage.edits import ChangeRequest
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode


class EditHandlers:
    """Edits (the sender, within the edit window) and retractions (the sender, or a group's
    owner and admins)."""

    def __init__(self, chat: ChatHandlers, settings: FeatureSettings) -> None:
        self.chat = chat
        self.store = chat.store
        self.settings = settings
        self.dispatch = {f.Edit: self.edit, f.Retract: self.retract}

    def edit(self, conn: Connection, msg: f.Edit) -> Deferred[Any]:
        try:
            msg.text.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(ErrorCode.INVALID_REQUEST, "a text must be UTF-8") from None
        body = m.encode_record(f.EditBody(msg.target_seq, msg.text))
        return defer.ensureDeferred(self._change(conn, msg, f.EDIT, body))

    def retract(self, conn: Connection, msg: f.Retract) -> Deferred[Any]:
        body = m.encode_record(f.RetractBody(msg.target_seq))
        return defer.ensureDeferred(self._change(conn, msg, f.RETRACT, body))

    async def _change(self, conn: Connection, msg: f.Edit | f.Retract, content_type: int,
                      body: bytes) -> None:
        if (msg.group_id == 0) != (msg.to is not None):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               "a direct chat names the peer; a group chat does not")
        now = self.chat.now_ms()
        change = ChangeRequest(conn.name, msg.group_id, msg.to, msg.target_seq,
                               content_type == f.EDIT, now, self.settings.edit_window_ms)
        try:
            conv_id = await self.store.features.edits.check_change(change)
            draft = st.Draft(conn.name, msg.group_id, msg.to, msg.client_msg_id, content_type,
                             body, None, None, now)
            appended = await self.store.append_message(draft)
        except st.StoreError:
            request_error(Failure())  # raises the RequestError for a refusal
            raise
        if content_type == f.RETRACT:
            await self.store.features.edits.record_retraction(conv_id, msg.target_seq)
        conn.send(m.SendAck(msg.req, msg.client_msg_id, appended.group_id, appended.conv_seq,
                            appended.created_ms), check=False)
        if not appended.duplicate:
            self.chat.fan_out(appended, body)
