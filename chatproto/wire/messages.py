"""Layer 2: every message of the protocol as a typed, validated value.

A message is encoded as a MessagePack array ``[type, field1, field2, ...]`` with exactly the
fields of its type, in order (docs/protocol.rst, "Layer 2"). Each field carries a spec in its
``Annotated`` type hint; one generic routine validates every decoded message against those specs,
so the spec table in the docs, the dataclass and the validation are the same thing.

Nested records (list entries such as :class:`PresenceInfo`) are arrays without a type tag.
"""

from __future__ import annotations

import abc
import dataclasses
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar, dataclass_transform

import msgpack

from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

PROTOCOL_VERSION = 1

#: Largest encoded message; the frame layer bounds it too (1 MiB), this is a second fence.
MAX_MESSAGE_BYTES = 1024 * 1024
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


# --- field specs -----------------------------------------------------------------------------


class FieldSpec(abc.ABC):
    """How one field is validated after MessagePack decoding."""

    @abc.abstractmethod
    def check(self, value: Any, where: str) -> Any:
        """Return the value (possibly converted) or raise RemoteProtocolError."""


def _bad(where: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, f"{where}: {why}")


@dataclass(frozen=True)
class UInt(FieldSpec):
    """An unsigned integer of at most ``bits`` bits (booleans are not integers here)."""

    bits: int

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not int or not 0 <= value < (1 << self.bits):
            raise _bad(where, f"expected an unsigned {self.bits}-bit integer")
        return value


@dataclass(frozen=True)
class Bool(FieldSpec):
    """A MessagePack boolean."""

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not bool:
            raise _bad(where, "expected a boolean")
        return value


@dataclass(frozen=True)
class Bin(FieldSpec):
    """A MessagePack bin of ``min_len`` to ``max_len`` bytes."""

    min_len: int
    max_len: int

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not bytes or not self.min_len <= len(value) <= self.max_len:
            if self.min_len == self.max_len:
                raise _bad(where, f"expected {self.min_len} bytes")
            raise _bad(where, f"expected {self.min_len} to {self.max_len} bytes")
        return value


@dataclass(frozen=True)
class Text(FieldSpec):
    """A MessagePack str of at most ``max_bytes`` bytes of UTF-8."""

    max_bytes: int
    min_bytes: int = 0

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not str:
            raise _bad(where, "expected a string")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates: not encodable as MessagePack str
            raise _bad(where, "expected valid UTF-8") from None
        if not self.min_bytes <= size <= self.max_bytes:
            raise _bad(where, f"expected {self.min_bytes} to {self.max_bytes} bytes of UTF-8")
        return value


@dataclass(frozen=True)
class NameSpec(FieldSpec):
    """A user name: see :data:`NAME_PATTERN`."""

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not str or NAME_PATTERN.fullmatch(value) is None:
            raise _bad(where, "expected a user name")
        return value


@dataclass(frozen=True)
class Optional(FieldSpec):
    """Nil or a value of ``inner``."""

    inner: FieldSpec

    def check(self, value: Any, where: str) -> Any:
        if value is None:
            return None
        return self.inner.check(value, where)


@dataclass(frozen=True)
class ListOf(FieldSpec):
    """An array of at most ``max_len`` items of ``item``; decoded as a tuple."""

    item: FieldSpec
    max_len: int

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not list or len(value) > self.max_len:
            raise _bad(where, f"expected an array of at most {self.max_len} items")
        check = self.item.check
        return tuple(check(v, where) for v in value)


@dataclass(frozen=True)
class RecordSpec(FieldSpec):
    """A nested record: an array with exactly the fields of ``record``."""

    record: type[Record]

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not list:
            raise _bad(where, "expected an array")
        return self.record._from_fields(value, where)


U8 = UInt(8)
U16 = UInt(16)
U32 = UInt(32)
U64 = UInt(63)  # 63 bits: fits a signed BIGINT column and every MessagePack decoder
B16 = Bin(16, 16)
B32 = Bin(32, 32)
B64 = Bin(64, 64)

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


# --- records and messages --------------------------------------------------------------------


class Record:
    """Base of every encodable value: fields are validated from their ``Annotated`` specs."""

    _specs: ClassVar[tuple[tuple[str, FieldSpec], ...]] = ()

    @classmethod
    def _bind_specs(cls) -> None:
        hints = typing.get_type_hints(cls, include_extras=True)
        specs = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            metadata = getattr(hints[f.name], "__metadata__", ())
            meta = [m for m in metadata if isinstance(m, FieldSpec)]
            if len(meta) != 1:
                raise TypeError(f"{cls.__name__}.{f.name} needs exactly one FieldSpec")
            specs.append((f.name, meta[0]))
        cls._specs = tuple(specs)
        # Precomputed for the hot paths: each field's check with its error location, and the
        # positions of fields holding arrays or records (everything else packs as it is).
        cls._checks = tuple((spec.check, f"{cls.__name__}.{name}") for name, spec in specs)
        cls._names = tuple(name for name, _ in specs)
        cls._nested = tuple(i for i, (_, spec) in enumerate(specs) if _holds_record(spec))

    _checks: ClassVar[tuple[tuple[Callable[[Any, str], Any], str], ...]] = ()
    _names: ClassVar[tuple[str, ...]] = ()
    _nested: ClassVar[tuple[int, ...]] = ()

    @classmethod
    def _from_fields(cls: type[R], values: list[Any], where: str) -> R:
        checks = cls._checks
        if len(values) != len(checks):
            raise _bad(where, f"{cls.__name__} has {len(checks)} fields, got {len(values)}")
        return cls(*[check(v, at) for (check, at), v in zip(checks, values)])  # noqa: B905

    def _to_fields(self) -> list[Any]:
        out = [getattr(self, name) for name in self._names]
        for i in self._nested:
            out[i] = _to_wire(out[i])
        return out


R = TypeVar("R", bound=Record)


def _holds_record(spec: FieldSpec) -> bool:
    """Whether values of this spec need converting to lists (records, arrays)."""
    if isinstance(spec, RecordSpec | ListOf):
        return True
    if isinstance(spec, Optional):
        return _holds_record(spec.inner)
    return False


def _to_wire(value: Any) -> Any:
    if isinstance(value, Record):
        return value._to_fields()
    if isinstance(value, tuple):
        return [_to_wire(v) for v in value]
    return value


@dataclass_transform(frozen_default=True)
def record(cls: type[R]) -> type[R]:
    """Class decorator: a frozen, slotted dataclass whose field specs are bound."""
    klass = dataclass(frozen=True, slots=True)(cls)
    klass._bind_specs()
    return klass


class Message(Record):
    """A top-level message; ``TYPE`` is its type number on the wire."""

    TYPE: ClassVar[int]


MESSAGE_TYPES: dict[int, type[Message]] = {}


@dataclass_transform(frozen_default=True)
def message(type_number: int) -> Callable[[type[R]], type[R]]:
    """Class decorator registering a message type under its number."""

    def register(cls: type[R]) -> type[R]:
        klass = record(cls)
        if type_number in MESSAGE_TYPES:
            raise TypeError(f"message type {type_number} registered twice")
        klass.TYPE = type_number  # type: ignore[attr-defined]
        MESSAGE_TYPES[type_number] = klass  # type: ignore[assignment]
        return klass

    return register


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
    server_key: Key32


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
    client_key: Key32


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


# --- codec -----------------------------------------------------------------------------------

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode_record(value: Record) -> bytes:
    """Encode a nested record (no type tag), e.g. the body of an EVENT message."""
    return _packer.pack(value._to_fields())


def encode_message(msg: Message, *, check: bool = True) -> bytes:
    """Encode one message; LocalProtocolError if a field is invalid or it is too large.

    ``check=False`` skips the field validation (not the size check): for hot paths whose
    fields all come from values that were validated already (a stored message relayed).
    """
    fields = msg._to_fields()
    if check:
        try:
            type(msg)._from_fields(fields, type(msg).__name__)
        except RemoteProtocolError as e:
            raise LocalProtocolError(e.code, e.message) from None
    data = _packer.pack([msg.TYPE, *fields])
    if len(data) > MAX_MESSAGE_BYTES:
        raise LocalProtocolError(ErrorCode.MALFORMED_MESSAGE, "message too large")
    return data


def _unpack(data: bytes) -> Any:
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "message too large")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_MESSAGE_BYTES,
            max_bin_len=MAX_MESSAGE_BYTES,
            max_array_len=4096,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several types for bad input; all are the peer's
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, f"not MessagePack: {e}") from None


def decode_message(data: bytes) -> Message:
    """Decode and validate one message; RemoteProtocolError for anything else."""
    value = _unpack(data)
    if type(value) is not list or not value or type(value[0]) is not int:
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "expected [type, fields...]")
    cls = MESSAGE_TYPES.get(value[0])
    if cls is None:
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {value[0]}"
        )
    return cls._from_fields(value[1:], cls.__name__)


def decode_record(cls: type[R], data: bytes) -> R:
    """Decode a nested record encoded with :func:`encode_record`."""
    value = _unpack(data)
    if type(value) is not list:
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "expected an array")
    return cls._from_fields(value, cls.__name__)
