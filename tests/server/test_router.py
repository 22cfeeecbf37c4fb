"""The in-process router and admission: plain objects, no reactor."""

from __future__ import annotations

from chatproto.server.admission import LocalAdmission
from chatproto.server.router import LocalRouter
from chatproto.storage.store import LogEntry


class Session:
    """A Routed double that records what reaches it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pushed: list[bytes] = []
        self.advanced: list[tuple[int, LogEntry | None, bytes | None]] = []

    def push(self, payload: bytes) -> None:
        self.pushed.append(payload)

    def log_advanced(self, user_seq: int, entry: LogEntry | None, body: bytes | None) -> None:
        self.advanced.append((user_seq, entry, body))


def test_attach_and_detach_say_when_a_user_comes_and_goes() -> None:
    """The first session of a user brings them online, the last one takes them offline;
    detaching an unknown session changes nothing."""
    router = LocalRouter()
    phone, laptop = Session("amy"), Session("amy")
    assert router.attach(phone) is True
    assert router.attach(laptop) is False
    assert router.online_count() == 1
    assert router.detach(Session("amy")) is False
    assert router.detach(phone) is False
    assert router.detach(laptop) is True
    assert router.detach(laptop) is False
    assert router.online_count() == 0


def test_push_and_log_advanced_reach_every_device_of_the_named_users() -> None:
    """push sends one payload to every session of every named user (others get nothing);
    log_advanced tells every session of one user, with the entry when there is one."""
    router = LocalRouter()
    amy1, amy2, ben, cid = Session("amy"), Session("amy"), Session("ben"), Session("cid")
    for s in (amy1, amy2, ben, cid):
        router.attach(s)
    router.push(["amy", "ben", "nobody"], b"event")
    assert (amy1.pushed, amy2.pushed, ben.pushed, cid.pushed) == (
        [b"event"], [b"event"], [b"event"], [])
    router.log_advanced("amy", 7, None, None)
    assert amy1.advanced == amy2.advanced == [(7, None, None)]
    assert ben.advanced == []


def test_a_session_detached_while_being_pushed_to_does_not_break_the_loop() -> None:
    """A session that fails on a push and detaches at once (a transport that reports the
    close synchronously) does not stop the others from getting the payload."""
    router = LocalRouter()
    first, second = Session("amy"), Session("amy")

    def fail(payload: bytes) -> None:
        router.detach(first)

    first.push = fail  # type: ignore[method-assign]
    router.attach(first)
    router.attach(second)
    router.push(["amy"], b"x")
    assert second.pushed == [b"x"]


def test_online_answers_with_a_deferred() -> None:
    """online(names) answers which of them have a session, as a (here already fired)
    Deferred: a networked presence store answers later."""
    router = LocalRouter()
    router.attach(Session("amy"))
    d = router.online(["amy", "ben"])
    assert d.result == frozenset({"amy"})


def test_admission_counts_handshakes_and_connections_per_address() -> None:
    """Handshakes in progress and connections per address are capped; a ticket released
    twice, or told twice that its handshake is done, is counted once."""
    admission = LocalAdmission(max_handshakes=2, max_per_ip=2)
    a = admission.admit("10.0.0.1")
    b = admission.admit("10.0.0.1")
    assert a.refusal is None and b.refusal is None
    c = admission.admit("10.0.0.2")
    assert c.refusal == "too many handshakes in progress; try again soon"
    c.release()
    a.handshake_done()
    a.handshake_done()
    assert admission.handshakes_in_progress() == 1
    d = admission.admit("10.0.0.1")
    assert d.refusal == "too many connections from your address"
    d.release()
    d.release()
    b.release()
    assert (admission.handshakes_in_progress(), admission.open_connections()) == (0, 1)
    a.release()
    assert admission.open_connections() == 0 and admission.per_ip == {}
