"""The server's long-term Ed25519 identity key, created on first start."""

from __future__ import annotations

import os

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from chatproto.wire.keys import fingerprint


class IdentityError(Exception):
    """The identity file exists but is not a usable Ed25519 private key."""


def load_or_create_identity(path: str) -> Ed25519PrivateKey:
    """Load the identity key at ``path``, creating it (mode 0600) if it does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        # O_EXCL: two servers starting at once must not overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return key
    return _parse(path, data)


def load_identity(path: str) -> Ed25519PrivateKey:
    """Load the identity key at ``path``; IdentityError if it is missing or unusable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise IdentityError(f"{path}: {e.strerror}") from None
    return _parse(path, data)


def _parse(path: str, data: bytes) -> Ed25519PrivateKey:
    try:
        loaded = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise IdentityError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise IdentityError(f"{path}: not an Ed25519 key")
    return loaded


def identity_fingerprint(key: Ed25519PrivateKey) -> str:
    """The fingerprint clients pin (``SHA256:...``)."""
    return fingerprint(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
