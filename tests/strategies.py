"""Hypothesis strategies for every layer-2 message, built from the field specs.

Everything here is derived by introspecting :data:`chatproto.wire.messages.MESSAGE_TYPES` and
each class's ``_specs``, so a new message type (or a new field spec on an existing one) is
covered without touching this file, as long as it is built from the known FieldSpec classes
(an unknown FieldSpec class raises ``NotImplementedError`` here, loudly).

Public helpers:

* :func:`field_values` - valid Python values for one FieldSpec;
* :func:`records` / :func:`messages` - valid records / messages (optionally of one type);
* :func:`invalid_wire_values` - MessagePack-level values one FieldSpec must reject;
* :func:`msgpack_objects` - arbitrary MessagePack-encodable objects (incl. ext types);
* :func:`to_wire` - a Python field value as it appears in the MessagePack array.
"""

from __future__ import annotations

import functools
from typing import Any

import msgpack
from hypothesis import strategies as st

from chatproto.wire import messages as m

# Keep generated values small so the ci profile stays fast; boundaries are tested explicitly.
_MAX_BIN = 48
_MAX_LIST = 4
_MAX_TEXT_CHARS = 24

ALL_MESSAGE_TYPES: list[type[m.Message]] = [m.MESSAGE_TYPES[k] for k in sorted(m.MESSAGE_TYPES)]

INVALID_NAMES = [
    "",
    "A",
    "Alice",
    "a" * 33,
    ".alice",
    "-alice",
    "_alice",
    "al ice",
    "alice\n",
    "\u00e9t\u00e9",
    "al\u0131ce",
    "\uff41lice",
    "alice/",
    "alice@x",
]


def _text(spec: m.Text) -> st.SearchStrategy[str]:
    # A character is at most 4 bytes of UTF-8, so max_bytes // 4 characters always fit.
    # Hypothesis' default alphabet excludes surrogates, which MessagePack cannot carry.
    chars = min(spec.max_bytes // 4, _MAX_TEXT_CHARS)
    ascii_max = min(spec.max_bytes, _MAX_TEXT_CHARS)
    min_size = 1 if spec.min_bytes else 0
    return st.one_of(
        st.text(min_size=min_size, max_size=chars),
        st.text(
            alphabet=st.characters(min_codepoint=0, max_codepoint=127),
            min_size=min_size,
            max_size=ascii_max,
        ),
    ).filter(lambda s: spec.min_bytes <= len(s.encode("utf-8")) <= spec.max_bytes)


@functools.cache
def field_values(spec: m.FieldSpec) -> st.SearchStrategy[Any]:
    """Valid Python values for ``spec`` (what a message constructor takes)."""
    if isinstance(spec, m.UInt):
        top = (1 << spec.bits) - 1
        edges = sorted(v for v in {0, 1, 127, 128, 255, 256, 65535, 65536, top} if v <= top)
        return st.one_of(st.integers(0, top), st.sampled_from(edges))
    if isinstance(spec, m.Bool):
        return st.booleans()
    if isinstance(spec, m.Bin):
        top = max(spec.min_len, min(spec.max_len, _MAX_BIN))
        return st.binary(min_size=spec.min_len, max_size=top)
    if isinstance(spec, m.Text):
        return _text(spec)
    if isinstance(spec, m.NameSpec):
        return st.one_of(
            st.from_regex(m.NAME_PATTERN, fullmatch=True),
            st.sampled_from(["a", "0", "a" * 32, "z9_.-", "alice", "bob.smith-2"]),
        )
    if isinstance(spec, m.Optional):
        return st.one_of(st.none(), field_values(spec.inner))
    if isinstance(spec, m.ListOf):
        return st.lists(field_values(spec.item), max_size=min(spec.max_len, _MAX_LIST)).map(tuple)
    if isinstance(spec, m.RecordSpec):
        return records(spec.record)
    raise NotImplementedError(f"no strategy for field spec {spec!r}")


@functools.cache
def records(cls: type[m.Record]) -> st.SearchStrategy[Any]:
    """Valid instances of a record or message class."""
    return st.builds(cls, *[field_values(spec) for _, spec in cls._specs])


def messages(cls: type[m.Message] | None = None) -> st.SearchStrategy[m.Message]:
    """Valid messages of ``cls``, or of any registered type."""
    if cls is not None:
        return records(cls)
    return st.sampled_from(ALL_MESSAGE_TYPES).flatmap(records)


def to_wire(value: Any) -> Any:
    """A Python field value as it appears in the MessagePack array."""
    if isinstance(value, m.Record):
        return [to_wire(getattr(value, name)) for name, _ in value._specs]
    if isinstance(value, tuple):
        return [to_wire(v) for v in value]
    return value


_WRONG_TYPES = st.one_of(
    st.floats(allow_nan=False),
    st.just({"a": 1}),  # a map (maps are not allowed anywhere)
    st.just(msgpack.ExtType(1, b"x")),
)


@functools.cache
def invalid_wire_values(spec: m.FieldSpec) -> st.SearchStrategy[Any]:
    """MessagePack-encodable values that ``spec.check`` must reject (MALFORMED_MESSAGE).

    Maps and ext types never reach the spec (the unpacker refuses them), but they are still
    invalid in that position, so the decode fails either way.
    """
    if isinstance(spec, m.UInt):
        return st.one_of(
            st.integers(min_value=-(1 << 63), max_value=-1),
            st.integers(min_value=1 << spec.bits, max_value=(1 << 64) - 1),
            st.booleans(),  # bool is not an integer here
            st.none(),
            st.text(max_size=3),
            st.binary(max_size=3),
            st.lists(st.integers(0, 3), max_size=2),
            _WRONG_TYPES,
        )
    if isinstance(spec, m.Bool):
        return st.one_of(st.integers(0, 1), st.none(), st.text(max_size=2), st.binary(max_size=2),
                         _WRONG_TYPES)
    if isinstance(spec, m.Bin):
        wrong_len = [spec.max_len + 1]
        if spec.min_len > 0:
            wrong_len.append(spec.min_len - 1)
        return st.one_of(
            st.sampled_from(wrong_len).map(bytes),
            st.text(min_size=spec.min_len, max_size=spec.min_len + 2),  # str, not bin
            st.integers(0, 10),
            st.none(),
            _WRONG_TYPES,
        )
    if isinstance(spec, m.Text):
        bad = [
            "a" * (spec.max_bytes + 1),
            "\u00e9" * (spec.max_bytes // 2 + 1),  # few characters, too many bytes
        ]
        if spec.min_bytes:
            bad.append("")
        return st.one_of(
            st.sampled_from(bad),
            st.binary(max_size=4),  # bin, not str
            st.integers(0, 10),
            st.none(),
            _WRONG_TYPES,
        )
    if isinstance(spec, m.NameSpec):
        return st.one_of(
            st.sampled_from(INVALID_NAMES),
            st.binary(min_size=1, max_size=4),
            st.integers(0, 10),
            st.none(),
            _WRONG_TYPES,
        )
    if isinstance(spec, m.Optional):
        return invalid_wire_values(spec.inner).filter(lambda v: v is not None)
    if isinstance(spec, m.ListOf):
        too_long = field_values(spec.item).map(lambda v: [to_wire(v)] * (spec.max_len + 1))
        bad_item = st.tuples(
            st.lists(field_values(spec.item).map(to_wire), max_size=2),
            invalid_wire_values(spec.item),
        ).map(lambda t: [*t[0], t[1]])
        return st.one_of(too_long, bad_item, st.integers(0, 3), st.binary(max_size=3),
                         st.text(max_size=3), _WRONG_TYPES)
    if isinstance(spec, m.RecordSpec):
        cls = spec.record
        wire = records(cls).map(to_wire)
        shorter = wire.map(lambda f: f[:-1])
        longer = wire.map(lambda f: [*f, 0])
        return st.one_of(shorter, longer, _record_with_bad_field(cls), st.integers(0, 3),
                         st.binary(max_size=3), _WRONG_TYPES)
    raise NotImplementedError(f"no invalid values for field spec {spec!r}")


@st.composite
def _record_with_bad_field(draw: st.DrawFn, cls: type[m.Record]) -> list[Any]:
    fields = to_wire(draw(records(cls)))
    i = draw(st.integers(0, len(cls._specs) - 1))
    fields[i] = draw(invalid_wire_values(cls._specs[i][1]))
    return fields


@st.composite
def invalid_message_fields(draw: st.DrawFn, cls: type[m.Message] | None = None) -> tuple[
        type[m.Message], list[Any], str]:
    """A message type, its wire fields with exactly one field invalid, and that field's name."""
    if cls is None:
        cls = draw(st.sampled_from([t for t in ALL_MESSAGE_TYPES if t._specs]))
    fields = to_wire(draw(records(cls)))
    i = draw(st.integers(0, len(cls._specs) - 1))
    name, spec = cls._specs[i]
    fields[i] = draw(invalid_wire_values(spec))
    return cls, fields, name


_MSGPACK_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.sampled_from([-(1 << 63), -1, 0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**34), st.integers(0, 999_999_999)),
)

msgpack_objects: st.SearchStrategy[Any] = st.recursive(
    _MSGPACK_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 9)), children, max_size=3),
    ),
    max_leaves=12,
)
"""Arbitrary MessagePack-encodable objects (nested lists and maps, ext types, huge ints)."""


def message_like_objects() -> st.SearchStrategy[list[Any]]:
    """Lists that look like messages: a (mostly) known type number and random fields."""
    type_numbers = st.one_of(
        st.sampled_from(sorted(m.MESSAGE_TYPES)),
        st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    )
    return st.tuples(type_numbers, st.lists(msgpack_objects, max_size=12)).map(
        lambda t: [t[0], *t[1]]
    )
