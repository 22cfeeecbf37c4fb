"""The key schedule: small pure functions over cryptography's primitives.

Every derivation is documented byte for byte in docs/protocol.rst ("Key schedule"), and the
known-answer tests in tests/wire/test_keys.py fix their outputs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chatproto.wire.suites import x25519_exchange

__all__ = [
    "Transcript", "TrafficKeys", "constant_time_equal", "derive_handshake_keys",
    "derive_session_keys", "fingerprint", "finished_mac", "signature_input", "x25519_exchange",
]

SIGNATURE_CONTEXT = b"chatproto/1 server key signature\x00"
HANDSHAKE_INFO = b"chatproto/1 handshake keys"
SESSION_INFO = b"chatproto/1 session keys"


class Transcript:
    """The running handshake transcript: SHA-256 over ``uint32 length || body`` of each message.

    Bodies are the encoded layer-2 messages (plaintext), in the order they were sent.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, body: bytes) -> None:
        """Append one message body."""
        self._hash.update(struct.pack(">I", len(body)))
        self._hash.update(body)

    def digest(self) -> bytes:
        """The hash of everything added so far (the transcript stays usable)."""
        return self._hash.copy().digest()


def signature_input(hello_body: bytes, server_key_tbs: bytes, *,
                    context: bytes = SIGNATURE_CONTEXT) -> bytes:
    """What the server signs: a context string (version 1's by default) and the hash of the
    Hello as sent and the unsigned part of the server key message."""
    transcript = Transcript()
    transcript.add(hello_body)
    transcript.add(server_key_tbs)
    return context + transcript.digest()


@dataclass(frozen=True, slots=True)
class TrafficKeys:
    """One AES-256-GCM key and static IV per direction."""

    client_key: bytes
    client_iv: bytes
    server_key: bytes
    server_iv: bytes


def _expand(shared_secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(
        shared_secret
    )


def _split(okm: bytes) -> TrafficKeys:
    return TrafficKeys(
        client_key=okm[0:32],
        server_key=okm[32:64],
        client_iv=okm[64:76],
        server_iv=okm[76:88],
    )


def derive_handshake_keys(shared_secret: bytes, transcript_hash: bytes) -> TrafficKeys:
    """Keys protecting Signin..ClientKey, from X25519(client ephemeral, key A)."""
    return _split(_expand(shared_secret, transcript_hash, HANDSHAKE_INFO, 88))


def derive_session_keys(shared_secret: bytes, transcript_hash: bytes) -> tuple[TrafficKeys, bytes]:
    """Session keys and the finished key, from X25519(client key C, key B)."""
    okm = _expand(shared_secret, transcript_hash, SESSION_INFO, 120)
    return _split(okm[:88]), okm[88:120]


def finished_mac(finished_key: bytes, transcript_hash: bytes) -> bytes:
    """The FINISHED verify_data: HMAC-SHA256(finished_key, transcript hash)."""
    mac = crypto_hmac.HMAC(finished_key, hashes.SHA256())
    mac.update(transcript_hash)
    return mac.finalize()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare secrets without leaking where they differ."""
    return hmac.compare_digest(a, b)


def fingerprint(identity_public: bytes) -> str:
    """An identity key's fingerprint, as OpenSSH prints one: ``SHA256:`` + unpadded base64."""
    digest = hashlib.sha256(identity_public).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
