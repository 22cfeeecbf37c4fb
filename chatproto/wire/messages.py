"""Layer 2: every message of the protocol as a typed, validated value.

A message is encoded as a MessagePack array ``[type, field1, field2, ...]`` with exactly the
fields of its type, in order (docs/protocol.rst, "Layer 2"). Each field carries a spec in its
``Annotated`` type hint; one generic routine validates every decoded message against those specs,
so the spec table in the docs, the dataclass and the validation are the same thing.

Nested records (list entries such as :class:`PresenceInfo`) are arrays without a type tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatproto.wire.records import (
    B16,
    B32,
    B64,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    U8,
    U16,
    U32,
    U64,
    Bin,
    Bool,
    FieldSpec,
    ListOf,
    Message,
    Optional,
    Record,
    RecordSpec,
    Text,
    UInt,
    decode_message,
    decode_record,
    encode_message,
    encode_record,
    message,
    record,
)
from chatproto.wire.records import bad_field as _bad
from chatproto.wire.records import pack as _pack

__all__ = [
    "B16", "B32", "B64", "MAX_MESSAGE_BYTES", "MESSAGE_TYPES", "U8", "U16", "U32", "U64", "Bin",
    "Bool", "ErrorCode", "FieldSpec", "ListOf", "LocalProtocolError", "Message", "Optional",
    "Record", "RecordSpec", "RemoteProtocolError", "Text", "UInt", "decode_message",
    "decode_record", "encode_message", "encode_record", "message", "record",
]

#: The protocol version of the original handshake (Hello, type 1).
PROTOCOL_VERSION = 1

#: A text body is at most this many bytes of UTF-8.
MAX_TEXT_BYTES = 64 * 1024
#: One image chunk (in CHAT or IMAGE_CHUNK) carries at most this many bytes.
MAX_CHUNK_BYTES = 512 * 1024
#: Names in one list (group members, unknown names, ...).
MAX_NAMES = 256
#: Entries in one page (history, presence, groups, members).
MAX_PAGE = 256

#: User names: 1 to 32 characters, lower-case ASCII letters, digits, ``_``, ``.`` and ``-``,
#: starting with a letter or a digit.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,31}")
#: Longest key share or key-exchange response (ML-KEM-768 + X25519 need 1,216).
MAX_SHARE_BYTES = 2048
#: Versions and key shares one Hello2 may offer.
MAX_OFFERED = 8
#: Passwords on the wire: 1 to 1024 bytes of UTF-8 (the server's policy for new passwords is
#: stricter: at least 8 characters).
MAX_PASSWORD_BYTES = 1024


class ContentType:
    """Values of the ``content_type`` field of CHAT and MESSAGE."""

    TEXT = 1
    IMAGE = 2
    EVENT = 3


class GroupKind:
    """Values of the ``kind`` field of CREATE_GROUP."""

    PAIR = 1
    MANY = 2


class ReceiptKind:
    """Values of the ``kind`` field of RECEIPT."""

    DELIVERED = 2
    READ = 3


class GroupAction:
    """Values of the ``action`` field of a group event (content type EVENT)."""

    CREATED = 1
    ADDED = 2
    REMOVED = 3
    LEFT = 4
    RENAMED = 5
    PROMOTED = 6  # names became admins
    DEMOTED = 7  # names became plain members
    OWNER_CHANGED = 8  # names[0] became the owner


@dataclass(frozen=True)
class NameSpec(FieldSpec):
    """A user name: see :data:`NAME_PATTERN`."""

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not str or NAME_PATTERN.fullmatch(value) is None:
            raise _bad(where, "expected a user name")
        return value


Name = Annotated[str, NameSpec()]
OptName = Annotated[str | None, Optional(NameSpec())]
Names = Annotated[tuple[str, ...], ListOf(NameSpec(), MAX_NAMES)]
Password = Annotated[str, Text(MAX_PASSWORD_BYTES, 1)]
Reason = Annotated[str, Text(1024)]
Title = Annotated[str, Text(200)]
Req = Annotated[int, U32]
Seq = Annotated[int, U64]
OptSeq = Annotated[int | None, Optional(U64)]
Code = Annotated[int, U16]
Key32 = Annotated[bytes, B32]
MsgId = Annotated[bytes, B16]
GroupId = Annotated[int, U64]
Flag = Annotated[bool, Bool()]
Share = Annotated[bytes, Bin(32, MAX_SHARE_BYTES)]


# Nested records.


@record
class ImageInfo(Record):
    """Describes an image: its total size, SHA-256 and (from the server) its type."""

    total_size: Annotated[int, U32]
    sha256: Key32
    mime: Annotated[str | None, Optional(Text(64))]


OptImage = Annotated[ImageInfo | None, Optional(RecordSpec(ImageInfo))]


@record
class GroupEvent(Record):
    """The body of a MESSAGE with content type EVENT (encoded as a MessagePack array)."""

    action: Annotated[int, U8]
    actor: Name
    names: Names
    title: Title


@record
class PresenceInfo(Record):
    """One user's presence: online now, or when last seen (ms since the epoch)."""

    name: Name
    online: Flag
    last_seen_ms: OptSeq


@record
class GroupInfo(Record):
    """One group the user belongs to."""

    group_id: GroupId
    title: Title
    role: Annotated[str, Text(16)]
    member_count: Annotated[int, U32]


@record
class MemberInfo(Record):
    """One member of a group."""

    name: Name
    role: Annotated[str, Text(16)]
    online: Flag
    last_seen_ms: OptSeq


@record
class HistoryEntry(Record):
    """One archived message in a HISTORY_PAGE (image bodies are not included)."""

    conv_seq: Seq
    sender: Name
    to: OptName
    server_time_ms: Seq
    content_type: Annotated[int, U8]
    body: Annotated[bytes, Bin(0, MAX_TEXT_BYTES)]
    image: OptImage


# Handshake messages (section "Handshake" of docs/protocol.rst).


@message(1)
class Hello(Message):
    version: Annotated[int, U16]
    client_random: Key32
    client_key: Key32


@message(2)
class ServerKey(Message):
    server_random: Key32
    server_key: Key32
    identity_key: Key32
    signature: Annotated[bytes, B64]


@message(3)
class Signin(Message):
    name: Name
    password: Password
    device_id: MsgId


@message(4)
class Register(Message):
    name: Name
    password: Password


@message(5)
class Ack(Message):
    server_key: Share  # 32 bytes in version 1; the suite's public key length in version 2


@message(6)
class Nck(Message):
    code: Code
    reason: Reason
    retry_after_ms: Annotated[int, U32]


@message(7)
class AckRegister(Message):
    name: Name


@message(8)
class NckRegister(Message):
    code: Code
    reason: Reason
    retry_after_ms: Annotated[int, U32]


@message(9)
class ClientKey(Message):
    client_key: Share  # 32 bytes in version 1; the suite's response length in version 2


@message(10)
class Finished(Message):
    verify_data: Key32


@message(11)
class HelloDone(Message):
    name: Name
    session_id: MsgId
    server_time_ms: Seq


@message(12)
class HelloError(Message):
    code: Code
    reason: Reason


# Protocol version 2 (section "Protocol version 2" of docs/protocol.rst).


@record
class KeyShare(Record):
    """One key-exchange suite the client offers, with its public key for that suite."""

    suite: Annotated[int, U16]
    share: Share


@message(13)
class Hello2(Message):
    """The version-2 Hello: every version and suite the client supports, in its preference."""

    versions: Annotated[tuple[int, ...], ListOf(U16, MAX_OFFERED)]
    client_random: Key32
    key_shares: Annotated[tuple[KeyShare, ...], ListOf(RecordSpec(KeyShare), MAX_OFFERED)]


@message(14)
class ServerKey2(Message):
    """The version-2 server key: the chosen version and suite sit inside the signed part."""

    version: Annotated[int, U16]
    suite: Annotated[int, U16]
    server_random: Key32
    server_share: Share
    identity_key: Key32
    signature: Annotated[bytes, B64]


# Session messages.


@message(32)
class Error(Message):
    req: Req
    code: Code
    reason: Reason
    names: Names


@message(33)
class Ok(Message):
    req: Req


@message(34)
class Create(Message):
    req: Req
    peer: Name


@message(35)
class AckCreate(Message):
    req: Req
    peer: Name
    online: Flag
    last_seen_ms: OptSeq


@message(36)
class CreateGroup(Message):
    req: Req
    kind: Annotated[int, U8]
    count: Annotated[int, U16]
    names: Names
    title: Title


@message(37)
class AckCreateGroup(Message):
    req: Req
    group_id: GroupId
    offline: Names


@message(38)
class Chat(Message):
    req: Req
    client_msg_id: MsgId
    group_id: GroupId
    to: OptName
    sender: OptName
    content_type: Annotated[int, U8]
    body: Annotated[bytes, Bin(0, MAX_CHUNK_BYTES)]
    image: OptImage


@message(39)
class ImageChunk(Message):
    ref: Seq
    index: Annotated[int, U16]
    data: Annotated[bytes, Bin(1, MAX_CHUNK_BYTES)]


@message(40)
class SendAck(Message):
    req: Req
    client_msg_id: MsgId
    group_id: GroupId
    conv_seq: Seq
    server_time_ms: Seq


@message(41)
class Deliver(Message):
    user_seq: Seq
    group_id: GroupId
    sender: Name
    to: OptName
    conv_seq: Seq
    server_time_ms: Seq
    client_msg_id: Annotated[bytes | None, Optional(B16)]
    content_type: Annotated[int, U8]
    body: Annotated[bytes, Bin(0, MAX_CHUNK_BYTES)]
    image: OptImage


@message(42)
class DeliveryAck(Message):
    up_to: Seq


@message(43)
class Read(Message):
    group_id: GroupId
    peer: OptName
    up_to: Seq


@message(44)
class Receipt(Message):
    kind: Annotated[int, U8]
    group_id: GroupId
    by: Name
    conv_seq: Seq


@message(45)
class Typing(Message):
    group_id: GroupId
    to: OptName
    active: Flag


@message(46)
class TypingEvent(Message):
    group_id: GroupId
    sender: Name
    active: Flag


@message(47)
class GroupAdd(Message):
    req: Req
    group_id: GroupId
    names: Names


@message(48)
class GroupRemove(Message):
    req: Req
    group_id: GroupId
    names: Names


@message(49)
class GroupLeave(Message):
    req: Req
    group_id: GroupId


@message(50)
class GroupRename(Message):
    req: Req
    group_id: GroupId
    title: Title


@message(51)
class GroupList(Message):
    req: Req


@message(52)
class Groups(Message):
    req: Req
    groups: Annotated[tuple[GroupInfo, ...], ListOf(RecordSpec(GroupInfo), MAX_PAGE)]


@message(53)
class GroupMembers(Message):
    req: Req
    group_id: GroupId


@message(54)
class Members(Message):
    req: Req
    group_id: GroupId
    members: Annotated[tuple[MemberInfo, ...], ListOf(RecordSpec(MemberInfo), MAX_NAMES)]


@message(55)
class PresenceQuery(Message):
    req: Req


@message(56)
class Presence(Message):
    req: Req
    entries: Annotated[tuple[PresenceInfo, ...], ListOf(RecordSpec(PresenceInfo), 4096)]


@message(57)
class PresenceEvent(Message):
    name: Name
    online: Flag
    last_seen_ms: OptSeq


@message(58)
class History(Message):
    req: Req
    group_id: GroupId
    peer: OptName
    before_seq: Seq
    limit: Annotated[int, U16]


@message(59)
class HistoryPage(Message):
    req: Req
    group_id: GroupId
    peer: OptName
    entries: Annotated[tuple[HistoryEntry, ...], ListOf(RecordSpec(HistoryEntry), MAX_PAGE)]
    has_more: Flag


@message(60)
class Sync(Message):
    req: Req
    cursor: OptSeq


@message(61)
class SyncDone(Message):
    req: Req
    last_seq: Seq


@message(62)
class Quit(Message):
    req: Req


@message(63)
class AckQuit(Message):
    req: Req


@message(64)
class Ping(Message):
    nonce: Seq


@message(65)
class Pong(Message):
    nonce: Seq


@message(66)
class GroupSetRole(Message):
    req: Req
    group_id: GroupId
    names: Names
    admin: Flag


@message(67)
class KeyUpdate(Message):
    """Version 2 only: the sender's later frames use its next traffic secret."""



# The server's hot path: messages it builds from values it holds validated.


def encode_send_ack(req: int, client_msg_id: bytes, group_id: int, conv_seq: int,
                    server_time_ms: int) -> bytes:
    """``encode_message(SendAck(...), check=False)`` without building the SendAck: the
    server answers every Chat with one, from the Chat's validated fields and the values the
    store assigned."""
    return _pack([SendAck.TYPE, req, client_msg_id, group_id, conv_seq, server_time_ms])


# Encoding a Deliver once for many recipients.

#: A Deliver starts with its array header (11 elements: fixarray 0x9b) and its type (41, a
#: positive fixint); ``user_seq`` follows, then the fields every recipient shares.
_DELIVER_HEAD = bytes((0x90 + 1 + len(Deliver._names), Deliver.TYPE))


class DeliverTemplate:
    """A log entry's Deliver, encoded once: only ``user_seq`` differs between recipients.

    The shared fields (everything after ``user_seq``) are encoded and checked once; each
    recipient's payload is the array header, the type, that recipient's ``user_seq`` in
    MessagePack's shortest integer form, and the shared bytes: exactly
    ``encode_message(Deliver(user_seq, ...))`` (docs/protocol.rst, "Deliver"), without
    building a Deliver per recipient. The server builds the fields from stored, validated
    values (``check=False`` of :func:`encode_message`).
    """

    __slots__ = ("_tail",)

    def __init__(self, group_id: int, sender: str, to: str | None, conv_seq: int,
                 server_time_ms: int, client_msg_id: bytes | None, content_type: int,
                 body: bytes, image: ImageInfo | None) -> None:
        encoded = encode_message(Deliver(0, group_id, sender, to, conv_seq, server_time_ms,
                                         client_msg_id, content_type, body, image), check=False)
        # user_seq 0 is the one-byte positive fixint 0x00 right after the head.
        assert encoded[:3] == _DELIVER_HEAD + b"\x00"
        self._tail = encoded[3:]

    def payload(self, user_seq: int) -> bytes:
        """The encoded Deliver for one recipient; LocalProtocolError if ``user_seq`` is not a
        valid Seq or the message is too large."""
        if type(user_seq) is not int or not 0 <= user_seq < 2**63:
            raise LocalProtocolError(ErrorCode.MALFORMED_MESSAGE,
                                     "Deliver.user_seq: expected an unsigned 63-bit integer")
        data = b"".join((_DELIVER_HEAD, _pack_uint(user_seq), self._tail))
        if len(data) > MAX_MESSAGE_BYTES:
            raise LocalProtocolError(ErrorCode.MALFORMED_MESSAGE, "message too large")
        return data


def _pack_uint(value: int) -> bytes:
    """MessagePack's shortest encoding of an unsigned integer below 2^64."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x100:
        return bytes((0xCC, value))
    if value < 0x10000:
        return b"\xcd" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\xce" + value.to_bytes(4, "big")
    return b"\xcf" + value.to_bytes(8, "big")
