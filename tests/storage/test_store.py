"""Tests for chatproto.storage.store.ChatStore (users)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.python.failure import Failure

from chatproto.storage.database import Transaction
from chatproto.storage.store import ChatStore, Login, NameTaken, UserRecord


def _count(txn: Transaction) -> int:
    txn.execute("SELECT COUNT(*) FROM users")
    row = txn.fetchone()
    assert row is not None
    return int(row[0])


async def _count_users(store: ChatStore) -> int:
    return await store.db.run_interaction("count users", _count)


@pytest_twisted.ensureDeferred
async def test_create_and_get(store: ChatStore) -> None:
    assert await _count_users(store) == 0
    assert await store.get_user("alice") is None
    assert await store.get_password_hash("alice") is None
    await store.create_user("alice", "$argon2id$hash-a", 1000)
    assert await store.get_password_hash("alice") == "$argon2id$hash-a"
    assert await store.get_user("alice") == UserRecord("alice", 1000, None, None, None)
    assert await _count_users(store) == 1


@pytest_twisted.ensureDeferred
async def test_name_taken(store: ChatStore) -> None:
    await store.create_user("alice", "h1", 1)
    with pytest.raises(NameTaken) as info:
        await store.create_user("alice", "h2", 2)
    assert info.value.name == "alice"
    assert "h2" not in str(info.value)
    # original untouched; names are case-sensitive
    assert await store.get_password_hash("alice") == "h1"
    await store.create_user("Alice", "h3", 3)
    assert await _count_users(store) == 2


@pytest_twisted.ensureDeferred
async def test_set_password_hash(store: ChatStore) -> None:
    assert await store.set_password_hash("nobody", "x") is False
    await store.create_user("bob", "old", 1)
    assert await store.set_password_hash("bob", "new") is True
    assert await store.get_password_hash("bob") == "new"


@pytest_twisted.ensureDeferred
async def test_delete_user(store: ChatStore) -> None:
    assert await store.delete_user("nobody") is False
    await store.create_user("carol", "h", 1)
    await store.create_user("dave", "h", 1)
    assert await store.delete_user("carol") is True
    assert await store.get_user("carol") is None
    assert await store.delete_user("carol") is False
    assert [u.name for u in await store.list_users()] == ["dave"]
    # the name can be reused
    await store.create_user("carol", "h2", 2)
    assert await store.get_password_hash("carol") == "h2"


@pytest_twisted.ensureDeferred
async def test_list_users(store: ChatStore) -> None:
    assert await store.list_users() == []
    for i, name in enumerate(["zed", "Bob", "amy"]):
        await store.create_user(name, "h", 10 + i)
    users = await store.list_users()
    assert [u.name for u in users] == sorted(["zed", "Bob", "amy"])
    assert {u.name: u.created_ms for u in users} == {"zed": 10, "Bob": 11, "amy": 12}
    assert all(isinstance(u, UserRecord) for u in users)


@pytest_twisted.ensureDeferred
async def test_record_login_and_last_seen(store: ChatStore) -> None:
    await store.create_user("erin", "h", 100)
    await store.record_login("erin", "192.0.2.7", 200)
    assert await store.get_user("erin") == UserRecord("erin", 100, 200, "192.0.2.7", 200)
    await store.record_last_seen("erin", 300)
    assert await store.get_user("erin") == UserRecord("erin", 100, 200, "192.0.2.7", 300)
    await store.record_login("erin", "2001:db8::1", 400)
    assert await store.get_user("erin") == UserRecord("erin", 100, 400, "2001:db8::1", 400)
    # unknown users: silently nothing
    await store.record_login("nobody", "192.0.2.1", 1)
    await store.record_last_seen("nobody", 1)
    assert await _count_users(store) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_create_same_name(store: ChatStore) -> None:
    n = 20
    results = await defer.DeferredList(
        [store.create_user("race", f"h{i}", i) for i in range(n)], consumeErrors=True
    )
    ok = [r for success, r in results if success]
    failures = [r for success, r in results if not success]
    assert len(ok) == 1
    assert len(failures) == n - 1
    assert all(isinstance(f, Failure) and f.check(NameTaken) for f in failures)
    assert await _count_users(store) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_create_different_names(store: ChatStore) -> None:
    await defer.gatherResults([store.create_user(f"u{i}", "h", i) for i in range(20)])
    assert await _count_users(store) == 20


@pytest_twisted.ensureDeferred
async def test_get_login_returns_hash_and_last_ip(store: ChatStore) -> None:
    """get_login answers in one query: (None, None) for an unknown user, else the hash and the
    IP of the last successful sign-in (None before the first)."""
    assert await store.get_login("alice") == (None, None)
    await store.create_user("alice", "$argon2id$h", 1)
    assert await store.get_login("alice") == ("$argon2id$h", None)
    await store.record_login("alice", "192.0.2.7", 5)
    login = await store.get_login("alice")
    assert login == ("$argon2id$h", "192.0.2.7")
    assert isinstance(login, Login) and login.password_hash == "$argon2id$h"
    assert login.last_login_ip == "192.0.2.7"
