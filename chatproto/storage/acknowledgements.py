"""Delivery acknowledgements, set-based: one pass moves every device cursor of a group-commit
batch and computes every receipt, with no savepoint and a fixed number of statements.

An acknowledgement moves a device's cursor forward to ``up_to`` (never back, never past the
end of the user's log) and yields, per conversation and sender, the highest ``conv_seq``
newly delivered to that user (the receipts the senders get). The acks of a batch are folded
in submission order in Python: a later ack of the same device starts where the earlier one
ended, exactly as if each ran in its own transaction. Then one upsert writes the cursors and
one query over a ``VALUES`` list of ranges reads every receipt. The group committer runs
the acks of a batch ahead of its appends, so they never split a run of appends.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from chatproto.storage.database import Transaction
from chatproto.storage.errors import StoreError, UnknownUsers
from chatproto.storage.lookups import IN_CHUNK, select_in
from chatproto.storage.records import DeliveredReceipt
from chatproto.wire.messages import ContentType

_DEVICE_COLUMNS = (("user_id", "bigint"), ("device_id", "bytea"), ("acked_seq", "bigint"))
#: The upsert's conflict clause: a cursor only moves forward.
_MOVE_FORWARD = (" ON CONFLICT (user_id, device_id) DO UPDATE SET acked_seq = excluded.acked_seq"
                 " WHERE devices.acked_seq < excluded.acked_seq")


class _Range(NamedTuple):
    """The log positions one acknowledgement newly covers: (previous, up_to]."""

    op: int  # index of the acknowledgement in the batch
    user_id: int
    user: str
    previous: int
    up_to: int


def acknowledge(txn: Transaction, user: str, device_id: bytes, up_to: int,
                now_ms: int) -> list[DeliveredReceipt]:
    """One acknowledgement (a batch of one; see :func:`acknowledge_many`).

    Submitted to the group committer, which writes consecutive runs of it together through
    its ``batch`` attribute. ``now_ms`` is not stored (no device keeps a last-seen time).
    """
    ok, value = acknowledge_many(txn, [(user, device_id, up_to, now_ms)])[0]
    if not ok:
        assert isinstance(value, StoreError)
        raise value
    assert isinstance(value, list)
    return value


def acknowledge_many(txn: Transaction, batch: list[tuple[str, bytes, int, int]]) -> list[
        tuple[bool, list[DeliveredReceipt] | StoreError]]:
    """Apply many acknowledgements with a fixed number of statements: ``(ok, receipts or the
    refusal)`` per acknowledgement, in order. An unknown user is refused before anything is
    written for it."""
    names = sorted({user for user, _, _, _ in batch})
    users: dict[str, tuple[int, int]] = {}
    cursors: dict[tuple[int, bytes], int] = {}
    if txn.engine.arrays:
        # Users and their devices' cursors in one statement.
        txn.execute_prepared(
            "chat_ack_look_up",
            "SELECT u.name, u.id, u.next_seq, v.device_id, v.acked_seq FROM users u"
            " LEFT JOIN devices v ON v.user_id = u.id AND v.device_id = ANY(?::bytea[])"
            " WHERE u.name = ANY(?::text[])",
            (sorted({bytes(d) for _, d, _, _ in batch}), names))
        for n, i, end, dev, acked in txn.fetchall():
            users[str(n)] = (int(i), int(end))
            if dev is not None:
                cursors[(int(i), bytes(dev))] = int(acked)
    else:
        users = {str(n): (int(i), int(end)) for n, i, end in
                 select_in(txn, "SELECT name, id, next_seq FROM users WHERE name IN", names)}
        ids = sorted({uid for uid, _ in users.values()})
        for uid, dev, acked in select_in(
                txn, "SELECT user_id, device_id, acked_seq FROM devices WHERE user_id IN", ids):
            cursors[(int(uid), bytes(dev))] = int(acked)
    wanted = {(users[u][0], bytes(d)) for u, d, _, _ in batch if u in users}
    cursors = {k: v for k, v in cursors.items() if k in wanted}

    stored = dict(cursors)  # the positions before this batch: what needs writing
    refusals: dict[int, StoreError] = {}
    ranges: list[_Range] = []
    for op, (user, device_id, up_to, _) in enumerate(batch):
        found = users.get(user)
        if found is None:
            refusals[op] = UnknownUsers([user])
            continue
        uid, end = found
        key = (uid, bytes(device_id))
        previous = cursors.get(key, 0)
        if up_to <= previous:
            continue
        valid = min(up_to, end)
        if valid > previous:
            cursors[key] = valid
            ranges.append(_Range(op, uid, user, previous, valid))
    changed = sorted((uid, dev, seq) for (uid, dev), seq in cursors.items()
                     if stored.get((uid, dev), -1) < seq)
    if txn.engine.arrays:
        receipts = _write_arrays(txn, changed, ranges) if changed or ranges else {}
    else:
        txn.insert_rows("devices", _DEVICE_COLUMNS, changed, _MOVE_FORWARD)
        receipts = _receipts(txn, ranges)
    return [(False, refusals[op]) if op in refusals else (True, receipts.get(op, []))
            for op in range(len(batch))]


acknowledge.batch = acknowledge_many  # type: ignore[attr-defined]
# A client acknowledges only what it received, so after an earlier commit: the appends of the
# same batch cannot be in its range, and acks may run ahead of them (one run of appends).
acknowledge.runs_first = True  # type: ignore[attr-defined]


#: Receipts of one batch's ranges: per range, the highest conv_seq per (sender, conversation),
#: the user's own messages and group events left out; ``r`` is the ranges (a VALUES list or
#: arrays), ordered for a stable receipt order.
_RECEIPTS = (
    " SELECT r.k, m.sender_name, c.kind, c.id, MAX(m.conv_seq)"
    " FROM r JOIN deliveries d ON d.user_id = r.u AND d.user_seq > r.lo"
    " AND d.user_seq <= r.hi"
    " JOIN messages m ON m.id = d.message_id"
    " JOIN conversations c ON c.id = m.conversation_id"
    " WHERE m.sender_name <> r.n AND m.content_type <> ?"
    " GROUP BY r.k, m.sender_name, c.kind, c.id"
    " ORDER BY r.k, c.id, m.sender_name"
)


_WRITE_ARRAYS = (
    "WITH up AS (INSERT INTO devices (user_id, device_id, acked_seq)"  # noqa: S608
    " SELECT * FROM unnest(?::bigint[], ?::bytea[], ?::bigint[])" + _MOVE_FORWARD + "),"
    " r AS (SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::text[], ?::bigint[],"
    " ?::bigint[]) AS r (k, u, n, lo, hi))" + _RECEIPTS
)


def _write_arrays(txn: Transaction, changed: list[tuple[int, bytes, int]],
                  ranges: list[_Range]) -> dict[int, list[DeliveredReceipt]]:
    """The cursors' upsert and every receipt in one statement (PostgreSQL): one round trip.
    The upsert goes in (user, device) order, the order every batch locks devices in."""
    txn.execute_prepared(
        "chat_ack_write", _WRITE_ARRAYS,
        [[u for u, _, _ in changed], [d for _, d, _ in changed], [q for _, _, q in changed],
         [rg.op for rg in ranges], [rg.user_id for rg in ranges], [rg.user for rg in ranges],
         [rg.previous for rg in ranges], [rg.up_to for rg in ranges], ContentType.EVENT])
    return _receipt_rows(txn.fetchall())


def _receipt_rows(rows: list[tuple[Any, ...]]) -> dict[int, list[DeliveredReceipt]]:
    out: dict[int, list[DeliveredReceipt]] = {}
    for op, sender, kind, cid, seq in rows:
        out.setdefault(int(op), []).append(
            DeliveredReceipt(str(sender), 0 if kind == "direct" else int(cid), int(seq)))
    return out


def _receipts(txn: Transaction, ranges: list[_Range]) -> dict[int, list[DeliveredReceipt]]:
    """Per acknowledgement, the highest conv_seq per (sender, conversation) in its range,
    the user's own messages and group events left out; one query per chunk of ranges."""
    out: dict[int, list[DeliveredReceipt]] = {}
    step = IN_CHUNK // 5
    for i in range(0, len(ranges), step):
        chunk = ranges[i : i + step]
        values = ",".join(["(?, ?, ?, ?, ?)"] * len(chunk))
        txn.execute(
            f"WITH r (k, u, n, lo, hi) AS (VALUES {values})" + _RECEIPTS,  # noqa: S608
            [*(v for rg in chunk for v in (rg.op, rg.user_id, rg.user, rg.previous, rg.up_to)),
             ContentType.EVENT],
        )
        for op, receipts in _receipt_rows(txn.fetchall()).items():
            out.setdefault(op, []).extend(receipts)
    return out
