"""Account self-service: deleting one's own account (its name held back for a while), the
devices of an account, and the rule that a held name cannot be registered.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted.internet.defer import Deferred

from chatproto.storage.database import Database, Transaction
from chatproto.storage.errors import NameTaken
from chatproto.storage.lookups import user_id


class DeviceRow(NamedTuple):
    device_id: bytes
    acked_seq: int


def claim_name(txn: Transaction, name: str, now_ms: int) -> None:
    """Before a user is created: NameTaken while the name of a deleted account is on hold.
    After the hold, the deleted account's direct conversations lose their key, so the new
    owner of the name starts new ones and never sees the old ones."""
    txn.execute("SELECT until_ms FROM retired_names WHERE name = ?", (name,))
    row = txn.fetchone()
    if row is None:
        return
    if int(row[0]) > now_ms:
        raise NameTaken(name)
    txn.execute(
        "UPDATE conversations SET direct_key = NULL WHERE kind = 'direct'"
        " AND (direct_key LIKE ? ESCAPE '!' OR direct_key LIKE ? ESCAPE '!')",
        (_like(name) + "\n%", "%\n" + _like(name)),
    )
    txn.execute("DELETE FROM retired_names WHERE name = ?", (name,))


def _like(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


class AccountStore:
    """Deleting accounts and listing or forgetting their devices."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def delete_account(self, name: str, now_ms: int, hold_ms: int) -> Deferred[bool]:
        """Delete the user (memberships, log and devices go with it; the messages they sent
        stay with their recipients) and hold the name back until ``now_ms + hold_ms``.
        False if there is no such user."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute("DELETE FROM users WHERE name = ?", (name,))
            if txn.rowcount <= 0:
                return False
            txn.execute(
                "INSERT INTO retired_names (name, until_ms) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET until_ms = EXCLUDED.until_ms",
                (name, now_ms + hold_ms),
            )
            return True

        return self.db.run_interaction("delete_account", txn_fn)

    def devices(self, name: str) -> Deferred[list[DeviceRow]]:
        """The devices that have acknowledged messages for the user, by device id."""

        def txn_fn(txn: Transaction) -> list[DeviceRow]:
            txn.execute("SELECT device_id, acked_seq FROM devices WHERE user_id = ?"
                        " ORDER BY device_id", (user_id(txn, name),))
            return [DeviceRow(bytes(d), int(s)) for d, s in txn.fetchall()]

        return self.db.run_interaction("devices", txn_fn)

    def forget_device(self, name: str, device_id: bytes) -> Deferred[bool]:
        """Forget a device's position in the log (a later sign-in starts from the
        beginning of the log, as a new device does). False if it was not known."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?",
                        (user_id(txn, name), device_id))
            return txn.rowcount > 0

        return self.db.run_interaction("forget_device", txn_fn)
