"""Protocol version 2: Hello2/ServerKey2 negotiation, the X25519MLKEM768 hybrid, the chained key
schedule, padding inside messages, KeyUpdate, and its known-answer vectors.

Run this file as a script to print docs/_vectors/v2_vectors.txt::

    PYTHONPATH=. python tests/wire/test_handshake_v2.py > docs/_vectors/v2_vectors.txt

ML-KEM encapsulation draws its randomness inside OpenSSL and cannot be fixed, so the hybrid
vector fixes the key pairs (from seeds) and one ciphertext (stored in the file), and checks the
decapsulation and everything derived from it; the whole version-2 handshake with the X25519 suite
is deterministic and vectored frame by frame.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import settings

from chatproto.wire import messages as m
from chatproto.wire import schedule
from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatproto.wire.frame import HEADER_LEN, PLAIN_HEADER_LEN, TAG_LEN, FrameDecoder, FrameEncoder
from chatproto.wire.handshake import (
    ClientHandshake,
    ClientState,
    HandshakeFailed,
    ServerHandshake,
    SigninRejected,
    server_key2_tbs,
    unauthenticated_reason,
)
from chatproto.wire.identity_keys import _add, _decode, identity_key_problem
from chatproto.wire.keys import Transcript, signature_input
from chatproto.wire.padding import CREDENTIALS_SIZE, bucket_size, pad_message
from chatproto.wire.session import KEY_UPDATE_ROOM, Session
from chatproto.wire.suites import (
    SUITES,
    X25519_ID,
    X25519MLKEM768_ID,
    default_suites,
)
from tests.wire.test_handshake import (
    DEVICE,
    IDENTITY,
    NAME,
    PASSWORD,
    SERVER_TIME,
    SESSION_ID,
    HandshakeMachine,
    Link,
    exchange_session_messages,
    raw,
    split_frames,
)

VECTORS_FILE = Path(__file__).resolve().parents[2] / "docs" / "_vectors" / "v2_vectors.txt"
HYBRID = X25519MLKEM768_ID


def seed_rng(label: bytes) -> Callable[[int], bytes]:
    """Fixed randomness for vectors: call i (from 0) returns SHA-512(label || uint32 BE i)[:n]."""
    counter = itertools.count()

    def rng(n: int) -> bytes:
        assert n <= 64
        return hashlib.sha512(label + struct.pack(">I", next(counter))).digest()[:n]

    return rng


def v2_link(*, client_suites: tuple[int, ...] | None = None,
            server_suites: tuple[int, ...] | None = None, fixed: bool = False,
            server_versions: tuple[int, ...] = (2, 1)) -> Link:
    client = ClientHandshake(suites=client_suites,
                             rng=seed_rng(b"client") if fixed else None)
    server = ServerHandshake(IDENTITY, suites=server_suites, versions=server_versions,
                             rng=seed_rng(b"server") if fixed else None)
    return Link(client, server)


# ------------------------------------------------------------------- negotiation


def test_hybrid_is_the_default_and_available() -> None:
    """cryptography 50 has ML-KEM-768: both sides default to X25519MLKEM768, then X25519."""
    assert default_suites() == (X25519MLKEM768_ID, X25519_ID)
    assert ClientHandshake().version == 2


def test_v2_hybrid_full_flow() -> None:
    """Register, a wrong password, sign-in and session messages both ways over version 2 with
    the hybrid suite; both sides agree on version and suite."""
    link = v2_link()
    link.connect()
    assert (link.server.version, link.server.suite.id) == (2, HYBRID)
    assert link.client.suite.id == HYBRID
    link.register()
    assert link.reject_signin() == [
        SigninRejected(ErrorCode.AUTH_FAILED, "wrong name or password", 0)]
    link.login()
    assert link.client.session is not None and link.client.session.version == 2
    exchange_session_messages(link)


def test_server_preference_picks_the_suite() -> None:
    """The server takes the first suite of its own list that the client offered."""
    link = v2_link(server_suites=(X25519_ID, HYBRID))
    link.connect()
    link.login()
    assert link.client.suite.id == X25519_ID == link.server.suite.id
    exchange_session_messages(link)


def test_no_common_suite() -> None:
    """A client offering only X25519 and a hybrid-only server: UNSUPPORTED_VERSION."""
    link = v2_link(client_suites=(X25519_ID,), server_suites=(HYBRID,))
    link.client.start()
    with pytest.raises(RemoteProtocolError) as info:
        link.to_server()
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


def test_v1_client_still_interoperates_by_default() -> None:
    """A default server accepts the version-1 Hello byte for byte as before."""
    link = Link(ClientHandshake(version=1), ServerHandshake(IDENTITY))
    link.connect()
    link.login()
    assert link.server.version == 1 and link.server.session is not None
    assert link.server.session.version == 1
    exchange_session_messages(link)


def test_server_refusing_v1() -> None:
    """versions=(2,) refuses a version-1 Hello with UNSUPPORTED_VERSION and sends nothing."""
    link = Link(ClientHandshake(version=1), ServerHandshake(IDENTITY, versions=(2,)))
    link.client.start()
    with pytest.raises(RemoteProtocolError) as info:
        link.to_server()
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION
    assert link.server.data_to_send() == b""


def test_server_refusing_v2() -> None:
    """A server configured for version 1 only refuses Hello2."""
    link = v2_link(server_versions=(1,))
    link.client.start()
    with pytest.raises(RemoteProtocolError) as info:
        link.to_server()
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


def _strip_hybrid(frame: bytes) -> bytes:
    hello = m.decode_message(frame[PLAIN_HEADER_LEN:])
    assert isinstance(hello, m.Hello2)
    stripped = m.Hello2(hello.versions, hello.client_random,
                        tuple(s for s in hello.key_shares if s.suite != HYBRID))
    return FrameEncoder().encode_plain(m.encode_message(stripped))


def test_downgrade_by_stripping_the_hybrid_share_is_detected() -> None:
    """An attacker removes the hybrid share from Hello2, so the server picks X25519; the
    client's offer is in the signed transcript, so the signature fails and nothing secret is
    sent."""
    link = v2_link()
    link.client.start()
    link.server.receive_data(_strip_hybrid(link.client.data_to_send()))
    assert link.server.suite.id == X25519_ID
    with pytest.raises(RemoteProtocolError) as info:
        link.client.receive_data(link.server.data_to_send())
    assert info.value.code is ErrorCode.BAD_SERVER_SIGNATURE
    assert link.client.state is ClientState.AWAIT_SERVER_KEY
    assert link.client.data_to_send() == b""


@pytest.mark.parametrize("field", ["version", "suite", "server_share", "server_random"])
def test_edited_server_key2_is_detected(field: str) -> None:
    """Each field of ServerKey2, including the chosen version and suite, is signed."""
    link = v2_link(client_suites=(X25519_ID, HYBRID), server_suites=(X25519_ID,))
    link.client.start()
    link.to_server()
    frame = link.server.data_to_send()
    msg = m.decode_message(frame[PLAIN_HEADER_LEN:])
    assert isinstance(msg, m.ServerKey2)
    other: dict[str, Any] = {
        "version": 3, "suite": HYBRID,
        "server_share": raw(X25519PrivateKey.generate()), "server_random": bytes(32),
    }
    edited = m.ServerKey2(**{**{f: getattr(msg, f) for f in msg._names}, field: other[field]})
    with pytest.raises(RemoteProtocolError) as info:
        link.client.receive_data(FrameEncoder().encode_plain(m.encode_message(edited)))
    assert info.value.code is ErrorCode.BAD_SERVER_SIGNATURE


def test_server_choice_outside_the_offer_is_refused() -> None:
    """A correctly signed ServerKey2 choosing a suite the client did not offer is refused."""
    client = ClientHandshake(suites=(X25519_ID,))
    server = ServerHandshake(IDENTITY, suites=(HYBRID,))
    client.start()
    hello = m.decode_message(client.data_to_send()[PLAIN_HEADER_LEN:])
    assert isinstance(hello, m.Hello2)
    # The server sees an offer with both suites (as if the client's list were longer).
    share = SUITES[HYBRID].generate().share
    forged = m.Hello2(hello.versions, hello.client_random, (m.KeyShare(HYBRID, share),))
    server.receive_data(FrameEncoder().encode_plain(m.encode_message(forged)))
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(server.data_to_send())
    assert info.value.code is ErrorCode.BAD_SERVER_SIGNATURE  # the offer differs: caught first


def test_duplicate_suite_in_offer_is_malformed() -> None:
    share = raw(X25519PrivateKey.generate())
    hello = m.Hello2((2,), bytes(32), (m.KeyShare(X25519_ID, share), m.KeyShare(X25519_ID, share)))
    with pytest.raises(RemoteProtocolError) as info:
        ServerHandshake(IDENTITY).receive_data(FrameEncoder().encode_plain(m.encode_message(hello)))
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("suite", [X25519_ID, HYBRID])
def test_share_of_the_wrong_length_is_malformed(suite: int) -> None:
    hello = m.Hello2((2,), bytes(32), (m.KeyShare(suite, bytes(range(33))),))
    with pytest.raises(RemoteProtocolError) as info:
        ServerHandshake(IDENTITY).receive_data(FrameEncoder().encode_plain(m.encode_message(hello)))
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE


def test_non_canonical_hello2_is_rejected() -> None:
    """Handshake messages must be canonical MessagePack: the same Hello2 with its type written
    as a uint8 is MALFORMED_MESSAGE."""
    client = ClientHandshake(suites=(X25519_ID,))
    client.start()
    body = client.data_to_send()[PLAIN_HEADER_LEN:]
    assert body[1] == 13
    longer = body[:1] + b"\xcc\x0d" + body[2:]
    assert m.decode_message(longer) == m.decode_message(body)
    with pytest.raises(RemoteProtocolError) as info:
        ServerHandshake(IDENTITY).receive_data(len(longer).to_bytes(4, "big") + longer)
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE


def test_client_refuses_bad_suite_list() -> None:
    with pytest.raises(LocalProtocolError):
        ClientHandshake(suites=(999,))
    with pytest.raises(LocalProtocolError):
        ClientHandshake(version=3)


# ------------------------------------------------------------------- padding


def _frames_of(data: bytes) -> list[bytes]:
    return split_frames(data, plain=False)


@pytest.mark.parametrize("password", ["x", "correct horse battery staple", "\u00e4" * 512])
def test_signin_and_register_have_one_size(password: str) -> None:
    """Signin and Register frames are always 17 + 1088 + 16 bytes, whatever the password: the
    header's length says nothing about it (it said 41+7 vs 48+0 before)."""
    for act in ("signin", "register"):
        link = v2_link(client_suites=(X25519_ID,))
        link.connect()
        if act == "signin":
            link.client.signin(NAME, password, DEVICE)
        else:
            link.client.register(NAME, password)
        (frame,) = _frames_of(link.client.data_to_send())
        assert len(frame) == HEADER_LEN + CREDENTIALS_SIZE + TAG_LEN
        assert struct.unpack_from(">IB", frame) == (CREDENTIALS_SIZE, 0)


def test_session_messages_are_padded_to_buckets() -> None:
    """Session frames carry bucket-sized payloads and pad_length 0; the receiver strips it."""
    link = v2_link(client_suites=(X25519_ID,))
    link.connect()
    link.login()
    assert link.client.session is not None and link.server.session is not None
    for text in (b"", b"hi", b"x" * 100, b"y" * 5000):
        msg = m.Chat(1, bytes(16), 0, "bob", None, 1, text, None)
        (frame,) = _frames_of(link.client.session.send(msg))
        size = len(m.encode_message(msg))
        assert struct.unpack_from(">IB", frame) == (bucket_size(size), 0)
        link.server.session.receive_data(frame)
        assert link.server.session.next_message() == msg


def test_bucket_policy() -> None:
    assert [bucket_size(n) for n in (0, 1, 32, 33, 64, 65, 4096, 4097, 8193)] == [
        32, 32, 32, 64, 64, 128, 4096, 8192, 12288]
    assert bucket_size(1024 * 1024) == 1024 * 1024
    assert len(pad_message(b"\x91\x01", credentials=True)) == CREDENTIALS_SIZE


def test_nonzero_padding_is_rejected() -> None:
    """A session payload whose padding is not all zero bytes: BAD_PADDING."""
    secret = bytes(32)
    session = _session_pair(secret, secret)[1]
    encoder = FrameEncoder(*schedule.traffic_key_iv(secret))
    session.receive_data(encoder.encode(m.encode_message(m.Ping(1)) + b"\x00\x01"))
    with pytest.raises(RemoteProtocolError) as info:
        session.next_message()
    assert info.value.code is ErrorCode.BAD_PADDING


# ------------------------------------------------------------------- key update


def _session_pair(a_secret: bytes, b_secret: bytes, *, limit: int | None = None,
                  receiver_limit: int | None = None) -> tuple[Session, Session]:
    """Two version-2 sessions wired to each other (A sends with a_secret, B with b_secret)."""
    a = Session(FrameEncoder(*schedule.traffic_key_iv(a_secret)),
                FrameDecoder(*schedule.traffic_key_iv(b_secret)),
                send_secret=a_secret, receive_secret=b_secret, volume_limit=limit)
    b = Session(FrameEncoder(*schedule.traffic_key_iv(b_secret)),
                FrameDecoder(*schedule.traffic_key_iv(a_secret)),
                send_secret=b_secret, receive_secret=a_secret,
                volume_limit=receiver_limit if receiver_limit is not None else limit)
    return a, b


def test_key_update_ratchets_before_the_volume_limit() -> None:
    """With a 4 KiB limit, 200 messages of 64 bytes cause KeyUpdates the receiver follows;
    no key ever protects more than the limit and the adapters never see KeyUpdate."""
    a, b = _session_pair(b"a" * 32, b"b" * 32, limit=4096)
    received = []
    for i in range(200):
        b.receive_data(a.send(m.Chat(i, bytes(16), 0, "bob", None, 1, b"z" * 20, None)))
        while (msg := b.next_message()) is not None:
            received.append(msg)
        assert a._encoder.volume <= 4096 - KEY_UPDATE_ROOM
    assert [msg.req for msg in received] == list(range(200))
    assert a.key_updates_sent == b.key_updates_received >= 3
    assert a._send_secret != b"a" * 32
    assert a._send_secret == b._receive_secret


def test_key_update_known_answer() -> None:
    """The next traffic secret is Expand-Label(secret, "traffic upd", "", 32)."""
    secret = bytes(range(32))
    assert schedule.next_traffic_secret(secret) == schedule.expand_label(
        secret, b"traffic upd", b"", 32)
    assert schedule.next_traffic_secret(secret).hex() == VECTORS["key_update_next_secret"]


def test_receiver_enforces_the_volume_limit() -> None:
    """A sender that goes beyond the limit without KeyUpdate: the receiver closes with
    FRAME_LIMIT."""
    a, b = _session_pair(b"a" * 32, b"b" * 32, limit=1 << 20, receiver_limit=4096)
    data = b"".join(a.send(m.Ping(i)) for i in range(200))
    b.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        while b.next_message() is not None:
            pass
    assert info.value.code is ErrorCode.FRAME_LIMIT


def test_version_1_sender_refuses_beyond_the_limit() -> None:
    """Version 1 has no KeyUpdate: past the volume limit the sender refuses (FRAME_LIMIT), so
    the connection is closed and the client reconnects with fresh keys."""
    key, iv = bytes(32), bytes(12)
    session = Session(FrameEncoder(key, iv), FrameDecoder(key, iv), volume_limit=1024)
    with pytest.raises(LocalProtocolError) as info:
        for i in range(100):
            session.send(m.Ping(i))
    assert info.value.code is ErrorCode.FRAME_LIMIT


def test_version_1_receiver_enforces_the_limit() -> None:
    key, iv = bytes(32), bytes(12)
    sender = Session(FrameEncoder(key, iv), FrameDecoder(key, iv), volume_limit=1 << 20)
    receiver = Session(FrameEncoder(key, iv), FrameDecoder(key, iv), volume_limit=256)
    receiver.receive_data(b"".join(sender.send(m.Ping(i)) for i in range(40)))
    with pytest.raises(RemoteProtocolError) as info:
        while receiver.next_message() is not None:
            pass
    assert info.value.code is ErrorCode.FRAME_LIMIT


def test_key_update_is_not_part_of_version_1() -> None:
    key, iv = bytes(32), bytes(12)
    session = Session(FrameEncoder(key, iv), FrameDecoder(key, iv))
    session.receive_data(FrameEncoder(key, iv).encode(m.encode_message(m.KeyUpdate())))
    with pytest.raises(RemoteProtocolError) as info:
        session.next_message()
    assert info.value.code is ErrorCode.UNKNOWN_MESSAGE_TYPE


# ------------------------------------------------------------------- identity keys


def _encode_point(p: tuple[int, int, int, int]) -> bytes:
    prime = 2**255 - 19
    x, y, z, _ = p
    zi = pow(z, prime - 2, prime)
    x, y = x * zi % prime, y * zi % prime
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def test_identity_key_checks() -> None:
    """Real keys pass; the neutral element, other small-order points, non-canonical encodings
    and a key with a small-order component are refused."""
    good = raw(Ed25519PrivateKey.generate())
    assert identity_key_problem(good) is None
    assert identity_key_problem(raw(IDENTITY)) is None
    assert identity_key_problem(b"\x01" + bytes(31)) == "a small-order Ed25519 point"
    assert identity_key_problem(bytes(32)) == "a small-order Ed25519 point"
    minus_one = ((2**255 - 19) - 1).to_bytes(32, "little")  # (0, -1): order 2
    assert identity_key_problem(minus_one) == "a small-order Ed25519 point"
    assert identity_key_problem((2**255 - 19).to_bytes(32, "little")) == (
        "not a canonical Ed25519 point")
    assert identity_key_problem(b"\x01" + bytes(30) + b"\x80") == "not a canonical Ed25519 point"
    point = _decode(good)
    assert point is not None
    order_two = _decode(minus_one)
    assert order_two is not None
    mixed = _encode_point(_add(point, order_two))
    assert identity_key_problem(mixed) == "an Ed25519 point outside the prime-order subgroup"


@pytest.mark.parametrize("version", [1, 2])
def test_small_order_identity_key_with_forged_signature_is_refused(version: int) -> None:
    """The identity key 01 00..00 with the signature R = 01 00..00, S = 0 verifies under OpenSSL
    for any message; the client refuses the key before verifying (BAD_SERVER_SIGNATURE)."""
    neutral = b"\x01" + bytes(31)
    forged = neutral + bytes(32)
    client = ClientHandshake(version=version, suites=(X25519_ID,))
    client.start()
    client.data_to_send()
    share = raw(X25519PrivateKey.generate())
    msg: m.Message = (
        m.ServerKey(bytes(32), share, neutral, forged) if version == 1
        else m.ServerKey2(2, X25519_ID, bytes(32), share, neutral, forged)
    )
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(FrameEncoder().encode_plain(m.encode_message(msg)))
    assert info.value.code is ErrorCode.BAD_SERVER_SIGNATURE
    assert client.identity_key is None


# ------------------------------------------------------------------- unauthenticated errors


def test_plaintext_error_is_unauthenticated() -> None:
    """An ERROR before keys: HandshakeFailed(authenticated=False) with a fixed reason naming
    only the class; under the handshake keys the server's reason is kept."""
    client = ClientHandshake()
    client.start()
    body = m.encode_message(m.Error(0, 114, "Server key rotated: delete its pin", ()))
    (event,) = client.receive_data(FrameEncoder().encode_plain(body))
    assert event == HandshakeFailed(114, unauthenticated_reason(114), False)
    assert "rotated" not in event.reason and "1xx" in event.reason

    link = v2_link(client_suites=(X25519_ID,))
    link.connect()
    (event,) = link.client.receive_data(link.server.error_frame(ErrorCode.SERVER_BUSY, "full"))
    assert event == HandshakeFailed(ErrorCode.SERVER_BUSY, "full", True)


# ------------------------------------------------------------------- vectors


def hybrid_values(ciphertext_hex: str | None) -> dict[str, str]:
    """The X25519MLKEM768 suite and the chained schedule from fixed seeds. The ciphertext is
    the stored one (or, when generating a new file, a fresh encapsulation)."""
    crng = seed_rng(b"v2 hybrid client")
    srng = seed_rng(b"v2 hybrid server")
    suite = SUITES[HYBRID]
    pair = suite.generate(crng)
    if ciphertext_hex is None:
        _, response = suite.encapsulate(pair.share, srng)
        srng = seed_rng(b"v2 hybrid server")
    else:
        response = bytes.fromhex(ciphertext_hex)
    # The server's X25519 ephemeral comes from its seed; check the response carries it.
    server_x25519 = X25519PrivateKey.from_private_bytes(srng(32))
    assert response[1088:] == raw(server_x25519)
    mlkem_key = MLKEM768PrivateKey.from_seed_bytes(seed_rng(b"v2 hybrid client")(64))
    mlkem_secret = mlkem_key.decapsulate(response[:1088])
    shared1 = pair.decapsulate(response)
    assert shared1[:32] == mlkem_secret
    h1 = hashlib.sha256(b"chatproto v2 vector transcript 1").digest()
    h2 = hashlib.sha256(b"chatproto v2 vector transcript 2").digest()
    shared2 = hashlib.sha512(b"chatproto v2 vector shared secret 2").digest()
    hs = schedule.handshake_secret(shared1)
    hs_traffic = schedule.handshake_traffic(hs, h1)
    master = schedule.master_secret(hs, shared2, h2)
    ap, finished_key = schedule.application_traffic(master, h2)
    c_hs_key, c_hs_iv = schedule.traffic_key_iv(hs_traffic.client)
    s_ap_key, s_ap_iv = schedule.traffic_key_iv(ap.server)
    return {
        "hybrid_client_share": pair.share.hex(),
        "hybrid_server_response": response.hex(),
        "hybrid_mlkem_shared_secret": bytes(mlkem_secret).hex(),
        "hybrid_shared_secret": shared1.hex(),
        "schedule_h1": h1.hex(),
        "schedule_h2": h2.hex(),
        "schedule_shared_secret_2": shared2.hex(),
        "schedule_handshake_secret": hs.hex(),
        "schedule_c_hs_traffic": hs_traffic.client.hex(),
        "schedule_s_hs_traffic": hs_traffic.server.hex(),
        "schedule_c_hs_key": c_hs_key.hex(),
        "schedule_c_hs_iv": c_hs_iv.hex(),
        "schedule_derived": schedule.derive_secret(hs, b"derived", h2).hex(),
        "schedule_master_secret": master.hex(),
        "schedule_c_ap_traffic": ap.client.hex(),
        "schedule_s_ap_traffic": ap.server.hex(),
        "schedule_s_ap_key": s_ap_key.hex(),
        "schedule_s_ap_iv": s_ap_iv.hex(),
        "schedule_finished_key": finished_key.hex(),
        "key_update_next_secret": schedule.next_traffic_secret(bytes(range(32))).hex(),
    }


def x25519_flow_values() -> dict[str, str]:
    """A whole version-2 handshake with the X25519 suite and fixed randomness, frame by frame."""
    link = v2_link(client_suites=(X25519_ID,), server_suites=(X25519_ID,), fixed=True)
    link.connect()
    link.login()
    frames = [f for d in (link.c2s[0], link.s2c[0]) for f in split_frames(d, plain=True)]
    sk = m.decode_message(frames[1][PLAIN_HEADER_LEN:])
    assert isinstance(sk, m.ServerKey2)
    tbs = server_key2_tbs(sk.version, sk.suite, sk.server_random, sk.server_share,
                          sk.identity_key)
    signed = signature_input(frames[0][PLAIN_HEADER_LEN:], tbs,
                             context=schedule.SIGNATURE_CONTEXT_V2)
    values = {
        "flow_hello2_frame": frames[0].hex(),
        "flow_server_key2_frame": frames[1].hex(),
        "flow_signature_input": signed.hex(),
    }
    names = ["signin", "ack", "client_key", "finished", "hello_done"]
    c2s = [f for d in link.c2s[1:] for f in split_frames(d, plain=False)]
    s2c = [f for d in link.s2c[1:] for f in split_frames(d, plain=False)]
    for name, frame in zip(names, [c2s[0], s2c[0], c2s[1], c2s[2], s2c[1]], strict=True):
        values[f"flow_{name}_frame"] = frame.hex()
    return values


def _read_vectors() -> dict[str, str]:
    values = {}
    if not VECTORS_FILE.exists():
        return values
    for line in VECTORS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" = ")
            values[key.strip()] = value.strip()
    return values


VECTORS = _read_vectors()


def render_vectors() -> str:
    values = {**hybrid_values(VECTORS.get("hybrid_server_response")), **x25519_flow_values()}
    lines = [
        "# chatproto protocol version 2 known-answer vectors.",
        "# Generated by: PYTHONPATH=. python tests/wire/test_handshake_v2.py",
        "#",
        "# Fixed randomness: the i-th call (i = 0, 1, ...) of a seeded rng returns",
        "#   SHA-512(label || uint32 BE i)[:n].",
        "# X25519MLKEM768 (hybrid_*): client seed label b\"v2 hybrid client\": call 0 is the",
        "#   64-byte ML-KEM-768 seed (d || z, FIPS 203 key generation), call 1 the X25519 private",
        "#   key; the server's X25519 private key is call 0 of b\"v2 hybrid server\". The ML-KEM",
        "#   ciphertext (first 1,088 bytes of hybrid_server_response) was produced once by a",
        "#   random encapsulation; decapsulating it must give hybrid_mlkem_shared_secret, and",
        "#   hybrid_shared_secret = ML-KEM secret || X25519 secret.",
        "# schedule_*: the chained key schedule from hybrid_shared_secret, the fixed transcript",
        "#   hashes schedule_h1 / schedule_h2 and schedule_shared_secret_2.",
        "# key_update_next_secret: Expand-Label(00 01 .. 1f, \"traffic upd\", \"\", 32).",
        "# flow_*: a whole version-2 login with suite X25519 (0x001D) only, rng labels b\"client\"",
        "#   and b\"server\" (client: client_random, X25519 private, key C private; server:",
        "#   X25519 key A private, server_random, key B private), identity = Ed25519 key of 32",
        "#   zero bytes, Signin(alice, " + repr(PASSWORD) + ", device 000102..0f),",
        "#   HelloDone(alice, session_id 6465..73, server_time_ms 1700000000000).",
        "",
    ]
    width = max(len(k) for k in values)
    for key, value in values.items():
        lines.append(f"{key.ljust(width)} = {value}")
    return "\n".join(lines) + "\n"


def test_vectors_file_is_current() -> None:
    """docs/_vectors/v2_vectors.txt is what the generator prints (with its stored ciphertext):
    the decapsulation, the schedule and the X25519 flow reproduce byte for byte."""
    assert VECTORS, "docs/_vectors/v2_vectors.txt is missing"
    assert VECTORS_FILE.read_text() == render_vectors()


def test_flow_vectors_decrypt_independently() -> None:
    """From the vector file alone and the rng definition: X25519 of the client's key (its
    rng call 1) and key A, the transcript of the two plaintext frames, the schedule's client
    handshake key, and the Signin frame decrypts to a 1,088-byte padded Signin."""
    hello2 = bytes.fromhex(VECTORS["flow_hello2_frame"])[PLAIN_HEADER_LEN:]
    server_key2 = bytes.fromhex(VECTORS["flow_server_key2_frame"])[PLAIN_HEADER_LEN:]
    sk = m.decode_message(server_key2)
    assert isinstance(sk, m.ServerKey2) and (sk.version, sk.suite) == (2, X25519_ID)
    Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().verify(
        sk.signature, bytes.fromhex(VECTORS["flow_signature_input"]))
    rng = seed_rng(b"client")
    rng(32)  # client_random
    client_key = X25519PrivateKey.from_private_bytes(rng(32))
    transcript = Transcript()
    transcript.add(hello2)
    transcript.add(server_key2)
    hs = schedule.handshake_secret(client_key.exchange(
        X25519PrivateKey.from_private_bytes(seed_rng(b"server")(32)).public_key()))
    secrets = schedule.handshake_traffic(hs, transcript.digest())
    decoder = FrameDecoder(*schedule.traffic_key_iv(secrets.client))
    decoder.receive_data(bytes.fromhex(VECTORS["flow_signin_frame"]))
    payload = decoder.next_payload()
    assert payload is not None and len(payload) == CREDENTIALS_SIZE
    assert m.decode_message(payload, padded=True) == m.Signin(NAME, PASSWORD, DEVICE)


def test_whole_flow_matches_the_vectors() -> None:
    """The machines with fixed randomness reproduce the flow vectors (and log in)."""
    values = x25519_flow_values()
    assert {k: v for k, v in VECTORS.items() if k.startswith("flow_")} == values
    assert SESSION_ID and SERVER_TIME


if __name__ == "__main__":
    print(render_vectors(), end="")


@pytest.mark.parametrize("version", [1, 2])
def test_default_keys_come_from_generate(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a fixed rng no private key is built from raw random bytes: X25519 and ML-KEM
    keys come from generate()."""
    def refuse(*args: Any) -> Any:
        raise AssertionError("private key from raw bytes")

    monkeypatch.setattr(X25519PrivateKey, "from_private_bytes", refuse)
    monkeypatch.setattr(MLKEM768PrivateKey, "from_seed_bytes", refuse)
    link = Link(ClientHandshake(version=version), ServerHandshake(IDENTITY))
    link.connect()
    link.login()
    exchange_session_messages(link)


def test_non_canonical_v1_hello_is_rejected() -> None:
    """Version 1 too: a Hello whose version is written as uint16 (cd 00 01) instead of the
    fixint 01 is MALFORMED_MESSAGE (both sides hash the bytes into the transcript)."""
    client = ClientHandshake(version=1)
    client.start()
    body = client.data_to_send()[PLAIN_HEADER_LEN:]
    assert body[:3] == b"\x94\x01\x01"
    longer = b"\x94\x01\xcd\x00\x01" + body[3:]
    assert m.decode_message(longer) == m.decode_message(body)
    with pytest.raises(RemoteProtocolError) as info:
        ServerHandshake(IDENTITY).receive_data(len(longer).to_bytes(4, "big") + longer)
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE


class HandshakeMachineV2(HandshakeMachine):
    """The same random register/sign-in sequences and chunked deliveries over version 2,
    alternating between the hybrid and the X25519 suite per connection."""

    def _new_connection(self) -> None:
        self.client = ClientHandshake(
            suites=(X25519_ID,) if self.connections % 2 else (HYBRID, X25519_ID))
        self.server = ServerHandshake(IDENTITY, max_attempts=4)
        self.pending_c2s = b""
        self.pending_s2c = b""
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []
        self.rejections = 0
        self.connections += 1
        self.client.start()
        self._flush()


TestHandshakeMachineV2 = HandshakeMachineV2.TestCase
TestHandshakeMachineV2.settings = settings(max_examples=20, stateful_step_count=30)


def test_server_refuses_bad_configuration() -> None:
    """Unknown versions or suites, or empty lists, are our own error at construction."""
    for kwargs in ({"versions": ()}, {"versions": (3,)}, {"suites": ()}, {"suites": (7,)}):
        with pytest.raises(LocalProtocolError):
            ServerHandshake(IDENTITY, **kwargs)  # type: ignore[arg-type]
