"""The server identity key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from chatproto.server.identity import (
    IdentityError,
    identity_fingerprint,
    load_identity,
    load_or_create_identity,
)


def test_created_with_mode_0600_and_reloaded(tmp_path: Path) -> None:
    """A missing key is created (in a new directory) with mode 0600; loading it again gives
    the same key and fingerprint."""
    path = tmp_path / "sub" / "server.key"
    key = load_or_create_identity(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_or_create_identity(str(path))
    assert identity_fingerprint(again) == identity_fingerprint(key)
    assert identity_fingerprint(load_identity(str(path))) == identity_fingerprint(key)
    assert identity_fingerprint(key).startswith("SHA256:")


def test_garbage_file_is_rejected(tmp_path: Path) -> None:
    """A file that is not a PEM key is refused (not overwritten)."""
    path = tmp_path / "server.key"
    path.write_bytes(b"not a key")
    with pytest.raises(IdentityError):
        load_or_create_identity(str(path))
    assert path.read_bytes() == b"not a key"


def test_other_key_type_is_rejected(tmp_path: Path) -> None:
    """A PEM key of another type (EC P-256) is refused."""
    path = tmp_path / "server.key"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.write_bytes(pem)
    with pytest.raises(IdentityError, match="Ed25519"):
        load_or_create_identity(str(path))


def test_load_identity_does_not_create(tmp_path: Path) -> None:
    """load_identity on a missing file raises IdentityError and creates nothing."""
    path = tmp_path / "missing.key"
    with pytest.raises(IdentityError):
        load_identity(str(path))
    assert not path.exists()
