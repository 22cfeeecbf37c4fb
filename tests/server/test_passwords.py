"""Password policy, Argon2id hashing and the threaded PasswordHasher."""

from __future__ import annotations

import pytest
import pytest_twisted

from chatproto.server.passwords import (
    MAX_PASSWORD_CHARS,
    Argon2Parameters,
    PasswordHasher,
    hash_password,
    password_policy_error,
    verify_password,
)

FAST = Argon2Parameters(memory_kib=64, iterations=1, lanes=1)


@pytest.mark.parametrize("password", ["12345678", "x" * MAX_PASSWORD_CHARS, "pässwört ☃ ok"])
def test_policy_accepts(password: str) -> None:
    """8 to 256 printable characters (any script) are accepted."""
    assert password_policy_error(password) is None


@pytest.mark.parametrize("password", ["", "1234567", "x" * (MAX_PASSWORD_CHARS + 1),
                                      "tab\there!", "newline\n123"])
def test_policy_refuses(password: str) -> None:
    """Too short, too long, or with control characters: refused with a reason."""
    assert password_policy_error(password)


def test_hash_verify_round_trip() -> None:
    """A PHC string verifies its own password only; it names Argon2id and the parameters."""
    phc = hash_password("secret password", FAST)
    assert phc.startswith("$argon2id$") and "m=64,t=1,p=1" in phc
    assert "secret password" not in phc
    assert verify_password("secret password", phc)
    assert not verify_password("secret passwore", phc)
    assert hash_password("secret password", FAST) != phc  # fresh salt


def test_verify_garbage_hash_is_false() -> None:
    """A malformed stored hash verifies nothing (no exception)."""
    assert not verify_password("anything", "not a phc string")


@pytest_twisted.ensureDeferred
async def test_password_hasher_in_threads() -> None:
    """PasswordHasher hashes and verifies in its pool; an unknown user (phc None) is False."""
    from twisted.internet import reactor

    hasher = PasswordHasher(reactor, FAST, threads_max=2)
    hasher.start()
    try:
        phc = await hasher.hash("secret password")
        assert await hasher.verify("secret password", phc) is True
        assert await hasher.verify("wrong password", phc) is False
        assert await hasher.verify("secret password", None) is False
    finally:
        hasher.stop()
