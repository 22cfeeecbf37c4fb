"""Users and accounts: names, password hashes, sign-ins, last seen.

Names are case-sensitive ASCII strings already validated by the caller. Password hashes are
stored and returned opaquely and never logged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from chatproto.storage.accounts import claim_name
from chatproto.storage.database import Database, Transaction
from chatproto.storage.errors import NameTaken
from chatproto.storage.records import Login, UserRecord

_USER_COLUMNS = "name, created_ms, last_login_ms, last_login_ip, last_seen_ms"


def _user_from_row(row: tuple[Any, ...]) -> UserRecord:
    name, created_ms, last_login_ms, last_login_ip, last_seen_ms = row
    return UserRecord(
        name=str(name),
        created_ms=int(created_ms),
        last_login_ms=None if last_login_ms is None else int(last_login_ms),
        last_login_ip=None if last_login_ip is None else str(last_login_ip),
        last_seen_ms=None if last_seen_ms is None else int(last_seen_ms),
    )


class UserStore:
    """The users table: accounts and what is known about their sign-ins."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_user(self, name: str, password_hash: str, now_ms: int) -> Deferred[None]:
        """Create a user; fails with :class:`NameTaken` if the name exists or is on hold
        after its account was deleted."""

        def txn_fn(txn: Transaction) -> None:
            claim_name(txn, name, now_ms)
            try:
                txn.execute(
                    "INSERT INTO users (name, password_hash, created_ms) VALUES (?, ?, ?)",
                    (name, password_hash, now_ms),
                )
            except Exception as exc:
                if txn.engine.is_unique_violation(exc):
                    raise NameTaken(name) from None
                raise

        return self.db.run_interaction("create_user", txn_fn)

    def get_login(self, name: str) -> Deferred[Login]:
        """(password hash, last sign-in IP) in one query; (None, None) for an unknown user."""

        def txn_fn(txn: Transaction) -> Login:
            txn.execute("SELECT password_hash, last_login_ip FROM users WHERE name = ?", (name,))
            row = txn.fetchone()
            return Login(None, None) if row is None else Login(str(row[0]), row[1])

        return self.db.run_interaction("get_login", txn_fn)

    def get_password_hash(self, name: str) -> Deferred[str | None]:
        """The stored password hash (PHC string); None for an unknown user."""
        return self.get_login(name).addCallback(lambda login: login.password_hash)

    def set_password_hash(self, name: str, password_hash: str) -> Deferred[bool]:
        """Replace a user's password hash; False if there is no such user."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))
            return txn.rowcount > 0

        return self.db.run_interaction("set_password_hash", txn_fn)

    def delete_user(self, name: str) -> Deferred[bool]:
        """Delete a user (cascading to memberships, deliveries, devices)."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute("DELETE FROM users WHERE name = ?", (name,))
            return txn.rowcount > 0

        return self.db.run_interaction("delete_user", txn_fn)

    def list_users(self) -> Deferred[list[UserRecord]]:
        """All users, ordered by name."""

        def txn_fn(txn: Transaction) -> list[UserRecord]:
            txn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")  # noqa: S608
            return [_user_from_row(r) for r in txn.fetchall()]

        return self.db.run_interaction("list_users", txn_fn)

    def get_user(self, name: str) -> Deferred[UserRecord | None]:
        def txn_fn(txn: Transaction) -> UserRecord | None:
            txn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))  # noqa: S608
            row = txn.fetchone()
            return None if row is None else _user_from_row(row)

        return self.db.run_interaction("get_user", txn_fn)

    def record_login(self, name: str, ip: str, now_ms: int) -> Deferred[None]:
        """Record a successful login (also counts as being seen)."""

        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "UPDATE users SET last_login_ms = ?, last_login_ip = ?, last_seen_ms = ?"
                " WHERE name = ?",
                (now_ms, ip, now_ms, name),
            )

        return self.db.run_interaction("record_login", txn_fn)

    def record_last_seen(self, name: str, now_ms: int) -> Deferred[None]:
        def txn_fn(txn: Transaction) -> None:
            txn.execute("UPDATE users SET last_seen_ms = ? WHERE name = ?", (now_ms, name))

        return self.db.run_interaction("record_last_seen", txn_fn)
