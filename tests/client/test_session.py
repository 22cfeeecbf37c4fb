"""ChatSession without a server: the backoff schedule, the outbox and the cursor files, and
the session's reactions to connections that fail, driven by a task.Clock and fake clients."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from chatproto.client import (
    Backoff,
    ChatListener,
    ChatSession,
    ConnectionLost,
    Outbox,
    ServerError,
    SessionClosed,
    SigninError,
    Timeouts,
    UnknownUser,
    open_session,
)
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode

# --- Backoff -------------------------------------------------------------------------------


def test_backoff_caps_grow_and_stop_at_maximum() -> None:
    """The cap doubles from 0.5 s up to 30 s; each delay is uniform in [0, cap] (full jitter),
    so with a fixed random source the schedule is exactly rng.uniform(0, cap_n)."""
    backoff = Backoff(0.5, 30, 2, rng=random.Random(42))
    reference = random.Random(42)
    caps = [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    delays = [backoff.next_delay() for _ in caps]
    assert delays == [reference.uniform(0, cap) for cap in caps]
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    backoff.reset()
    assert backoff.cap() == 0.5


def test_backoff_rejects_nonsense() -> None:
    """A non-positive initial delay, a maximum below it or a factor below 1 is an error."""
    for args in [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)]:
        with pytest.raises(ValueError):
            Backoff(*args)


# --- Outbox --------------------------------------------------------------------------------


def test_outbox_keeps_order_and_survives_reopen(tmp_path: Path) -> None:
    """Entries come back oldest first; removed ones stay removed after reopening the file;
    entries added after a reopen come after the old ones."""
    path = tmp_path / "outbox"
    box = Outbox(path)
    ids = [box.add(0, "bob", m.ContentType.TEXT, f"m{i}".encode()).client_msg_id
           for i in range(5)]
    assert all(len(i) == 16 for i in ids) and len(set(ids)) == 5
    box.remove(ids[1])
    box.remove(ids[3])
    box.close()
    box = Outbox(path)
    assert [e.client_msg_id for e in box] == [ids[0], ids[2], ids[4]]
    assert [e.body for e in box] == [b"m0", b"m2", b"m4"]
    assert [e.to for e in box] == ["bob"] * 3
    later = box.add(7, None, m.ContentType.IMAGE, b"\x89PNG")
    box.close()
    box = Outbox(path)
    assert [e.client_msg_id for e in box][-1] == later.client_msg_id
    assert box.get(later.client_msg_id) is not None and box.get(later.client_msg_id).to == 7
    box.close()


def test_outbox_refuses_bad_ids() -> None:
    """A client_msg_id must be 16 bytes and unique in the outbox; events cannot be queued."""
    box = Outbox()
    box.add(0, "bob", m.ContentType.TEXT, b"x", b"1" * 16)
    with pytest.raises(ValueError):
        box.add(0, "bob", m.ContentType.TEXT, b"x", b"1" * 16)
    with pytest.raises(ValueError):
        box.add(0, "bob", m.ContentType.TEXT, b"x", b"short")
    with pytest.raises(ValueError):
        box.add(0, "bob", m.ContentType.EVENT, b"x")


# --- ChatSession with fake clients ----------------------------------------------------------


class FakeClient:
    """Stands in for ChatClient: records sends; the test answers them."""

    def __init__(self, listener: ChatListener, last_seq: int = 0) -> None:
        self.listener = listener
        self.last_seq = last_seq
        self.sent: list[tuple[Any, bytes, bytes]] = []
        self.replies: list[Deferred[m.SendAck]] = []
        self.sync_cursor: Any = "unset"
        self.closed = False

    def register(self, name: str, password: str) -> Deferred[None]:
        return succeed(None)

    def signin(self, name: str, password: str) -> Deferred[None]:
        return succeed(None)

    def sync(self, cursor: int | None) -> Deferred[int]:
        self.sync_cursor = cursor
        return succeed(self.last_seq)

    def send_text(self, to: Any, text: str, client_msg_id: bytes) -> Deferred[m.SendAck]:
        d: Deferred[m.SendAck] = Deferred()
        self.sent.append((to, text.encode(), client_msg_id))
        self.replies.append(d)
        return d

    def ack(self, index: int, conv_seq: int) -> None:
        _, _, msg_id = self.sent[index]
        self.replies[index].callback(m.SendAck(index + 1, msg_id, 0, conv_seq, 0))

    def lose(self) -> None:
        self.closed = True
        for d in self.replies:
            if not d.called:
                d.errback(ConnectionLost())
        self.listener.connection_lost(Failure(ConnectionLost()))

    def abort(self, reason: str = "") -> None:
        self.lose()

    def quit(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)


class Connector:
    """Hands out fake clients, or failures, in the order the test queues them."""

    def __init__(self) -> None:
        self.plan: list[Any] = []
        self.clients: list[FakeClient] = []
        self.calls = 0

    def __call__(self, listener: ChatListener) -> Deferred[Any]:
        self.calls += 1
        step = self.plan.pop(0) if self.plan else ConnectionRefusedError()
        if isinstance(step, BaseException):
            return fail(step)
        client = FakeClient(listener, step)
        self.clients.append(client)
        return succeed(client)


class States(ChatListener):
    def __init__(self) -> None:
        self.states: list[str] = []
        self.messages: list[int] = []

    def connection_state_changed(self, state: str) -> None:
        self.states.append(state)

    def message_received(self, deliver: m.Deliver, image: bytes | None) -> None:
        self.messages.append(deliver.user_seq)


def make_session(clock: task.Clock, connector: Connector, **kw: Any) -> tuple[ChatSession,
                                                                               States]:
    listener = States()
    session = ChatSession(clock, connector, "alice", "pw", listener=listener,
                          backoff=Backoff(0.5, 30, 2, rng=random.Random(1)), **kw)
    session.start()
    return session, listener


def deliver(seq: int) -> m.Deliver:
    return m.Deliver(seq, 0, "bob", "alice", seq, 0, b"\0" * 16, m.ContentType.TEXT, b"hi",
                     None)


def test_reconnect_attempts_follow_the_backoff_schedule() -> None:
    """While connecting fails, attempts happen at the cumulative jittered delays of the
    backoff (0.5, 1, 2, 4 s caps with a fixed random source); the state is "connecting",
    then "reconnecting", then "connected" when an attempt succeeds; the backoff resets."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [ConnectionRefusedError()] * 4 + [0]
    session, listener = make_session(clock, connector)
    assert connector.calls == 1 and listener.states == ["connecting", "reconnecting"]
    reference = random.Random(1)
    for attempt, cap in enumerate([0.5, 1, 2, 4], start=2):
        delay = reference.uniform(0, cap)
        clock.advance(delay - 1e-6)
        assert connector.calls == attempt - 1
        clock.advance(2e-6)
        assert connector.calls == attempt
    assert listener.states == ["connecting", "reconnecting", "connected"]
    assert session.connected and session.backoff.attempt == 0


def test_outbox_is_resent_in_order_with_the_same_ids(tmp_path: Path) -> None:
    """Sends queued while offline go out in order once connected; after the connection drops
    before the acks, the unacknowledged ones are resent, in the same order, with the same
    client_msg_id, and each send's Deferred fires with its SendAck."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [ConnectionRefusedError(), 0, 0]
    session, listener = make_session(clock, connector)
    results: list[m.SendAck] = []
    for i in range(3):
        session.send_text("bob", f"m{i}").addCallback(results.append)
    clock.advance(1)
    first = connector.clients[0]
    assert [body for _, body, _ in first.sent] == [b"m0", b"m1", b"m2"]
    first.ack(0, 1)
    first.lose()
    assert listener.states[-1] == "reconnecting"
    clock.advance(1)
    second = connector.clients[1]
    assert listener.states[-1] == "resumed"
    assert [body for _, body, _ in second.sent] == [b"m1", b"m2"]
    assert [i for _, _, i in second.sent] == [i for _, _, i in first.sent[1:]]
    second.ack(0, 2)
    second.ack(1, 3)
    assert [a.conv_seq for a in results] == [1, 2, 3] and len(session.outbox) == 0


def test_outbox_file_is_resent_by_a_new_session(tmp_path: Path) -> None:
    """A session closed with unacknowledged messages leaves them in its outbox file (their
    Deferreds fail with SessionClosed); a new session on the same file sends them first,
    with their original ids."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [0]
    session, _ = make_session(clock, connector, outbox_path=tmp_path / "box")
    errors: list[Failure] = []
    session.send_text("bob", "one").addErrback(errors.append)
    session.send_text(5, "two").addErrback(errors.append)
    ids = [i for _, _, i in connector.clients[0].sent]
    session.close()
    assert [e.type for e in errors] == [SessionClosed, SessionClosed]
    connector2 = Connector()
    connector2.plan = [0]
    session2, _ = make_session(clock, connector2, outbox_path=tmp_path / "box")
    client = connector2.clients[0]
    assert client.sent == [("bob", b"one", ids[0]), (5, b"two", ids[1])]
    client.ack(0, 1)
    client.ack(1, 1)
    assert len(session2.outbox) == 0


def test_cursor_dedup_and_persistence(tmp_path: Path) -> None:
    """Deliveries at or below the cursor are dropped; the cursor and device_id are written
    (atomically, as JSON) at the end of the turn; a new session reads them and syncs from
    that cursor with the same device_id."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [0]
    state = tmp_path / "state.json"
    session, listener = make_session(clock, connector, state_path=state)
    client = connector.clients[0]
    assert client.sync_cursor is None  # no state yet: the server's stored position
    for seq in [1, 2, 2, 1, 3]:
        client.listener.message_received(deliver(seq), None)
    assert listener.messages == [1, 2, 3] and session.duplicates_ignored == 2
    clock.advance(0)
    saved = json.loads(state.read_text())
    assert saved == {"device_id": session.device_id.hex(), "name": "alice", "cursor": 3}
    assert not list(tmp_path.glob("*.tmp"))
    session.close()
    connector2 = Connector()
    connector2.plan = [0]
    session2, listener2 = make_session(clock, connector2, state_path=state)
    assert session2.device_id == session.device_id
    assert connector2.clients[0].sync_cursor == 3
    connector2.clients[0].listener.message_received(deliver(3), None)
    assert listener2.messages == []


def test_sync_done_moves_the_cursor() -> None:
    """After Sync(None) the cursor is SyncDone's last_seq, so the next connection resumes
    there instead of replaying the whole log."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [17, 0]
    session, _ = make_session(clock, connector)
    assert session.cursor == 17
    connector.clients[0].lose()
    clock.advance(1)
    assert connector.clients[1].sync_cursor == 17


def test_stale_listener_events_are_ignored() -> None:
    """Events from a connection the session has already given up on are not shown."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [0, 0]
    session, listener = make_session(clock, connector)
    old = connector.clients[0]
    old.lose()
    clock.advance(1)
    old.listener.message_received(deliver(1), None)
    assert listener.messages == []
    connector.clients[1].listener.message_received(deliver(1), None)
    assert listener.messages == [1]


def test_wrong_password_is_fatal() -> None:
    """AUTH_FAILED stops the session: state "offline", no more attempts, wait_connected and
    queued sends fail with the SigninError."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [SigninError(ErrorCode.AUTH_FAILED, "no")]
    session, listener = make_session(clock, connector)
    assert listener.states == ["connecting", "offline"]
    failures: list[Failure] = []
    session.wait_connected().addErrback(failures.append)
    clock.advance(100)
    assert connector.calls == 1 and failures[0].check(SigninError)


def test_retryable_and_permanent_server_errors() -> None:
    """A 501 STORAGE_UNAVAILABLE keeps the message and resends it after a backoff delay
    (later messages wait behind it); an unknown user removes it and fails its Deferred."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [0]
    session, _ = make_session(clock, connector, max_in_flight=1)
    results: list[Any] = []
    session.send_text("bob", "a").addBoth(results.append)
    session.send_text("nobody", "b").addBoth(results.append)
    client = connector.clients[0]
    client.replies[0].errback(ServerError(ErrorCode.STORAGE_UNAVAILABLE, "db down"))
    assert len(client.sent) == 1 and len(session.outbox) == 2
    clock.advance(1)
    assert [body for _, body, _ in client.sent] == [b"a", b"a"]
    client.ack(1, 1)
    client.replies[2].errback(UnknownUser(ErrorCode.UNKNOWN_USER, "no such user"))
    assert results[0].conv_seq == 1 and results[1].check(UnknownUser)
    assert len(session.outbox) == 0


def test_rate_limited_messages_wait_the_time_the_server_names() -> None:
    """A 308 RATE_LIMITED keeps the message in the outbox and resends it (same
    client_msg_id) no sooner than the 'retry after N ms' of its reason."""
    clock = task.Clock()
    connector = Connector()
    connector.plan = [0]
    session, _ = make_session(clock, connector, max_in_flight=1)
    results: list[Any] = []
    session.send_text("bob", "a").addBoth(results.append)
    client = connector.clients[0]
    client.replies[0].errback(ServerError(ErrorCode.RATE_LIMITED,
                                          "too many messages: retry after 3000 ms"))
    assert len(session.outbox) == 1 and results == []
    clock.advance(2.9)
    assert len(client.sent) == 1
    clock.advance(0.2)
    assert len(client.sent) == 2 and client.sent[0][2] == client.sent[1][2]  # same id
    client.ack(1, 1)
    assert results[0].conv_seq == 1 and len(session.outbox) == 0


def test_open_session_takes_its_timers_from_timeouts() -> None:
    """open_session(timeouts=Timeouts(login_timeout=5)): an attempt that has not signed in
    after 5 s is abandoned and retried (the field may also be given as a keyword)."""
    for options in ({"timeouts": Timeouts(login_timeout=5)}, {"login_timeout": 5}):
        clock = task.Clock()
        attempts: list[Deferred[Any]] = []

        def never(listener: ChatListener, attempts: list[Deferred[Any]] = attempts
                  ) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            attempts.append(d)
            return d

        listener = States()
        session = open_session(None, "tcp:h:1", "alice", "pw", clock=clock, connector=never,
                               listener=listener, **options)  # type: ignore[arg-type]
        clock.advance(4.9)
        assert listener.states == ["connecting"] and len(attempts) == 1
        clock.advance(0.1)
        assert listener.states == ["connecting", "reconnecting"] and attempts[0].called
        assert session.login_timeout == 5
