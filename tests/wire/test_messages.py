"""Tests for chatproto.wire.messages (layer 2: typed, validated MessagePack messages).

The strategies in tests/strategies.py are derived from ``MESSAGE_TYPES`` and each class's
``_specs``, so every registered message type is covered by the property tests here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from tests import strategies as hs


def pack(obj: Any) -> bytes:
    """MessagePack the way the protocol does (bin type for bytes)."""
    return msgpack.packb(obj, use_bin_type=True)


def decode_error(data: bytes) -> RemoteProtocolError:
    """Decode ``data``, which must fail, and return the RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError) as info:
        m.decode_message(data)
    return info.value


# ------------------------------------------------------------------- round trips


@given(hs.messages())
def test_round_trip_every_type(msg: m.Message) -> None:
    """decode_message(encode_message(x)) == x for every valid message of every type."""
    data = m.encode_message(msg)
    assert m.decode_message(data) == msg
    assert msgpack.unpackb(data)[0] == msg.TYPE


@settings(max_examples=20)
@given(data=st.data())
def test_every_type_has_a_strategy(data: st.DataObject) -> None:
    """Each registered type yields valid examples that round-trip (no type is skipped)."""
    for cls in hs.ALL_MESSAGE_TYPES:
        msg = data.draw(hs.messages(cls), label=cls.__name__)
        assert type(msg) is cls
        assert m.decode_message(m.encode_message(msg)) == msg


def test_registry_is_consistent() -> None:
    """MESSAGE_TYPES maps each number to a class whose TYPE is that number."""
    assert len(hs.ALL_MESSAGE_TYPES) == len(m.MESSAGE_TYPES) > 40
    for number, cls in m.MESSAGE_TYPES.items():
        assert cls.TYPE == number
        assert issubclass(cls, m.Message)


@given(hs.records(m.GroupEvent))
def test_record_round_trip(event: m.GroupEvent) -> None:
    """decode_record(cls, encode_record(x)) == x for a nested record (EVENT bodies)."""
    assert m.decode_record(m.GroupEvent, m.encode_record(event)) == event


@given(hs.records(m.HistoryEntry))
def test_record_round_trip_nested_optional(entry: m.HistoryEntry) -> None:
    """Records with optional nested records round-trip too."""
    assert m.decode_record(m.HistoryEntry, m.encode_record(entry)) == entry


# ------------------------------------------------------------------- known answers

KAT_HELLO = (
    "940101c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "c420202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
)
KAT_CHAT = "992607c410000102030405060708090a0b0c0d0e0f00a3626f62c001c4026869c0"
KAT_DELIVER = (
    "9b29cd012cce00011170a5616c696365c005cf0000018bcfe56800c002c40093cd03e8"
    "c4200000000000000000000000000000000000000000000000000000000000000000"
    "a9696d6167652f706e67"
)
KAT_NCK = "9406ccc8a362616400"
KAT_GROUP_EVENT = "9402a5616c69636592a3626f62a56361726f6ca45465616d"


@pytest.mark.parametrize(
    ("msg", "hex_"),
    [
        # fixarray(4) [1, 1, bin8(32) 00..1f, bin8(32) 20..3f]
        (m.Hello(1, bytes(range(32)), bytes(range(32, 64))), KAT_HELLO),
        # fixarray(9) [38, req 7, bin8(16) 00..0f, group 0, "bob", nil, TEXT, bin8 "hi", nil]
        (m.Chat(7, bytes(range(16)), 0, "bob", None, m.ContentType.TEXT, b"hi", None), KAT_CHAT),
        # fixarray(11) [41, uint16 300, uint32 70000, "alice", nil, 5, uint64 1700000000000,
        #               nil, IMAGE, bin8 "", [uint16 1000, bin8(32) zeros, "image/png"]]
        (
            m.Deliver(300, 70000, "alice", None, 5, 1_700_000_000_000, None,
                      m.ContentType.IMAGE, b"", m.ImageInfo(1000, bytes(32), "image/png")),
            KAT_DELIVER,
        ),
        # fixarray(4) [6, uint8 200, "bad", 0]
        (m.Nck(200, "bad", 0), KAT_NCK),
    ],
    ids=["hello", "chat", "deliver", "nck"],
)
def test_known_answer_encoding(msg: m.Message, hex_: str) -> None:
    """Fixed messages encode to fixed bytes (compact MessagePack, bin type for bytes)."""
    assert m.encode_message(msg).hex() == hex_
    assert m.decode_message(bytes.fromhex(hex_)) == msg


def test_known_answer_record() -> None:
    """A GroupEvent record encodes as an untagged array: [2, "alice", ["bob", "carol"], "Team"]."""
    event = m.GroupEvent(m.GroupAction.ADDED, "alice", ("bob", "carol"), "Team")
    assert m.encode_record(event).hex() == KAT_GROUP_EVENT
    assert m.decode_record(m.GroupEvent, bytes.fromhex(KAT_GROUP_EVENT)) == event


# ------------------------------------------------------------------- robustness


@given(st.binary(max_size=200))
@example(b"")
@example(b"\xc1")  # never-used MessagePack byte
@example(b"\x91\x01")  # [1]: Hello with no fields
@example(b"\xdd\xff\xff\xff\xff")  # array32 claiming 4 G items
@example(b"\xc6\xff\xff\xff\xff")  # bin32 claiming 4 GiB
@example(b"\x92\x01" * 300 + b"\xc0")  # deep nesting
@example(b"\x91" * 5000 + b"\x01")  # very deep nesting
def test_arbitrary_bytes(data: bytes) -> None:
    """Any bytes decode to a Message or raise RemoteProtocolError, never anything else."""
    try:
        msg = m.decode_message(data)
    except RemoteProtocolError as e:
        assert e.code in (ErrorCode.MALFORMED_MESSAGE, ErrorCode.UNKNOWN_MESSAGE_TYPE)
    else:
        assert isinstance(msg, m.Message)


@given(hs.messages(), st.data())
def test_mutated_valid_messages(msg: m.Message, data: st.DataObject) -> None:
    """Bit flips and truncations of valid encodings give a Message or RemoteProtocolError."""
    raw = bytearray(m.encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            assert isinstance(m.decode_message(candidate), m.Message)
        except RemoteProtocolError:
            pass


@given(st.one_of(hs.msgpack_objects, hs.message_like_objects()))
def test_arbitrary_msgpack_objects(obj: Any) -> None:
    """Random MessagePack values (lists of random arity and types, nested lists, maps, huge
    and negative ints, floats, ext types) give a Message or RemoteProtocolError."""
    try:
        data = pack(obj)
    except (OverflowError, ValueError):  # not encodable (e.g. an int beyond 64 bits)
        return
    try:
        msg = m.decode_message(data)
    except RemoteProtocolError as e:
        assert e.code in (ErrorCode.MALFORMED_MESSAGE, ErrorCode.UNKNOWN_MESSAGE_TYPE)
    else:
        assert isinstance(msg, m.Message)
        assert m.decode_message(m.encode_message(msg)) == msg


@given(st.one_of(hs.msgpack_objects, st.binary(max_size=64)))
def test_decode_record_arbitrary(obj: Any) -> None:
    """decode_record on random input returns the record or raises RemoteProtocolError."""
    data = obj if isinstance(obj, bytes) else pack(obj)
    for cls in (m.GroupEvent, m.ImageInfo, m.HistoryEntry):
        try:
            assert isinstance(m.decode_record(cls, data), cls)
        except RemoteProtocolError as e:
            assert e.code is ErrorCode.MALFORMED_MESSAGE


# ------------------------------------------------------------------- rejections


@pytest.mark.parametrize("number", [0, 15, 31, 68, 127, 255, 65535, 2**32, 2**64 - 1])
def test_unknown_type_number(number: int) -> None:
    """A non-negative integer type number that is not registered -> UNKNOWN_MESSAGE_TYPE."""
    assert number not in m.MESSAGE_TYPES
    assert decode_error(pack([number, 1, 2])).code is ErrorCode.UNKNOWN_MESSAGE_TYPE


@pytest.mark.parametrize("number", [-1, -2, -33, -(2**31), -(2**63)])
def test_negative_type_number_is_malformed(number: int) -> None:
    """A negative integer as the type is MALFORMED_MESSAGE (105), as the spec says, not 106."""
    assert decode_error(pack([number, 1, 2])).code is ErrorCode.MALFORMED_MESSAGE


def test_padded_decoding() -> None:
    """Version 2 padding: zero bytes after the message are accepted only when padded=True;
    a nonzero byte in the padding is BAD_PADDING."""
    body = m.encode_message(m.Ping(5))
    assert m.decode_message(body + bytes(30), padded=True) == m.Ping(5)
    assert m.decode_message(body, padded=True) == m.Ping(5)
    with pytest.raises(RemoteProtocolError) as info:
        m.decode_message(body + bytes(3))
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE
    with pytest.raises(RemoteProtocolError) as info:
        m.decode_message(body + b"\x00\x01", padded=True)
    assert info.value.code is ErrorCode.BAD_PADDING


def test_canonical_decoding() -> None:
    """canonical=True rejects a longer-than-needed encoding of the same values."""
    canonical = m.encode_message(m.Ping(5))
    assert m.decode_message(canonical, canonical=True) == m.Ping(5)
    longer = b"\x92\xcc\x40\x05"  # the type 64 as uint8 instead of a positive fixint
    assert m.decode_message(longer) == m.Ping(5)
    with pytest.raises(RemoteProtocolError) as info:
        m.decode_message(longer, canonical=True)
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize(
    "obj",
    [[], [True], [None, 1], ["1"], [1.0], [b"\x01"], [[1]], 1, "x", None, b"\x91\x01"],
    ids=repr,
)
def test_not_a_message_array(obj: Any) -> None:
    """Anything but a non-empty array starting with an int -> MALFORMED_MESSAGE."""
    assert decode_error(pack(obj)).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize(
    "data",
    [
        pack({1: 2}),
        pack([1, {}]),
        pack([32, msgpack.ExtType(1, b"")] + [0] * 3),
        b"\xd6\xff\x00\x00\x00\x00",  # fixext4 type -1: a timestamp
        pack([33, 1]) + b"\x00",  # trailing byte
        pack([33, 1])[:-1],  # truncated
        b"\x92\x21\xd9\x02\xff\xfe",  # invalid UTF-8 in a str
        pack([33, 1.0]),
    ],
    ids=["map", "nested-map", "ext", "timestamp", "trailing", "truncated", "utf8", "float"],
)
def test_malformed_msgpack(data: bytes) -> None:
    """Maps, ext types, trailing or missing bytes, invalid UTF-8 -> MALFORMED_MESSAGE."""
    assert decode_error(data).code is ErrorCode.MALFORMED_MESSAGE


def test_message_too_large() -> None:
    """More than MAX_MESSAGE_BYTES is refused before unpacking."""
    data = pack([39, 1, 0, bytes(m.MAX_MESSAGE_BYTES)])
    assert decode_error(data).code is ErrorCode.MALFORMED_MESSAGE


@given(hs.messages(), st.data())
def test_wrong_arity(msg: m.Message, data: st.DataObject) -> None:
    """A known type with one field too few or too many -> MALFORMED_MESSAGE."""
    fields = hs.to_wire(msg)
    extra = data.draw(hs.msgpack_objects)
    for wrong in (fields[:-1], [*fields, extra], []):
        if len(wrong) == len(fields):
            continue
        assert decode_error(pack([msg.TYPE, *wrong])).code is ErrorCode.MALFORMED_MESSAGE


@given(hs.invalid_message_fields())
def test_invalid_field(case: tuple[type[m.Message], list[Any], str]) -> None:
    """One invalid field (wrong type, out of range, bool for int, over-long str/bin/list,
    bad name, bad nested record) -> MALFORMED_MESSAGE."""
    cls, fields, _name = case
    assert decode_error(pack([cls.TYPE, *fields])).code is ErrorCode.MALFORMED_MESSAGE


def _with(msg: m.Message, **changes: Any) -> bytes:
    fields = hs.to_wire(msg)
    for name, value in changes.items():
        fields[[n for n, _ in msg._specs].index(name)] = value
    return pack([msg.TYPE, *fields])


PING = m.Ping(5)
SIGNIN = m.Signin("alice", "secret", bytes(16))
GROUP_ADD = m.GroupAdd(1, 2, ("bob",))
NCK = m.Nck(200, "no", 0)
CREATE_GROUP = m.CreateGroup(1, m.GroupKind.MANY, 1, ("bob",), "t")


@pytest.mark.parametrize(
    "data",
    [
        _with(PING, nonce=-1),
        _with(PING, nonce=2**63),  # Seq is 63 bits
        _with(PING, nonce=2**64 - 1),
        _with(PING, nonce=True),
        _with(PING, nonce=None),
        _with(PING, nonce="5"),
        _with(NCK, code=65536),
        _with(NCK, code=False),
        _with(NCK, retry_after_ms=2**32),
        _with(CREATE_GROUP, kind=256),
        _with(m.Typing(1, None, True), active=1),
        _with(m.Typing(1, None, True), active=None),
    ],
)
def test_integer_and_bool_fields(data: bytes) -> None:
    """Negative, too large, bool-for-int, int-for-bool and nil-for-required -> MALFORMED."""
    assert decode_error(data).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize(
    "data",
    [
        _with(SIGNIN, password=""),
        _with(SIGNIN, password="x" * (m.MAX_PASSWORD_BYTES + 1)),
        _with(SIGNIN, password="\u00e9" * (m.MAX_PASSWORD_BYTES // 2 + 1)),
        _with(SIGNIN, password=b"secret"),
        _with(SIGNIN, device_id=bytes(15)),
        _with(SIGNIN, device_id=bytes(17)),
        _with(SIGNIN, device_id="x" * 16),
        _with(NCK, reason="r" * 1025),
        _with(m.Chat(1, bytes(16), 0, None, None, 1, b"", None), body=bytes(m.MAX_CHUNK_BYTES + 1)),
        _with(m.ImageChunk(1, 0, b"x"), data=b""),
        _with(GROUP_ADD, names=["bob"] * (m.MAX_NAMES + 1)),
        _with(GROUP_ADD, names="bob"),
        _with(GROUP_ADD, names=[["bob"]]),
    ],
)
def test_length_and_type_limits(data: bytes) -> None:
    """Over-long or empty strs/bins/lists and str-for-bin (or vice versa) -> MALFORMED."""
    assert decode_error(data).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("name", hs.INVALID_NAMES, ids=repr)
def test_invalid_names(name: str) -> None:
    """Names with upper case, 33 characters, empty, a leading '.', '-' or '_', spaces,
    a newline or non-ASCII letters -> MALFORMED_MESSAGE, in a field and in a list."""
    assert decode_error(_with(SIGNIN, name=name)).code is ErrorCode.MALFORMED_MESSAGE
    assert decode_error(_with(GROUP_ADD, names=["bob", name])).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("name", ["a", "0", "a" * 32, "a.b-c_d", "9lives"])
def test_valid_names(name: str) -> None:
    """Names at the edges of NAME_PATTERN are accepted."""
    assert m.decode_message(_with(SIGNIN, name=name)) == dataclasses.replace(SIGNIN, name=name)


def test_text_limit_counts_utf8_bytes() -> None:
    """Text limits are in bytes of UTF-8: exactly at the limit is fine, one more is not."""
    ok = m.Nck(1, "\u00e9" * 512, 0)  # 1024 bytes
    assert m.decode_message(m.encode_message(ok)) == ok
    with pytest.raises(LocalProtocolError):
        m.encode_message(m.Nck(1, "\u00e9" * 512 + "x", 0))


def test_nested_record_errors() -> None:
    """A nested record with the wrong arity or a bad field -> MALFORMED_MESSAGE."""
    chat = m.Chat(1, bytes(16), 0, None, None, 2, b"", m.ImageInfo(10, bytes(32), None))
    assert decode_error(_with(chat, image=[10, bytes(32)])).code is ErrorCode.MALFORMED_MESSAGE
    assert decode_error(_with(chat, image=[10, bytes(31), None])).code is (
        ErrorCode.MALFORMED_MESSAGE
    )
    assert decode_error(_with(chat, image=10)).code is ErrorCode.MALFORMED_MESSAGE


# ------------------------------------------------------------------- encoding invalid values


@given(hs.invalid_message_fields(), st.data())
def test_encode_invalid_message(case: tuple[type[m.Message], list[Any], str],
                                data: st.DataObject) -> None:
    """encode_message of a message with an invalid field raises LocalProtocolError (never a
    TypeError or a RemoteProtocolError), with the code decoding would have reported."""
    cls, _fields, name = case
    valid = data.draw(hs.messages(cls))
    spec = dict(cls._specs)[name]
    bad = data.draw(hs.invalid_wire_values(spec))
    msg = dataclasses.replace(valid, **{name: bad})
    with pytest.raises(LocalProtocolError) as info:
        m.encode_message(msg)
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize(
    "msg",
    [
        m.Nck(1, "\ud800", 0),  # lone surrogate: not encodable as a MessagePack str
        m.Signin("Alice", "pw", bytes(16)),
        m.Signin("alice", "", bytes(16)),
        m.Ping(-1),
        m.Ping(True),
        m.Ok(object()),  # type: ignore[arg-type]
        m.GroupAdd(1, 1, ["bob"]),  # type: ignore[arg-type]  # a list, not a tuple
        m.Chat(1, bytearray(16), 0, None, None, 1, b"", None),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_encode_invalid_examples(msg: m.Message) -> None:
    """Invalid field values are LocalProtocolError on encode, never another exception."""
    try:
        data = m.encode_message(msg)
    except LocalProtocolError as e:
        assert e.code is ErrorCode.MALFORMED_MESSAGE
    else:
        # Only the list-for-tuple case may be accepted, and then it must round-trip.
        assert isinstance(msg, m.GroupAdd)
        assert m.decode_message(data) == dataclasses.replace(msg, names=("bob",))


def test_encode_too_large() -> None:
    """A message whose encoding exceeds MAX_MESSAGE_BYTES is LocalProtocolError on encode."""
    entry = m.HistoryEntry(1, "alice", None, 1, 1, bytes(m.MAX_TEXT_BYTES), None)
    page = m.HistoryPage(1, 1, None, (entry,) * 20, False)
    with pytest.raises(LocalProtocolError):
        m.encode_message(page)


def test_encode_without_check_skips_field_validation_but_not_the_size_bound() -> None:
    """check=False encodes an out-of-range field as given (the caller vouches for it), but a
    message over MAX_MESSAGE_BYTES is still refused."""
    from chatproto.wire.errors import LocalProtocolError as _Local

    bad = m.Ping(-1)
    with pytest.raises(_Local):
        m.encode_message(bad)
    assert m.decode_message(m.encode_message(m.Ping(7), check=False)) == m.Ping(7)
    assert m.encode_message(bad, check=False) == b"\x92\x40\xff"
    huge = m.Deliver(1, 0, "a", "b", 1, 1, None, 1, b"x" * (m.MAX_MESSAGE_BYTES + 1), None)
    with pytest.raises(_Local):
        m.encode_message(huge, check=False)


# ------------------------------------------------------------------- a Deliver encoded once

#: user_seq values at the edges of MessagePack's integer widths (fixint, uint8/16/32/64).
SEQ_EDGES = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000,
             2**63 - 1]


@given(hs.messages(m.Deliver), st.lists(
    st.one_of(st.sampled_from(SEQ_EDGES), st.integers(0, 2**63 - 1)), min_size=1, max_size=8))
@example(m.Deliver(1, 7, "alice", None, 3, 1_700_000_000_000, None, m.ContentType.EVENT,
                   b"", None), SEQ_EDGES)
@example(m.Deliver(1, 0, "bob", "carol", 2**63 - 1, 2**63 - 1, b"c" * 16, m.ContentType.IMAGE,
                   b"\xff" * 300, m.ImageInfo(70_000, b"h" * 32, "image/png")), SEQ_EDGES)
def test_deliver_template_is_the_normal_encoding(msg: m.Deliver, seqs: list[int]) -> None:
    """The spliced payload of every recipient is byte for byte encode_message's Deliver."""
    fields = dataclasses.astuple(msg)[1:]
    fields = (*fields[:-1], msg.image)  # astuple turns the nested record into a tuple
    template = m.DeliverTemplate(*fields)
    for seq in seqs:
        expected = m.encode_message(dataclasses.replace(msg, user_seq=seq))
        assert template.payload(seq) == expected
        assert m.decode_message(expected) == dataclasses.replace(msg, user_seq=seq)


@pytest.mark.parametrize("seq", [-1, 2**63, 2**64, True, None])
def test_deliver_template_refuses_an_invalid_user_seq(seq: Any) -> None:
    template = m.DeliverTemplate(0, "alice", "bob", 1, 2, None, m.ContentType.TEXT, b"hi", None)
    with pytest.raises(LocalProtocolError) as info:
        template.payload(seq)
    assert info.value.code == ErrorCode.MALFORMED_MESSAGE


def test_deliver_template_keeps_the_size_limit() -> None:
    """A Deliver whose user_seq pushes it past the message limit is refused as a whole one
    would be."""
    # With user_seq 0 (one byte) the Deliver is one byte under the limit.
    overhead = len(m.encode_message(m.Deliver(0, 0, "a", "b", 1, 2, None, 1, b"", None)))
    body = b"x" * (m.MAX_MESSAGE_BYTES - overhead - 4)  # the bin32 header is 3 bytes longer
    template = m.DeliverTemplate(0, "a", "b", 1, 2, None, 1, body, None)
    assert len(template.payload(0)) <= m.MAX_MESSAGE_BYTES
    with pytest.raises(LocalProtocolError):
        m.encode_message(m.Deliver(2**40, 0, "a", "b", 1, 2, None, 1, body, None),
                         check=False)
    with pytest.raises(LocalProtocolError):
        template.payload(2**40)


@given(hs.messages(m.SendAck))
@example(m.SendAck(2**32 - 1, b"\xff" * 16, 2**63 - 1, 0x10000, 0x100000000))
def test_encode_send_ack_is_the_normal_encoding(msg: m.SendAck) -> None:
    assert m.encode_send_ack(*dataclasses.astuple(msg)) == m.encode_message(msg)
