"""The outbox of a :class:`~chatproto.client.reconnect.ChatSession`: messages not yet
acknowledged by the server, in the order they were sent.

Every message gets its ``client_msg_id`` (16 random bytes) when it enters the outbox, before
it is first sent; the session resends it with the same id after each reconnection until a
``SendAck`` arrives, and the server's de-duplication on ``(sender, client_msg_id)`` makes the
resends harmless.

The outbox lives in memory, and in a small SQLite file when it is given a path (WAL journal,
``synchronous=FULL``: an entry is on disk when :meth:`Outbox.add` returns and stays gone once
:meth:`Outbox.remove` returns, even across a crash or a power loss). A new outbox opened on
the same file continues where the old one stopped.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chatproto.wire import messages as m

__all__ = ["Outbox", "OutboxEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_msg_id BLOB NOT NULL UNIQUE,
    group_id INTEGER NOT NULL,
    peer TEXT,
    content_type INTEGER NOT NULL,
    body BLOB NOT NULL
)
"""


@dataclass(frozen=True)
class OutboxEntry:
    """One message waiting for its ``SendAck``.

    Attributes:
        seq: The position in the outbox (increasing in the order of :meth:`Outbox.add`).
        client_msg_id: The 16-byte id the message is (re)sent with.
        group_id: The group, or 0 for a direct message.
        peer: The recipient of a direct message (None for a group).
        content_type: ``ContentType.TEXT`` (body = UTF-8 text) or ``ContentType.IMAGE``
            (body = the whole image).
        body: The text or the image.
    """

    seq: int
    client_msg_id: bytes
    group_id: int
    peer: str | None
    content_type: int
    body: bytes

    @property
    def to(self) -> str | int:
        """The target as the client API takes it: a user name or a group id."""
        return self.peer if self.peer is not None else self.group_id


class Outbox:
    """An ordered, optionally persistent queue of unacknowledged messages.

    Args:
        path: The SQLite file to keep the outbox in (created if absent); None keeps it in
            memory only.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[bytes, OutboxEntry] = {}
        self._next_seq = 1
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            rows = self._db.execute(
                "SELECT seq, client_msg_id, group_id, peer, content_type, body FROM outbox"
                " ORDER BY seq"
            ).fetchall()
            for seq, msg_id, group_id, peer, content_type, body in rows:
                entry = OutboxEntry(seq, bytes(msg_id), group_id, peer, content_type, bytes(body))
                self._entries[entry.client_msg_id] = entry
                self._next_seq = seq + 1

    def add(self, group_id: int, peer: str | None, content_type: int, body: bytes,
            client_msg_id: bytes | None = None) -> OutboxEntry:
        """Append a message (on disk before this returns, if the outbox has a file).

        Args:
            group_id: The group, or 0 for a direct message.
            peer: The recipient of a direct message (None for a group).
            content_type: ``ContentType.TEXT`` or ``ContentType.IMAGE``.
            body: The UTF-8 text or the image.
            client_msg_id: 16 bytes (random if omitted).

        Returns:
            The new entry.

        Raises:
            ValueError: If ``client_msg_id`` is not 16 bytes or is already in the outbox.
        """
        msg_id = client_msg_id if client_msg_id is not None else os.urandom(16)
        if len(msg_id) != 16:
            raise ValueError("client_msg_id must be 16 bytes")
        if msg_id in self._entries:
            raise ValueError("that client_msg_id is already in the outbox")
        if content_type not in (m.ContentType.TEXT, m.ContentType.IMAGE):
            raise ValueError("only texts and images can be sent")
        if self._db is not None:
            cur = self._db.execute(
                "INSERT INTO outbox (client_msg_id, group_id, peer, content_type, body)"
                " VALUES (?, ?, ?, ?, ?)",
                (msg_id, group_id, peer, int(content_type), body),
            )
            seq = int(cur.lastrowid or self._next_seq)
        else:
            seq = self._next_seq
        self._next_seq = seq + 1
        entry = OutboxEntry(seq, msg_id, group_id, peer, int(content_type), body)
        self._entries[msg_id] = entry
        return entry

    def remove(self, client_msg_id: bytes) -> OutboxEntry | None:
        """Forget a message (acknowledged, or refused for good).

        Returns:
            The entry, or None if it was not in the outbox.
        """
        entry = self._entries.pop(client_msg_id, None)
        if entry is not None and self._db is not None:
            self._db.execute("DELETE FROM outbox WHERE client_msg_id = ?", (client_msg_id,))
        return entry

    def get(self, client_msg_id: bytes) -> OutboxEntry | None:
        """The entry with this id, if it is still waiting."""
        return self._entries.get(client_msg_id)

    def __contains__(self, client_msg_id: object) -> bool:
        return client_msg_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[OutboxEntry]:
        """The waiting entries, oldest first (a snapshot)."""
        return iter(list(self._entries.values()))

    def close(self) -> None:
        """Close the file (the in-memory entries stay readable)."""
        db, self._db = self._db, None
        if db is not None:
            db.close()
