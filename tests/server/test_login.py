"""Login and registration over real loopback TCP, with the real store (SQLite and PostgreSQL).

The client is the sans-IO ClientHandshake in a small test protocol (tests/server/wireclient.py).
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import endpoints
from twisted.logger import formatEvent, globalLogPublisher

from chatproto.server.limits import LimitSettings
from chatproto.server.passwords import Argon2Parameters
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, RemoteProtocolError
from chatproto.wire.handshake import (
    HandshakeFailed,
    LoginComplete,
    Registered,
    RegisterRejected,
    SigninRejected,
)
from tests.server.conftest import Loopback, start_loopback
from tests.server.wireclient import (
    Closed,
    Proxy,
    WireClient,
    connect,
    plain_frame,
    replace_server_key,
)

PASSWORD = "correct horse battery"


async def new_user(lb: Loopback, name: str, password: str = PASSWORD) -> None:
    client = await connect(lb.reactor, lb.port)
    await client.trust()
    assert isinstance(await client.register(name, password), Registered)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_register_then_signin(loopback: Loopback) -> None:
    """Register, then sign in on the same connection: Hello done names the user and the
    server's identity is the one the client saw."""
    client = await connect(loopback.reactor, loopback.port)
    ident = await client.trust()
    assert ident.fingerprint == loopback.server.fingerprint
    assert await client.register("alice", PASSWORD) == Registered("alice")
    done = await client.signin("alice", PASSWORD)
    assert isinstance(done, LoginComplete)
    assert done.name == "alice" and len(done.session_id) == 16
    assert done.server_time_ms == loopback.server.now_ms()
    await client.close()


@pytest_twisted.ensureDeferred
async def test_duplicate_registration_is_name_taken(loopback: Loopback) -> None:
    """Registering an existing name gets NCK register NAME_TAKEN; the connection stays usable."""
    await new_user(loopback, "bob")
    client = await connect(loopback.reactor, loopback.port)
    await client.trust()
    rejected = await client.register("bob", "another password")
    assert isinstance(rejected, RegisterRejected)
    assert rejected.code == ErrorCode.NAME_TAKEN
    assert isinstance(await client.signin("bob", PASSWORD), LoginComplete)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_wrong_password_then_retry_succeeds(loopback: Loopback) -> None:
    """A wrong password gets NCK AUTH_FAILED; a retry on the same connection succeeds."""
    await new_user(loopback, "carol")
    client = await connect(loopback.reactor, loopback.port)
    await client.trust()
    rejected = await client.signin("carol", "wrong password")
    assert isinstance(rejected, SigninRejected)
    assert rejected.code == ErrorCode.AUTH_FAILED and rejected.retry_after_ms == 0
    assert isinstance(await client.signin("carol", PASSWORD), LoginComplete)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_unknown_user_and_wrong_password_look_the_same(loopback: Loopback) -> None:
    """An unknown name and a wrong password get the same NCK: code, reason, retry_after and
    the length of the frame on the wire."""
    await new_user(loopback, "dave")
    client = await connect(loopback.reactor, loopback.port)
    await client.trust()
    wrong = await client.signin("dave", "wrong password")
    wrong_len = len(client.last_chunk)
    unknown = await client.signin("dave2", "wrong password")
    unknown_len = len(client.last_chunk)
    assert isinstance(wrong, SigninRejected) and isinstance(unknown, SigninRejected)
    assert (wrong.code, wrong.reason, wrong.retry_after_ms) == (
        unknown.code, unknown.reason, unknown.retry_after_ms)
    assert wrong_len == unknown_len
    await client.close()


async def _through_proxy(lb: Loopback, proxy: Proxy) -> tuple[WireClient, int]:
    ep = endpoints.TCP4ServerEndpoint(lb.reactor, 0, interface="127.0.0.1")
    listening = await ep.listen(proxy)
    client = await connect(lb.reactor, listening.getHost().port)
    await listening.stopListening()
    return client, len(client.hs._hello_body) + 4


@pytest_twisted.ensureDeferred
async def test_rewritten_server_key_is_detected(sqlite_loopback: Loopback) -> None:
    """A man in the middle who replaces key A in the ServerKey is caught by the client
    (BAD_SERVER_SIGNATURE) before it sends anything after its Hello."""
    proxy = Proxy(sqlite_loopback.reactor, sqlite_loopback.port, rewrite=replace_server_key)
    client, hello_len = await _through_proxy(sqlite_loopback, proxy)
    error = await client.next()
    assert isinstance(error, RemoteProtocolError)
    assert error.code == ErrorCode.BAD_SERVER_SIGNATURE
    await client.lost
    assert len(b"".join(proxy.logs[0].to_server)) == hello_len


@pytest_twisted.ensureDeferred
async def test_replayed_server_key_is_detected(sqlite_loopback: Loopback) -> None:
    """A ServerKey captured from an earlier connection, replayed to a new one, does not verify:
    the signature covers the client's Hello. Nothing follows the Hello."""
    recorder = Proxy(sqlite_loopback.reactor, sqlite_loopback.port)
    first, _ = await _through_proxy(sqlite_loopback, recorder)
    await first.trust()
    await first.close()
    split = plain_frame(b"".join(recorder.logs[0].to_client))
    assert split is not None
    captured = split[0]

    replayer = Proxy(sqlite_loopback.reactor, sqlite_loopback.port, rewrite=lambda _: captured)
    client, hello_len = await _through_proxy(sqlite_loopback, replayer)
    error = await client.next()
    assert isinstance(error, RemoteProtocolError)
    assert error.code == ErrorCode.BAD_SERVER_SIGNATURE
    await client.lost
    assert len(b"".join(replayer.logs[0].to_server)) == hello_len


@pytest_twisted.ensureDeferred
async def test_corrupted_test_message_gets_hello_error(sqlite_loopback: Loopback) -> None:
    """A test message (Finished) that does not verify is answered with hello error and the
    connection closes; the user is not signed in."""
    await new_user(sqlite_loopback, "erin")
    client = await connect(sqlite_loopback.reactor, sqlite_loopback.port, corrupt_finished=True)
    await client.trust()
    failed = await client.signin("erin", PASSWORD)
    assert isinstance(failed, HandshakeFailed)
    assert failed.code == ErrorCode.HELLO_ERROR
    assert isinstance(await client.next(), Closed)
    user = await sqlite_loopback.store.get_user("erin")
    assert user is not None and user.last_login_ms is None


@pytest_twisted.ensureDeferred
async def test_password_is_not_on_the_wire_nor_in_the_log(sqlite_loopback: Loopback) -> None:
    """Neither the password nor its hash appears in the bytes on the wire (both directions,
    register, failed and good sign-in) or in any log event the server emits."""
    secret = "Sup3r-s3cret-passw0rd"
    events: list[str] = []

    def observer(event: dict) -> None:
        events.append(formatEvent(event) + repr(event))

    globalLogPublisher.addObserver(observer)
    try:
        proxy = Proxy(sqlite_loopback.reactor, sqlite_loopback.port)
        client, _ = await _through_proxy(sqlite_loopback, proxy)
        await client.trust()
        assert isinstance(await client.register("frank", secret), Registered)
        assert isinstance(await client.signin("frank", secret[::-1]), SigninRejected)
        assert isinstance(await client.signin("frank", secret), LoginComplete)
        await client.close()
    finally:
        globalLogPublisher.removeObserver(observer)
    phc = await sqlite_loopback.store.get_password_hash("frank")
    assert phc is not None
    wire = proxy.logs[0].all_bytes()
    assert len(wire) > 0
    for needle in (secret, secret[::-1], phc):
        assert needle.encode() not in wire
        assert not any(needle in text for text in events)
    assert any("frank" in text for text in events)  # the observer did see the server's log


@pytest_twisted.ensureDeferred
async def test_login_and_quit_are_recorded(loopback: Loopback) -> None:
    """After Hello done the user has last_login_ms and last_login_ip; Quit gets AckQuit,
    the connection closes and last_seen_ms is the time of the quit."""
    await new_user(loopback, "grace")
    client = await connect(loopback.reactor, loopback.port)
    await client.trust()
    assert isinstance(await client.signin("grace", PASSWORD), LoginComplete)
    login_ms = loopback.server.now_ms()
    user = await loopback.store.get_user("grace")
    assert user is not None
    assert user.last_login_ms == login_ms and user.last_login_ip == "127.0.0.1"

    loopback.clock.advance(20)  # less than the ping interval
    client.send(m.Quit(7))
    assert await client.next() == m.AckQuit(7)
    assert isinstance(await client.next(), Closed)
    user = await loopback.store.get_user("grace")
    assert user is not None and user.last_seen_ms == login_ms + 20_000


@pytest_twisted.ensureDeferred
async def test_account_limit_with_the_real_store(loopback: Loopback) -> None:
    """Ten failed sign-ins lock the account (TRY_LATER with retry_after_ms > 0), even with
    the right password, until the window has passed."""
    await new_user(loopback, "heidi")
    limits = loopback.server.limits
    for _ in range(limits.account_failures // (limits.max_attempts - 1) + 1):
        client = await connect(loopback.reactor, loopback.port)
        await client.trust()
        for _ in range(limits.max_attempts - 1):
            assert isinstance(await client.signin("heidi", "wrong password"), SigninRejected)
        await client.close()
    client = await connect(loopback.reactor, loopback.port)
    await client.trust()
    limited = await client.signin("heidi", PASSWORD)
    assert isinstance(limited, SigninRejected)
    assert limited.code == ErrorCode.TRY_LATER and limited.retry_after_ms > 0
    await client.close()
    loopback.clock.advance(limits.account_window)
    client = await connect(loopback.reactor, loopback.port)
    await client.trust()
    assert isinstance(await client.signin("heidi", PASSWORD), LoginComplete)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_login_with_the_default_argon2_cost(sqlite_uri: str) -> None:
    """With the production Argon2id cost (OWASP minimum) registration and sign-in work and the
    stored hash records those parameters."""
    params = Argon2Parameters()
    lb, stop = await start_loopback(sqlite_uri, params=params, limits=LimitSettings())
    try:
        client = await connect(lb.reactor, lb.port)
        await client.trust()
        assert isinstance(await client.register("ivan", PASSWORD), Registered)
        assert isinstance(await client.signin("ivan", PASSWORD), LoginComplete)
        await client.close()
        phc = await lb.store.get_password_hash("ivan")
        assert phc is not None
        assert phc.startswith("$argon2id$") and f"m={params.memory_kib},t=2,p=1" in phc
    finally:
        await stop()
