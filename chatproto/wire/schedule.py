"""The chained key schedule of protocol version 2 (TLS 1.3 style), as small pure functions.

docs/protocol.rst, "Protocol version 2", gives it byte for byte; docs/_vectors/v2_vectors.txt
fixes its outputs::

    handshake_secret = HKDF-Extract(salt = 32 zero bytes, IKM = shared secret 1)
    c_hs = Derive-Secret(handshake_secret, "c hs traffic", H1)     H1: Hello2 .. ServerKey2
    s_hs = Derive-Secret(handshake_secret, "s hs traffic", H1)
    master_secret = HKDF-Extract(salt = Derive-Secret(handshake_secret, "derived", H2),
                                 IKM = shared secret 2)             H2: Hello2 .. ClientKey
    c_ap = Derive-Secret(master_secret, "c ap traffic", H2)
    s_ap = Derive-Secret(master_secret, "s ap traffic", H2)
    finished_key = Derive-Secret(master_secret, "finished", H2)
    key = Expand-Label(traffic secret, "key", "", 32); iv = Expand-Label(.., "iv", "", 12)
    next traffic secret (KeyUpdate) = Expand-Label(traffic secret, "traffic upd", "", 32)

    Expand-Label(secret, label, context, n) = HKDF-Expand-SHA256(secret, info, n) with
        info = uint16 n || uint8 len(L) || L || uint8 len(context) || context,
        L = "chatproto/2 " + label
    Derive-Secret(secret, label, context) = Expand-Label(secret, label, context, 32)
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from chatproto.wire.frame import IV_LEN, KEY_LEN

LABEL_PREFIX = b"chatproto/2 "
SIGNATURE_CONTEXT_V2 = b"chatproto/2 server key signature\x00"
HASH_LEN = 32


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869): HMAC-SHA256(salt, IKM)."""
    return hmac.new(salt, ikm, "sha256").digest()


def expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label as in RFC 8446 section 7.1, with the prefix ``chatproto/2 ``."""
    full = LABEL_PREFIX + label
    info = struct.pack(">HB", length, len(full)) + full + struct.pack(">B", len(context)) + context
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(secret)


def derive_secret(secret: bytes, label: bytes, context: bytes) -> bytes:
    """Derive-Secret: a 32-byte secret bound to a label and a transcript hash."""
    return expand_label(secret, label, context, HASH_LEN)


@dataclass(frozen=True, slots=True)
class TrafficSecrets:
    """One traffic secret per direction."""

    client: bytes
    server: bytes


def traffic_key_iv(secret: bytes) -> tuple[bytes, bytes]:
    """The AES-256-GCM key and static iv of one direction's traffic secret."""
    return expand_label(secret, b"key", b"", KEY_LEN), expand_label(secret, b"iv", b"", IV_LEN)


def next_traffic_secret(secret: bytes) -> bytes:
    """The traffic secret after a KeyUpdate (the old one is forgotten)."""
    return expand_label(secret, b"traffic upd", b"", HASH_LEN)


def handshake_secret(shared_secret_1: bytes) -> bytes:
    """The first stage: extracted from the first exchange's shared secret alone."""
    return hkdf_extract(bytes(HASH_LEN), shared_secret_1)


def handshake_traffic(hs_secret: bytes, h1: bytes) -> TrafficSecrets:
    """Traffic secrets protecting Signin .. ClientKey (and NCK, ACK, hello error)."""
    return TrafficSecrets(
        derive_secret(hs_secret, b"c hs traffic", h1), derive_secret(hs_secret, b"s hs traffic", h1)
    )


def master_secret(hs_secret: bytes, shared_secret_2: bytes, h2: bytes) -> bytes:
    """The second stage: the first stage's secret chained with the second exchange."""
    return hkdf_extract(derive_secret(hs_secret, b"derived", h2), shared_secret_2)


def application_traffic(master: bytes, h2: bytes) -> tuple[TrafficSecrets, bytes]:
    """The session's traffic secrets and the finished key."""
    secrets = TrafficSecrets(
        derive_secret(master, b"c ap traffic", h2), derive_secret(master, b"s ap traffic", h2)
    )
    return secrets, derive_secret(master, b"finished", h2)
