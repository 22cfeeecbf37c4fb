"""Known-answer tests for chatproto.wire.keys (the key schedule).

Fixed inputs used throughout::

    shared secret   = 00 01 02 .. 1f          (bytes(range(32)))
    transcript hash = 20 21 22 .. 3f          (bytes(range(32, 64)))

The derive_* outputs are also cross-checked against a direct call of cryptography's HKDF, which
is the byte-level definition (docs/protocol.rst, "Key schedule")::

    okm = HKDF-SHA256(ikm=shared secret, salt=transcript hash, info=INFO, length=L)
    handshake: INFO = b"chatproto/1 handshake keys", L = 88
    session:   INFO = b"chatproto/1 session keys",   L = 120
    client_key = okm[0:32]   server_key = okm[32:64]
    client_iv  = okm[64:76]  server_iv  = okm[76:88]   finished_key = okm[88:120] (session)
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from chatproto.wire import keys as k
from chatproto.wire.errors import ErrorCode, RemoteProtocolError

SHARED = bytes(range(32))
THASH = bytes(range(32, 64))


def hkdf(info: bytes, length: int) -> bytes:
    """The reference derivation: HKDF-SHA256(ikm=SHARED, salt=THASH, info, length)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=THASH, info=info).derive(SHARED)


def raw(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    """Raw 32-byte public key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# ------------------------------------------------------------------- transcript


def test_transcript_known_answers() -> None:
    """Transcript = SHA-256 over (uint32 BE length || body) per message, in order."""
    t = k.Transcript()
    assert t.digest().hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    t.add(b"hello")
    assert t.digest().hex() == "9c015ac18bb70481f467bb1fadb4f9e6ee93a1c093f15839bb55b425d7cea994"
    t.add(b"")
    t.add(bytes(range(256)))
    assert t.digest().hex() == "9fd534ba2862bd980cbc27902b18bd554c26ed74549686200609a339bb2e0d63"


@given(st.lists(st.binary(max_size=40), max_size=6))
def test_transcript_definition(bodies: list[bytes]) -> None:
    """digest() equals the SHA-256 of the length-prefixed concatenation, and is repeatable."""
    t = k.Transcript()
    ref = hashlib.sha256()
    for body in bodies:
        t.add(body)
        ref.update(struct.pack(">I", len(body)) + body)
        assert t.digest() == ref.digest()
        assert t.digest() == ref.digest()  # digest() does not consume the state


def test_transcript_is_not_plain_concatenation() -> None:
    """Length prefixes separate messages: [ab, c] and [a, bc] hash differently."""
    t1, t2 = k.Transcript(), k.Transcript()
    t1.add(b"ab")
    t1.add(b"c")
    t2.add(b"a")
    t2.add(b"bc")
    assert t1.digest() != t2.digest()


# ------------------------------------------------------------------- signature input


def test_signature_input_known_answer() -> None:
    """signature_input = context (with NUL) || Transcript(hello body, signed server key part)."""
    value = k.signature_input(b"hello body", b"tbs")
    assert k.SIGNATURE_CONTEXT == b"chatproto/1 server key signature\x00"
    assert value.hex() == (
        "6368617470726f746f2f3120736572766572206b6579207369676e617475726500"
        "ee22b366791a94b59744be0b8a672247047d82b7ed5e83f701236650dd2c4da7"
    )
    t = k.Transcript()
    t.add(b"hello body")
    t.add(b"tbs")
    assert value == k.SIGNATURE_CONTEXT + t.digest()


# ------------------------------------------------------------------- key derivation

HANDSHAKE_KAT = {
    "client_key": "e99e96bc4cd824e3aaed7db74fabcdf4de298f6bfb5cba92e3d1ad50b02a5231",
    "server_key": "d6c33f2749d3f6845b3d5bad8b8bd788c20045cde9f4e3013283c4761660cf35",
    "client_iv": "ed012d278c1648d82671357b",
    "server_iv": "ec621be5279be112355d9c31",
}
SESSION_KAT = {
    "client_key": "c8687f4ee74fd8a3dc8c19aa78d91e32637c0b4eac595f30894881d5c449076c",
    "server_key": "5592f3f50bea2c8dc900b0bc59b2431f9b44cf5bb767da8a0308ff2599b29ea2",
    "client_iv": "a7bddde6eb24c3af280d051c",
    "server_iv": "40e992b0824973c7b1bcbf6e",
}
FINISHED_KEY_KAT = "f65cc792634d33f770424dab1ea8d25e2d54c2f88c7b1b80bd8606041a7d027f"
# finished_mac(FINISHED_KEY_KAT, THASH)
FINISHED_MAC_KAT = "2ca41523156f6c8c8c9da7f807fe7a7aef71f02a062a69711b8786d9b1928961"


def keys_hex(keys: k.TrafficKeys) -> dict[str, str]:
    """The four fields of TrafficKeys as hex."""
    return {f: getattr(keys, f).hex() for f in ("client_key", "server_key", "client_iv",
                                                "server_iv")}


def test_derive_handshake_keys_known_answer() -> None:
    """derive_handshake_keys(SHARED, THASH) gives fixed keys."""
    assert keys_hex(k.derive_handshake_keys(SHARED, THASH)) == HANDSHAKE_KAT


def test_derive_session_keys_known_answer() -> None:
    """derive_session_keys(SHARED, THASH) gives fixed keys and finished key."""
    keys, finished_key = k.derive_session_keys(SHARED, THASH)
    assert keys_hex(keys) == SESSION_KAT
    assert finished_key.hex() == FINISHED_KEY_KAT


def test_derive_handshake_keys_matches_hkdf() -> None:
    """Handshake keys are HKDF(salt=transcript hash, info="chatproto/1 handshake keys", 88)
    split as client_key[0:32] server_key[32:64] client_iv[64:76] server_iv[76:88]."""
    okm = hkdf(b"chatproto/1 handshake keys", 88)
    keys = k.derive_handshake_keys(SHARED, THASH)
    assert keys == k.TrafficKeys(
        client_key=okm[0:32], client_iv=okm[64:76], server_key=okm[32:64], server_iv=okm[76:88]
    )


def test_derive_session_keys_matches_hkdf() -> None:
    """Session keys are HKDF(salt=transcript hash, info="chatproto/1 session keys", 120),
    split as the handshake keys plus finished_key[88:120]."""
    okm = hkdf(b"chatproto/1 session keys", 120)
    keys, finished_key = k.derive_session_keys(SHARED, THASH)
    assert keys == k.TrafficKeys(
        client_key=okm[0:32], client_iv=okm[64:76], server_key=okm[32:64], server_iv=okm[76:88]
    )
    assert finished_key == okm[88:120]


def test_handshake_and_session_keys_differ() -> None:
    """The info strings separate the two derivations, and each key/iv is distinct."""
    hs = k.derive_handshake_keys(SHARED, THASH)
    ss, finished_key = k.derive_session_keys(SHARED, THASH)
    values = [*keys_hex(hs).values(), *keys_hex(ss).values(), finished_key.hex()]
    assert len(set(values)) == len(values)
    assert [len(bytes.fromhex(v)) for v in keys_hex(hs).values()] == [32, 32, 12, 12]


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_derivations_depend_on_both_inputs(shared: bytes, thash: bytes) -> None:
    """Changing the transcript hash changes every derived key."""
    other = bytes([thash[0] ^ 1]) + thash[1:]
    a, b = k.derive_handshake_keys(shared, thash), k.derive_handshake_keys(shared, other)
    assert a.client_key != b.client_key and a.server_key != b.server_key


# ------------------------------------------------------------------- finished mac


def test_finished_mac_known_answer() -> None:
    """finished_mac = HMAC-SHA256(finished_key, transcript hash)."""
    finished_key = bytes.fromhex(FINISHED_KEY_KAT)
    assert k.finished_mac(finished_key, THASH).hex() == FINISHED_MAC_KAT
    assert k.finished_mac(finished_key, THASH) == hmac.new(
        finished_key, THASH, hashlib.sha256
    ).digest()
    assert k.finished_mac(bytes(range(64, 96)), THASH).hex() == (
        "7eb6e0c443f0e818d3ade9b88d9061c934739d689ddf422f11098c67e37993ad"
    )


def test_constant_time_equal() -> None:
    """constant_time_equal compares bytes."""
    assert k.constant_time_equal(b"abc", b"abc")
    assert not k.constant_time_equal(b"abc", b"abd")
    assert not k.constant_time_equal(b"abc", b"ab")


# ------------------------------------------------------------------- fingerprint


def test_fingerprint_known_answers() -> None:
    """fingerprint = "SHA256:" + unpadded base64 of SHA-256(raw identity key), as OpenSSH."""
    assert k.fingerprint(bytes(32)) == "SHA256:Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU"
    identity = raw(Ed25519PrivateKey.from_private_bytes(bytes(32)))
    assert identity.hex() == "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    assert k.fingerprint(identity) == "SHA256:E545QOZLVJFyIIjZoNdBYo/IJuCUddNBp4Cs3jxLgHA"
    assert "=" not in k.fingerprint(identity)


# ------------------------------------------------------------------- x25519


def test_x25519_exchange_known_answer() -> None:
    """X25519 with fixed private keys gives a fixed secret, the same from both sides."""
    a = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    b = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
    assert raw(b).hex() == "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254"
    secret = k.x25519_exchange(a, raw(b))
    assert secret.hex() == "9663aa1da97e848a914a436d04163dfbb89178f107f1b5b77ed3854203382854"
    assert k.x25519_exchange(b, raw(a)) == secret


# Points of small order on Curve25519 (and their non-canonical encodings): every one makes the
# X25519 output all zero (RFC 7748 section 6.1).
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("peer", LOW_ORDER_POINTS, ids=lambda b: b.hex()[:8])
def test_x25519_low_order_peer_key(peer: bytes) -> None:
    """A peer key that yields the all-zero shared secret is a RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError) as info:
        k.x25519_exchange(X25519PrivateKey.generate(), peer)
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("peer", [b"", bytes(31), bytes(33)], ids=len)
def test_x25519_wrong_length_peer_key(peer: bytes) -> None:
    """A peer key of the wrong length is a RemoteProtocolError too."""
    with pytest.raises(RemoteProtocolError):
        k.x25519_exchange(X25519PrivateKey.generate(), peer)
