"""The machinery under layer 2: field specs, records, the message registry and the codec.

:mod:`chatproto.wire.messages` defines every message with these; docs/protocol.rst, "Layer 2",
describes the encoding. A record is a MessagePack array of its fields in order; a message is
``[type, field1, ...]``. Decoding validates every field against the spec in its ``Annotated``
type hint, so the spec table in the docs, the dataclass and the validation are the same thing.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, dataclass_transform

import msgpack

from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

#: Largest encoded message; the frame layer bounds it too (1 MiB), this is a second fence.
MAX_MESSAGE_BYTES = 1024 * 1024

# --- field specs -----------------------------------------------------------------------------


class FieldSpec(abc.ABC):
    """How one field is validated after MessagePack decoding."""

    @abc.abstractmethod
    def check(self, value: Any, where: str) -> Any:
        """Return the value (possibly converted) or raise RemoteProtocolError."""


def bad_field(where: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, f"{where}: {why}")


@dataclass(frozen=True)
class UInt(FieldSpec):
    """An unsigned integer of at most ``bits`` bits (booleans are not integers here)."""

    bits: int

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not int or not 0 <= value < (1 << self.bits):
            raise bad_field(where, f"expected an unsigned {self.bits}-bit integer")
        return value


@dataclass(frozen=True)
class Bool(FieldSpec):
    """A MessagePack boolean."""

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not bool:
            raise bad_field(where, "expected a boolean")
        return value


@dataclass(frozen=True)
class Bin(FieldSpec):
    """A MessagePack bin of ``min_len`` to ``max_len`` bytes."""

    min_len: int
    max_len: int

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not bytes or not self.min_len <= len(value) <= self.max_len:
            if self.min_len == self.max_len:
                raise bad_field(where, f"expected {self.min_len} bytes")
            raise bad_field(where, f"expected {self.min_len} to {self.max_len} bytes")
        return value


@dataclass(frozen=True)
class Text(FieldSpec):
    """A MessagePack str of at most ``max_bytes`` bytes of UTF-8."""

    max_bytes: int
    min_bytes: int = 0

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not str:
            raise bad_field(where, "expected a string")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates: not encodable as MessagePack str
            raise bad_field(where, "expected valid UTF-8") from None
        if not self.min_bytes <= size <= self.max_bytes:
            raise bad_field(where, f"expected {self.min_bytes} to {self.max_bytes} bytes of UTF-8")
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
            raise bad_field(where, f"expected an array of at most {self.max_len} items")
        check = self.item.check
        return tuple(check(v, where) for v in value)


@dataclass(frozen=True)
class RecordSpec(FieldSpec):
    """A nested record: an array with exactly the fields of ``record``."""

    record: type[Record]

    def check(self, value: Any, where: str) -> Any:
        if type(value) is not list:
            raise bad_field(where, "expected an array")
        return self.record._from_fields(value, where)


U8 = UInt(8)
U16 = UInt(16)
U32 = UInt(32)
U64 = UInt(63)  # 63 bits: fits a signed BIGINT column and every MessagePack decoder
B16 = Bin(16, 16)
B32 = Bin(32, 32)
B64 = Bin(64, 64)


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
            raise bad_field(where, f"{cls.__name__} has {len(checks)} fields, got {len(values)}")
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
    """Class decorator: a slotted dataclass, immutable to the type checker, whose field specs
    are bound.

    Not ``frozen=True`` at run time: a frozen dataclass's ``__init__`` sets every field
    through ``object.__setattr__``, about five times the cost of a plain slot store, and every
    message the server decodes is built this way (the profile's largest self entry). The
    records stay hashable and compare by value (``unsafe_hash``: the hash of a frozen one);
    ``dataclass_transform(frozen_default=True)`` makes the type checker refuse assignments.
    """
    klass = dataclass(slots=True, unsafe_hash=True)(cls)
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


# --- codec -----------------------------------------------------------------------------------

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
#: MessagePack of a value already in wire form (lists, ints, bytes, str, None, bools).
pack = _packer.pack


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


_UNPACK_LIMITS: dict[str, Any] = {
    "raw": False,
    "use_list": True,
    "strict_map_key": True,
    "max_str_len": MAX_MESSAGE_BYTES,
    "max_bin_len": MAX_MESSAGE_BYTES,
    "max_array_len": 4096,
    "max_map_len": 0,
    "max_ext_len": 0,
}


def _unpack(data: bytes, *, padded: bool = False) -> Any:
    """One MessagePack value; with ``padded`` it may be followed by zero bytes (padding)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "message too large")
    try:
        return msgpack.unpackb(data, **_UNPACK_LIMITS)
    except msgpack.ExtraData as e:
        if not padded:
            raise RemoteProtocolError(
                ErrorCode.MALFORMED_MESSAGE, "bytes after the message"
            ) from None
        extra = e.extra
        if extra.count(0) != len(extra):
            raise RemoteProtocolError(ErrorCode.BAD_PADDING, "nonzero message padding") from None
        return e.unpacked
    except Exception as e:  # msgpack raises several types for bad input; all are the peer's
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, f"not MessagePack: {e}") from None


def decode_message(data: bytes, *, padded: bool = False, canonical: bool = False) -> Message:
    """Decode and validate one message; RemoteProtocolError for anything else.

    Args:
        data: The layer-2 payload.
        padded: Accept zero bytes after the message (protocol version 2 pads inside).
        canonical: Also require the shortest MessagePack encoding (handshake messages),
            so every implementation hashes the same bytes into the transcript.
    """
    value = _unpack(data, padded=padded)
    if type(value) is not list or not value or type(value[0]) is not int:
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "expected [type, fields...]")
    if value[0] < 0:
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "negative message type")
    cls = MESSAGE_TYPES.get(value[0])
    if cls is None:
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {value[0]}"
        )
    msg = cls._from_fields(value[1:], cls.__name__)
    if canonical and not data.startswith(_packer.pack(value)):
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "not canonical MessagePack")
    return msg


def decode_record(cls: type[R], data: bytes) -> R:
    """Decode a nested record encoded with :func:`encode_record`."""
    value = _unpack(data)
    if type(value) is not list:
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "expected an array")
    return cls._from_fields(value, cls.__name__)
