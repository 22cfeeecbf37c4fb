"""What the store takes and returns: immutable records, no database.

Results that callers unpack positionally (``phc, ip = ...``, ``for name, role, seen in rows``,
``m.GroupInfo(*row)``) are NamedTuples; the others are frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    created_ms: int
    last_login_ms: int | None
    last_login_ip: str | None
    last_seen_ms: int | None


class Login(NamedTuple):
    """What a sign-in needs, in one query; both None for an unknown user."""

    password_hash: str | None
    last_login_ip: str | None  # of the last successful sign-in


@dataclass(frozen=True, slots=True)
class Draft:
    """A chat message before it is stored. ``group_id`` 0 means a direct chat with ``to``."""

    sender: str
    group_id: int
    to: str | None
    client_msg_id: bytes | None
    content_type: int
    body: bytes
    mime: str | None
    sha256: bytes | None
    now_ms: int
    #: For an image kept as a file (:mod:`content_files`): its SHA-256 and size (``body`` empty).
    file_sha256: bytes | None = None
    file_size: int = 0


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One delivery in a user's log, without the per-user sequence number."""

    group_id: int
    sender: str
    to: str | None
    conv_seq: int
    created_ms: int
    client_msg_id: bytes | None
    content_type: int
    body: bytes | None  # None for images: fetch with message_body
    mime: str | None
    sha256: bytes | None
    size: int
    message_id: int
    user_seq: int = 0


@dataclass(frozen=True, slots=True)
class Appended:
    """A stored message and the log entries it made, one per recipient.

    ``entry`` is None when nothing new was logged: a resent message (``duplicate``), or a
    group change that changed nothing (``message_id`` 0, no recipients).
    ``followed_by`` holds the events appended right after this one in the same transaction,
    in log order (the OWNER_CHANGED event after the owner's LEFT); fan them out after it.
    """

    message_id: int
    group_id: int
    conv_seq: int
    created_ms: int
    duplicate: bool
    entry: LogEntry | None
    recipients: tuple[tuple[str, int], ...]  # (name, user_seq)
    followed_by: tuple[Appended, ...] = ()


class SyncPosition(NamedTuple):
    acked_seq: int  # the device's acknowledged position (0 for a new device)
    end_seq: int  # the last user_seq of the user's log


@dataclass(frozen=True, slots=True)
class HistoryRow:
    conv_seq: int
    sender: str
    to: str | None
    created_ms: int
    content_type: int
    body: bytes
    mime: str | None
    sha256: bytes | None
    size: int
    #: The stored message: an image's body is fetched again by it (``message_body``).
    message_id: int = 0


class HistoryPage(NamedTuple):
    rows: list[HistoryRow]  # newest first
    more: bool  # older messages exist


@dataclass(frozen=True, slots=True)
class DeliveredReceipt:
    sender: str
    group_id: int
    conv_seq: int


class GroupSummary(NamedTuple):
    """One group a user is in (the fields of the wire's GroupInfo, in its order)."""

    group_id: int
    title: str
    role: str
    member_count: int


class MemberRow(NamedTuple):
    name: str
    role: str
    last_seen_ms: int | None


class Contact(NamedTuple):
    name: str
    last_seen_ms: int | None
