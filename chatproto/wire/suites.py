"""The key-exchange suites of protocol version 2, as a small registry.

Both exchanges of the handshake have the same shape, so every suite is written as a KEM: one side
makes a key pair and sends its public key (the *share*); the other side answers with a
*response* and both obtain the same shared secret. The first exchange is Hello2's share and
ServerKey2's response; the second is Ack's share and ClientKey's response.

``X25519`` (TLS code point 0x001D): the share is an X25519 public key, the response the
responder's ephemeral X25519 public key, the secret their X25519 output.

``X25519MLKEM768`` (TLS code point 0x11EC, the layout of draft-ietf-tls-ecdhe-mlkem): the share
is an ML-KEM-768 encapsulation key (1,184 bytes) followed by an X25519 public key (32 bytes);
the response is the ML-KEM-768 ciphertext (1,088 bytes) followed by the responder's X25519
public key; the secret is the ML-KEM shared secret (32 bytes) followed by the X25519 output
(32 bytes). It stays confidential if either X25519 or ML-KEM-768 holds.

Private keys come from ``generate()``. Tests and the known-answer vectors pass a ``seed``
function instead: X25519 keys then come from ``from_private_bytes(seed(32))`` and ML-KEM keys
from ``from_seed_bytes(seed(64))``. ML-KEM encapsulation takes its randomness from OpenSSL and
cannot be fixed, so the vectors fix the decapsulation (docs/_vectors/suite_vectors.txt).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chatproto.wire.errors import ErrorCode, RemoteProtocolError

Seed = Callable[[int], bytes]

X25519_ID = 0x001D
X25519MLKEM768_ID = 0x11EC

X25519_LEN = 32
MLKEM768_EK_LEN = 1184
MLKEM768_CT_LEN = 1088


def _x25519_key(seed: Seed | None) -> X25519PrivateKey:
    if seed is None:
        return X25519PrivateKey.generate()
    return X25519PrivateKey.from_private_bytes(seed(32))


def _x25519_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_exchange(private_key: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519; a peer key of the wrong length or giving the all-zero secret is the peer's
    protocol error (MALFORMED_MESSAGE)."""
    try:
        if len(peer_public) != X25519_LEN:
            raise ValueError("length")
        return private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "invalid X25519 public key")


class KeyPair(abc.ABC):
    """The initiating side's private key, used once by :meth:`decapsulate`."""

    share: bytes

    @abc.abstractmethod
    def decapsulate(self, response: bytes) -> bytes:
        """The shared secret from the peer's response (RemoteProtocolError if malformed)."""


class Suite(abc.ABC):
    """One key-exchange suite."""

    id: int
    name: str
    share_len: int
    response_len: int

    @abc.abstractmethod
    def generate(self, seed: Seed | None = None) -> KeyPair:
        """A fresh key pair whose public ``share`` goes to the peer."""

    @abc.abstractmethod
    def encapsulate(self, share: bytes, seed: Seed | None = None) -> tuple[bytes, bytes]:
        """Answer a peer's share: ``(shared secret, response)``; RemoteProtocolError if the
        share is malformed."""

    def available(self) -> bool:
        """Whether the installed cryptography/OpenSSL can run this suite."""
        return True


class _X25519KeyPair(KeyPair):
    def __init__(self, key: X25519PrivateKey) -> None:
        self._key: X25519PrivateKey | None = key
        self.share = _x25519_public(key)

    def decapsulate(self, response: bytes) -> bytes:
        key, self._key = self._key, None  # forward secrecy: the private half is used once
        if key is None:
            raise RuntimeError("key pair already used")
        return x25519_exchange(key, response)


class X25519Suite(Suite):
    id = X25519_ID
    name = "X25519"
    share_len = X25519_LEN
    response_len = X25519_LEN

    def generate(self, seed: Seed | None = None) -> KeyPair:
        return _X25519KeyPair(_x25519_key(seed))

    def encapsulate(self, share: bytes, seed: Seed | None = None) -> tuple[bytes, bytes]:
        key = _x25519_key(seed)
        return x25519_exchange(key, share), _x25519_public(key)


class _HybridKeyPair(KeyPair):
    def __init__(self, mlkem_key: object, x25519_key: X25519PrivateKey) -> None:
        self._keys: tuple[object, X25519PrivateKey] | None = (mlkem_key, x25519_key)
        ek = mlkem_key.public_key().public_bytes_raw()  # type: ignore[attr-defined]
        self.share = ek + _x25519_public(x25519_key)

    def decapsulate(self, response: bytes) -> bytes:
        keys, self._keys = self._keys, None
        if keys is None:
            raise RuntimeError("key pair already used")
        if len(response) != MLKEM768_CT_LEN + X25519_LEN:
            raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "bad X25519MLKEM768 response")
        mlkem_key, x25519_key = keys
        try:
            mlkem_secret = mlkem_key.decapsulate(  # type: ignore[attr-defined]
                response[:MLKEM768_CT_LEN]
            )
        except ValueError:
            raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "bad ML-KEM-768 ciphertext")
        return bytes(mlkem_secret) + x25519_exchange(x25519_key, response[MLKEM768_CT_LEN:])


class X25519MLKEM768Suite(Suite):
    id = X25519MLKEM768_ID
    name = "X25519MLKEM768"
    share_len = MLKEM768_EK_LEN + X25519_LEN
    response_len = MLKEM768_CT_LEN + X25519_LEN

    def available(self) -> bool:
        try:
            from cryptography.hazmat.backends.openssl.backend import backend

            return bool(backend.mlkem_supported())
        except (ImportError, AttributeError):
            return False

    def generate(self, seed: Seed | None = None) -> KeyPair:
        from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

        mlkem_key = (
            MLKEM768PrivateKey.generate() if seed is None
            else MLKEM768PrivateKey.from_seed_bytes(seed(64))
        )
        return _HybridKeyPair(mlkem_key, _x25519_key(seed))

    def encapsulate(self, share: bytes, seed: Seed | None = None) -> tuple[bytes, bytes]:
        from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey

        if len(share) != self.share_len:
            raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "bad X25519MLKEM768 share")
        try:
            ek = MLKEM768PublicKey.from_public_bytes(share[:MLKEM768_EK_LEN])
        except ValueError:
            raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "bad ML-KEM-768 key")
        mlkem_secret, ciphertext = ek.encapsulate()
        key = _x25519_key(seed)
        x25519_secret = x25519_exchange(key, share[MLKEM768_EK_LEN:])
        return bytes(mlkem_secret) + x25519_secret, bytes(ciphertext) + _x25519_public(key)


#: Every suite this implementation knows, by id.
SUITES: dict[int, Suite] = {s.id: s for s in (X25519MLKEM768Suite(), X25519Suite())}


def default_suites() -> tuple[int, ...]:
    """The suites to offer or accept, best first: the hybrid where available, then X25519."""
    return tuple(suite_id for suite_id, suite in SUITES.items() if suite.available())
