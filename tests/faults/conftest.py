"""Fixtures and helpers of the fault-injection tests: the loopback server of the server tests,
a recording listener and a session factory with tiny backoff delays."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredQueue
from twisted.python.failure import Failure

from chatproto.client import Backoff, ChatListener, ChatSession, open_session
from chatproto.wire import messages as m
from tests.server.conftest import (  # noqa: F401 - fixtures
    loopback,
    sqlite_loopback,
    sqlite_uri,
)

PASSWORD = "correct horse battery"


class Recorder(ChatListener):
    """Records what a session shows: every chat message, states, lost connections."""

    def __init__(self) -> None:
        self.chats: list[m.Deliver] = []
        self.queue: DeferredQueue[m.Deliver] = DeferredQueue()
        self.events: list[m.Deliver] = []
        self.states: list[str] = []
        self.lost = 0
        self.errors: list[tuple[int, str]] = []
        self.acked: list[m.SendAck] = []
        self.failed: list[tuple[bytes, Exception]] = []
        self._waiting: list[tuple[Any, Deferred[None]]] = []

    def message_received(self, deliver: m.Deliver, image: bytes | None) -> None:
        if deliver.content_type == m.ContentType.EVENT:
            self.events.append(deliver)
        else:
            self.chats.append(deliver)
            self.queue.put(deliver)
        self._check()

    def connection_state_changed(self, state: str) -> None:
        self.states.append(state)
        self._check()

    def connection_lost(self, reason: Failure) -> None:
        self.lost += 1

    def error_received(self, code: int, reason: str) -> None:
        self.errors.append((code, reason))

    def send_acknowledged(self, ack: m.SendAck) -> None:
        self.acked.append(ack)

    def send_failed(self, client_msg_id: bytes, error: Exception) -> None:
        self.failed.append((client_msg_id, error))

    def bodies(self, sender: str | None = None) -> list[str]:
        return [d.body.decode() for d in self.chats if sender is None or d.sender == sender]

    def _check(self) -> None:
        waiting, self._waiting = self._waiting, []
        ready = []
        for predicate, d in waiting:
            if predicate(self):
                ready.append(d)
            else:
                self._waiting.append((predicate, d))
        for d in ready:
            d.callback(None)

    def until(self, predicate: Any) -> Deferred[None]:
        """Fires once ``predicate(self)`` holds (checked after each message and state)."""
        d: Deferred[None] = Deferred()
        if predicate(self):
            d.callback(None)
        else:
            self._waiting.append((predicate, d))
        return d


def fast_session(reactor: Any, port: int, name: str, fingerprint: str, listener: ChatListener,
                 **kw: Any) -> ChatSession:
    """A session to 127.0.0.1:port with backoff delays of at most 50 ms and no pings."""
    kw.setdefault("register", True)
    kw.setdefault("ping_interval", 0)
    kw.setdefault("backoff", Backoff(0.01, 0.05, 2))
    return open_session(reactor, f"tcp:127.0.0.1:{port}", name, PASSWORD,
                        server_fingerprint=fingerprint, listener=listener, **kw)
