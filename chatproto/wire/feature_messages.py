"""Layer 2 messages of the everyday features (docs/protocol.rst, "Everyday features"): edits
and retractions, the conversation list, search, account self-service and blocking.

They are ordinary session messages (any protocol version), registered with the same codec as
:mod:`chatproto.wire.messages` when this module is imported: the server (through its
handlers) and the client library (through :mod:`chatproto.client.feature_requests`) do.
"""

from __future__ import annotations

from typing import Annotated

from chatproto.wire.messages import (
    Flag,
    GroupId,
    MsgId,
    Name,
    Names,
    OptName,
    Password,
    Req,
    Seq,
)
from chatproto.wire.records import (
    U8,
    U16,
    U32,
    Bin,
    ListOf,
    Message,
    Record,
    RecordSpec,
    Text,
    message,
    record,
)

#: Content types of log entries added by these features (see ContentType in messages).
EDIT = 4
RETRACT = 5

#: The longest new text of an edit (the record around it must fit a 64 KiB history body).
MAX_EDIT_TEXT_BYTES = 64 * 1024 - 32
#: Search queries: at most this many bytes of UTF-8.
MAX_QUERY_BYTES = 256
#: Hits in one search page, conversations in one list, devices in one list.
MAX_HITS = 100
MAX_CONVERSATIONS = 1024
MAX_DEVICES = 64
#: The last message of a conversation in a list is cut to this many bytes of UTF-8.
PREVIEW_BYTES = 200


# --- bodies of the new log entries (MessagePack arrays, like GroupEvent) ---------------------


@record
class EditBody(Record):
    """The body of a log entry of content type EDIT: the entry it replaces the text of."""

    target_seq: Seq
    text: Annotated[bytes, Bin(1, MAX_EDIT_TEXT_BYTES)]


@record
class RetractBody(Record):
    """The body of a log entry of content type RETRACT: the entry it deletes."""

    target_seq: Seq


# --- nested records --------------------------------------------------------------------------


@record
class ConversationInfo(Record):
    """One conversation in a CONVERSATIONS answer."""

    group_id: GroupId  # 0 for a direct conversation
    peer: OptName  # the other user of a direct conversation
    title: Annotated[str, Text(200)]
    last_seq: Seq  # 0: no message yet
    last_sender: OptName
    last_time_ms: Seq
    last_content_type: Annotated[int, U8]
    last_preview: Annotated[str, Text(PREVIEW_BYTES)]
    unread: Annotated[int, U32]


@record
class SearchHit(Record):
    """One message found by SEARCH, with its latest text."""

    hit_id: Seq  # the page cursor: pass the last one as ``before_id``
    group_id: GroupId
    peer: OptName
    conv_seq: Seq
    sender: Name
    server_time_ms: Seq
    text: Annotated[bytes, Bin(0, 64 * 1024)]


@record
class DeviceInfo(Record):
    """One device of the account."""

    device_id: MsgId
    online: Flag
    current: Flag  # the device that asked
    acked_seq: Seq


# --- requests and answers --------------------------------------------------------------------


@message(80)
class Edit(Message):
    """Replace the text of one's own text message (answered by SEND_ACK)."""

    req: Req
    client_msg_id: MsgId
    group_id: GroupId
    to: OptName
    target_seq: Seq
    text: Annotated[bytes, Bin(1, MAX_EDIT_TEXT_BYTES)]


@message(81)
class Retract(Message):
    """Delete a message (answered by SEND_ACK)."""

    req: Req
    client_msg_id: MsgId
    group_id: GroupId
    to: OptName
    target_seq: Seq


@message(82)
class ConversationList(Message):
    req: Req


@message(83)
class Conversations(Message):
    req: Req
    conversations: Annotated[tuple[ConversationInfo, ...],
                             ListOf(RecordSpec(ConversationInfo), MAX_CONVERSATIONS)]


@message(84)
class Search(Message):
    req: Req
    query: Annotated[str, Text(MAX_QUERY_BYTES, 1)]
    before_id: Seq  # 0: the newest
    limit: Annotated[int, U16]


@message(85)
class SearchResults(Message):
    req: Req
    hits: Annotated[tuple[SearchHit, ...], ListOf(RecordSpec(SearchHit), MAX_HITS)]
    has_more: Flag


@message(86)
class ChangePassword(Message):
    req: Req
    current: Password
    new: Password


@message(87)
class DeleteAccount(Message):
    req: Req
    password: Password


@message(88)
class DeviceList(Message):
    req: Req


@message(89)
class Devices(Message):
    req: Req
    devices: Annotated[tuple[DeviceInfo, ...], ListOf(RecordSpec(DeviceInfo), MAX_DEVICES)]


@message(90)
class SignOutDevice(Message):
    req: Req
    device_id: MsgId


@message(91)
class SignedOut(Message):
    """Server to client, just before it closes a session another device signed out."""

    reason: Annotated[str, Text(1024)]


@message(92)
class Block(Message):
    req: Req
    name: Name


@message(93)
class Unblock(Message):
    req: Req
    name: Name


@message(94)
class BlockList(Message):
    req: Req


@message(95)
class BlockedNames(Message):
    req: Req
    names: Names


# --- any file --------------------------------------------------------------------------------

#: Content type of a file message (its body is a FileInfo record; the bytes are fetched).
FILE = 6
#: One file chunk (FILE_CHUNK, FILE_DATA) carries at most this many bytes.
MAX_FILE_CHUNK_BYTES = 512 * 1024
#: File names: at most this many bytes of UTF-8.
MAX_FILE_NAME_BYTES = 255


@record
class FileInfo(Record):
    """A file: its name (never a path), media type, size and SHA-256."""

    name: Annotated[str, Text(MAX_FILE_NAME_BYTES, 1)]
    mime: Annotated[str, Text(127, 3)]
    size: Seq
    sha256: Annotated[bytes, Bin(32, 32)]


@message(96)
class FileOffer(Message):
    """Announce a file; the server answers OK (send the chunks) or ERROR."""

    req: Req
    client_msg_id: MsgId
    group_id: GroupId
    to: OptName
    info: Annotated[FileInfo, RecordSpec(FileInfo)]


@message(97)
class FileChunk(Message):
    """The next bytes of the file offered by FILE_OFFER ``ref`` (indexes from 0)."""

    ref: Req
    index: Annotated[int, U32]
    data: Annotated[bytes, Bin(1, MAX_FILE_CHUNK_BYTES)]


@message(98)
class FileFetch(Message):
    """Ask for bytes of the file message ``conv_seq`` of a conversation."""

    req: Req
    group_id: GroupId
    to: OptName
    conv_seq: Seq
    offset: Seq
    length: Annotated[int, U32]


@message(99)
class FileData(Message):
    req: Req
    offset: Seq
    data: Annotated[bytes, Bin(0, MAX_FILE_CHUNK_BYTES)]
    total: Seq
