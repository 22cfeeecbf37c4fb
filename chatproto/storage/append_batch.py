"""The chat-message append, set-based: one pass writes a whole group-commit batch.

Every message goes to one conversation (a direct chat between two users, or a group) and
gets the conversation's next sequence number; every member gets a row in their own ordered
log (deliveries) with their next per-user sequence number. The counters of every
conversation and user in the batch are read once (locked on PostgreSQL), advanced in Python
in submission order and written back once; messages go in with multi-row INSERTs and
deliveries with one executemany. So a batch costs a fixed number of statements, whatever its
size, and commit order is sequence order: readers never see a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, NamedTuple

from chatproto.storage.database import Transaction
from chatproto.storage.errors import NotAMember, StoreError, UnknownGroup, UnknownUsers
from chatproto.storage.lookups import IN_CHUNK, direct_key, ensure_direct, select_in
from chatproto.storage.records import Appended, Draft, LogEntry
from chatproto.wire.messages import ContentType

#: The log's columns, for set-based inserts.
_DELIVERY_COLUMNS = (("user_id", "bigint"), ("user_seq", "bigint"), ("message_id", "bigint"))

#: Messages per multi-row INSERT.
_INSERT_ROWS = 200


class _Slot(Enum):
    """What a draft of the batch became, once it passed every check."""

    PLANNED = auto()  # stored by this batch
    RESENT = auto()  # a resend of a draft planned earlier in this batch: not stored again


class _Pending(NamedTuple):  # a NamedTuple: one per draft, cheap to make
    slot: _Slot
    plan_index: int  # the draft in the plan it refers to


@dataclass(slots=True)
class _Planned:
    """A draft that will be stored, with what the pass assigns to it."""

    draft: Draft
    sender_id: int
    conv_id: int
    direct: bool
    recipients: list[int]  # user ids, ascending
    conv_seq: int = 0
    user_seqs: list[tuple[int, int]] = field(default_factory=list)  # (user id, user_seq)


class _Earlier(NamedTuple):
    """A message stored by an earlier batch, found by (sender id, client_msg_id)."""

    message_id: int
    conv_seq: int
    created_ms: int
    group_id: int  # 0 for a direct chat


@dataclass(slots=True)
class _Found:
    """What the checks and the numbering of a batch read before planning it."""

    user_ids: dict[str, int]  # name -> id, of the senders and direct recipients
    earlier: dict[tuple[int, bytes], _Earlier]
    direct: dict[str, int]  # direct key -> conversation id
    blocks: set[tuple[int, int]]  # (blocker id, blocked id) among the direct recipients
    groups: set[int]
    members: dict[int, set[int]]  # group id -> member ids
    #: With arrays only: the counters, read and locked up front, and the locked users' names.
    conv_seq: dict[int, int] = field(default_factory=dict)
    user_seq: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)


def append_message(txn: Transaction, draft: Draft) -> Appended:
    """Store one chat message (a batch of one; see :func:`append_messages`).

    Submitted to the group committer, whose consecutive runs of this function are written
    together through its ``batch`` attribute.
    """
    _, value = append_messages(txn, [(draft,)])[0]
    if isinstance(value, StoreError):
        raise value
    return value


def append_messages(txn: Transaction, batch: list[tuple[Draft]]) -> list[
        tuple[bool, Appended | StoreError]]:
    """Append many messages with a fixed number of statements per batch: ``(ok, Appended or
    the refusal)`` per draft, in order.

    A draft whose (sender, client_msg_id) is already stored, or planned earlier in the batch,
    is not stored again: the original's sequence number comes back with ``duplicate`` set.
    Every refusal (unknown user or group, not a member) is decided before anything is
    written for that draft. On an engine with arrays (PostgreSQL) a batch is two statements,
    so two round trips: one reads and locks, one writes (plus two per new direct chat).
    """
    drafts = [args[0] for args in batch]
    arrays = txn.engine.arrays
    found = _look_up_arrays(txn, drafts) if arrays else _look_up(txn, drafts)
    user_ids, earlier, direct = found.user_ids, found.earlier, found.direct

    outcomes: list[Appended | StoreError | _Pending] = []
    plan: list[_Planned] = []
    planned: dict[tuple[int, bytes], int] = {}  # (sender id, client_msg_id) -> plan index
    for draft in drafts:
        sender_id = user_ids.get(draft.sender)
        if sender_id is None:
            outcomes.append(UnknownUsers([draft.sender]))
            continue
        key = (sender_id, draft.client_msg_id) if draft.client_msg_id is not None else None
        if key is not None and key in earlier:
            e = earlier[key]
            outcomes.append(Appended(e.message_id, e.group_id, e.conv_seq, e.created_ms, True,
                                     None, ()))
            continue
        if key is not None and key in planned:
            outcomes.append(_Pending(_Slot.RESENT, planned[key]))
            continue
        if draft.group_id == 0:
            assert draft.to is not None
            peer_id = user_ids.get(draft.to)
            if peer_id is None or (peer_id, sender_id) in found.blocks:
                outcomes.append(UnknownUsers([draft.to]))
                continue
            dkey = direct_key(draft.sender, draft.to)
            if dkey not in direct:  # the first message of this pair
                direct[dkey] = ensure_direct(txn, draft.sender, sender_id, draft.to,
                                             draft.now_ms)
            item = _Planned(draft, sender_id, direct[dkey], True, sorted({sender_id, peer_id}))
        else:
            if draft.group_id not in found.groups:
                outcomes.append(UnknownGroup(draft.group_id))
                continue
            if sender_id not in found.members.get(draft.group_id, ()):
                outcomes.append(NotAMember(draft.group_id))
                continue
            item = _Planned(draft, sender_id, draft.group_id, False,
                            sorted(found.members[draft.group_id]))
        if key is not None:
            planned[key] = len(plan)
        outcomes.append(_Pending(_Slot.PLANNED, len(plan)))
        plan.append(item)
    appended: list[Appended] = []
    if plan:
        appended = _write_arrays(txn, plan, found) if arrays else _write(txn, plan, user_ids)

    results: list[tuple[bool, Appended | StoreError]] = []
    for outcome in outcomes:
        if isinstance(outcome, StoreError):
            results.append((False, outcome))
        elif isinstance(outcome, Appended):
            results.append((True, outcome))
        elif outcome.slot is _Slot.PLANNED:
            results.append((True, appended[outcome.plan_index]))
        else:
            original = appended[outcome.plan_index]
            results.append((True, Appended(original.message_id, original.group_id,
                                           original.conv_seq, original.created_ms, True, None,
                                           ())))
    return results


append_message.batch = append_messages  # type: ignore[attr-defined]


def _look_up(txn: Transaction, drafts: list[Draft]) -> _Found:
    """The batch's look-ups, one statement each (SQLite: no round trips to save; BEGIN
    IMMEDIATE already holds the write lock, so :func:`_write` reads the counters later)."""
    names = sorted({d.sender for d in drafts} | {d.to for d in drafts if d.to is not None})
    user_ids = {str(n): int(i) for n, i in
                select_in(txn, "SELECT name, id FROM users WHERE name IN", names)}
    earlier = _stored_earlier(txn, drafts, user_ids)
    keys = sorted({direct_key(d.sender, d.to) for d in drafts if d.group_id == 0 and d.to})
    direct = {str(k): int(i) for k, i in select_in(
        txn, "SELECT direct_key, id FROM conversations WHERE direct_key IN", keys)}
    blocks = {(int(a), int(b)) for a, b in select_in(
        txn, "SELECT user_id, blocked_id FROM blocks WHERE user_id IN",
        sorted({user_ids[d.to] for d in drafts if d.group_id == 0 and d.to in user_ids}))}
    group_ids = sorted({d.group_id for d in drafts if d.group_id != 0})
    groups = {int(i) for (i,) in select_in(
        txn, "SELECT id FROM conversations WHERE kind = 'group' AND id IN", group_ids)}
    members: dict[int, set[int]] = {}
    for cid, uid in select_in(
            txn, "SELECT conversation_id, user_id FROM members WHERE conversation_id IN",
            sorted(groups)):
        members.setdefault(int(cid), set()).add(int(uid))
    return _Found(user_ids, earlier, direct, blocks, groups, members)


#: Every look-up of a batch in one statement (PostgreSQL), one tagged row each: 1 a
#: conversation (id, next_seq, direct_key), 2 a user (id, next_seq, name), 3 a group member
#: (group, user), 4 a block (blocker, blocked), 5 an earlier message (sender, id, conv_seq,
#: created_ms, group id or 0, client_msg_id). The counters of the conversations and users the
#: batch may write are locked first, conversations then users, each in id order (the sort
#: runs below the lock), the order every batch of every node takes them in; NO KEY UPDATE
#: lets other transactions' foreign-key checks on those rows through.
_LOOK_UP_ARRAYS = (
    "WITH lc AS MATERIALIZED (SELECT id, next_seq, direct_key FROM conversations"
    " WHERE direct_key = ANY(?::text[]) OR (kind = 'group' AND id = ANY(?::bigint[]))"
    " ORDER BY id FOR NO KEY UPDATE),"
    " lu AS MATERIALIZED (SELECT id, next_seq, name FROM users WHERE name = ANY(?::text[])"
    " OR id IN (SELECT user_id FROM members WHERE conversation_id = ANY(?::bigint[]))"
    " ORDER BY id FOR NO KEY UPDATE)"
    " SELECT 1, id, next_seq, 0::bigint, 0::bigint, 0::bigint, direct_key, NULL::bytea"
    " FROM lc"
    " UNION ALL SELECT 2, id, next_seq, 0, 0, 0, name, NULL FROM lu"
    " UNION ALL SELECT 3, conversation_id, user_id, 0, 0, 0, NULL, NULL FROM members"
    " WHERE conversation_id IN (SELECT id FROM lc WHERE direct_key IS NULL)"
    " UNION ALL SELECT 4, b.user_id, b.blocked_id, 0, 0, 0, NULL, NULL FROM blocks b"
    " JOIN users r ON r.id = b.user_id WHERE r.name = ANY(?::text[])"
    " UNION ALL SELECT 5, m.sender_id, m.id, m.conv_seq, m.created_ms,"
    " CASE WHEN c.kind = 'direct' THEN 0 ELSE c.id END, NULL, m.client_msg_id"
    " FROM unnest(?::text[], ?::bytea[]) AS v (n, k) JOIN users s ON s.name = v.n"
    " JOIN messages m ON m.sender_id = s.id AND m.client_msg_id = v.k"
    " JOIN conversations c ON c.id = m.conversation_id"
)


def _look_up_arrays(txn: Transaction, drafts: list[Draft]) -> _Found:
    """The batch's look-ups and counter locks in one statement, so one round trip."""
    names = sorted({d.sender for d in drafts} | {d.to for d in drafts if d.to is not None})
    keys = sorted({direct_key(d.sender, d.to) for d in drafts if d.group_id == 0 and d.to})
    group_ids = sorted({d.group_id for d in drafts if d.group_id != 0})
    peers = sorted({d.to for d in drafts if d.group_id == 0 and d.to is not None})
    resent = sorted({(d.sender, d.client_msg_id) for d in drafts
                     if d.client_msg_id is not None})
    txn.execute_prepared("chat_append_look_up", _LOOK_UP_ARRAYS, (
        keys, group_ids, names, group_ids, peers, [n for n, _ in resent], [k for _, k in resent]))
    found = _Found({}, {}, {}, set(), set(), {})
    for tag, a, b, c, d, e, text, blob in txn.fetchall():
        if tag == 1:
            found.conv_seq[int(a)] = int(b)
            if text is None:
                found.groups.add(int(a))
            else:
                found.direct[str(text)] = int(a)
        elif tag == 2:
            found.user_ids[str(text)] = int(a)
            found.user_seq[int(a)] = int(b)
            found.names[int(a)] = str(text)
        elif tag == 3:
            found.members.setdefault(int(a), set()).add(int(b))
        elif tag == 4:
            found.blocks.add((int(a), int(b)))
        else:
            found.earlier[(int(a), bytes(blob))] = _Earlier(int(b), int(c), int(d), int(e))
    return found


def _stored_earlier(txn: Transaction, drafts: list[Draft],
                    user_ids: dict[str, int]) -> dict[tuple[int, bytes], _Earlier]:
    """The messages earlier batches stored under the drafts' (sender, client_msg_id)."""
    pairs = sorted({(user_ids[d.sender], d.client_msg_id) for d in drafts
                    if d.client_msg_id is not None and d.sender in user_ids})
    earlier: dict[tuple[int, bytes], _Earlier] = {}
    for i in range(0, len(pairs), IN_CHUNK // 2):
        chunk = pairs[i : i + IN_CHUNK // 2]
        values = ",".join(["(?, ?)"] * len(chunk))
        # A join against VALUES walks the (sender_id, client_msg_id) index on both engines.
        txn.execute(
            f"WITH v (s, k) AS (VALUES {values}) SELECT m.sender_id, m.client_msg_id, m.id,"  # noqa: S608
            " m.conv_seq, m.created_ms, c.kind, c.id FROM v JOIN messages m"
            " ON m.sender_id = v.s AND m.client_msg_id = v.k"
            " JOIN conversations c ON c.id = m.conversation_id",
            [x for pair in chunk for x in pair],
        )
        for sid, cmid, mid, seq, created, kind, cid in txn.fetchall():
            earlier[(int(sid), bytes(cmid))] = _Earlier(
                int(mid), int(seq), int(created), 0 if kind == "direct" else int(cid))
    return earlier


def _write(txn: Transaction, plan: list[_Planned], user_ids: dict[str, int]) -> list[Appended]:
    """Take the sequence numbers, insert the messages and deliveries; one Appended per item."""
    # Rows locked in id order (ORDER BY runs below the lock): two nodes' batches over
    # overlapping conversations and users then queue instead of deadlocking (PostgreSQL
    # locks an unordered IN in physical order, which updates keep changing).
    lock = " ORDER BY id" + txn.engine.for_update
    conv_seq = {int(i): int(n) for i, n in select_in(
        txn, "SELECT id, next_seq FROM conversations WHERE id IN",
        sorted({p.conv_id for p in plan}), lock)}
    user_list = sorted({uid for p in plan for uid in p.recipients})
    user_seq = {int(i): int(n) for i, n in select_in(
        txn, "SELECT id, next_seq FROM users WHERE id IN", user_list, lock)}
    id_to_name = {v: k for k, v in user_ids.items()}
    missing = [uid for uid in user_list if uid not in id_to_name]
    if missing:
        id_to_name.update({int(i): str(n) for i, n in select_in(
            txn, "SELECT id, name FROM users WHERE id IN", missing)})

    rows = _number(plan, conv_seq, user_seq)
    message_ids: dict[tuple[int, int], int] = {}
    for i in range(0, len(rows), _INSERT_ROWS):
        message_rows = rows[i : i + _INSERT_ROWS]
        values = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(message_rows))
        txn.execute(
            "INSERT INTO messages (conversation_id, conv_seq, sender_id, sender_name,"  # noqa: S608
            " client_msg_id, created_ms, content_type, body, mime, sha256, file_sha256,"
            " file_size) VALUES "
            f"{values} RETURNING id, conversation_id, conv_seq",
            [v for row in message_rows for v in row],
        )
        message_ids.update({(int(c), int(q)): int(mid) for mid, c, q in txn.fetchall()})
    txn.update_rows("conversations", "next_seq", "id", [(n, i) for i, n in conv_seq.items()])
    txn.update_rows("users", "next_seq", "id", [(n, i) for i, n in user_seq.items()])
    appended = _appended(plan, message_ids, id_to_name)
    txn.insert_rows("deliveries", _DELIVERY_COLUMNS,
                    [(uid, useq, message_ids[(p.conv_id, p.conv_seq)])
                     for p in plan for uid, useq in p.user_seqs])
    return appended


#: A batch's writes in one statement (PostgreSQL): the messages from one array per column,
#: the conversations' and users' counters, and the deliveries, joined to the new messages'
#: ids by (conversation, conv_seq); it returns those ids.
_WRITE_ARRAYS = (
    "WITH m AS (INSERT INTO messages (conversation_id, conv_seq, sender_id, sender_name,"
    " client_msg_id, created_ms, content_type, body, mime, sha256, file_sha256, file_size)"
    " SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::text[], ?::bytea[],"
    " ?::bigint[], ?::smallint[], ?::bytea[], ?::text[], ?::bytea[], ?::bytea[], ?::bigint[])"
    " RETURNING id, conversation_id, conv_seq),"
    " c AS (UPDATE conversations SET next_seq = v.n FROM unnest(?::bigint[], ?::bigint[])"
    " AS v (k, n) WHERE conversations.id = v.k),"
    " u AS (UPDATE users SET next_seq = v.n FROM unnest(?::bigint[], ?::bigint[])"
    " AS v (k, n) WHERE users.id = v.k),"
    " d AS (INSERT INTO deliveries (user_id, user_seq, message_id) SELECT v.u, v.s, m.id"
    " FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[]) AS v (u, s, c, q)"
    " JOIN m ON m.conversation_id = v.c AND m.conv_seq = v.q)"
    " SELECT id, conversation_id, conv_seq FROM m"
)


def _write_arrays(txn: Transaction, plan: list[_Planned], found: _Found) -> list[Appended]:
    """:func:`_write` in one statement, with the counters :func:`_look_up_arrays` locked. A
    conversation this batch created (the first message of a pair) is locked here."""
    conv_seq, user_seq, names = found.conv_seq, found.user_seq, found.names
    new_convs = sorted({p.conv_id for p in plan} - conv_seq.keys())
    if new_convs:
        txn.execute("SELECT id, next_seq FROM conversations WHERE id = ANY(?::bigint[])"
                    " ORDER BY id FOR NO KEY UPDATE", (new_convs,))
        conv_seq.update({int(i): int(n) for i, n in txn.fetchall()})
    conv_ids = sorted({p.conv_id for p in plan})
    user_ids = sorted({uid for p in plan for uid in p.recipients})
    conv_seq = {i: conv_seq[i] for i in conv_ids}
    user_seq = {i: user_seq[i] for i in user_ids}
    rows = _number(plan, conv_seq, user_seq)
    deliveries = [(uid, useq, p.conv_id, p.conv_seq) for p in plan for uid, useq in p.user_seqs]
    txn.execute_prepared("chat_append_write", _WRITE_ARRAYS, [
        *([list(col) for col in zip(*rows, strict=True)]),
        conv_ids, [conv_seq[i] for i in conv_ids],
        user_ids, [user_seq[i] for i in user_ids],
        *([list(col) for col in zip(*deliveries, strict=True)]),
    ])
    message_ids = {(int(c), int(q)): int(mid) for mid, c, q in txn.fetchall()}
    return _appended(plan, message_ids, names)


def _number(plan: list[_Planned], conv_seq: dict[int, int],
            user_seq: dict[int, int]) -> list[tuple[Any, ...]]:
    """Advance the counters in submission order, numbering each item; the message rows."""
    rows = []
    for p in plan:
        conv_seq[p.conv_id] += 1
        p.conv_seq = conv_seq[p.conv_id]
        for uid in p.recipients:
            user_seq[uid] += 1
            p.user_seqs.append((uid, user_seq[uid]))
        d = p.draft
        rows.append((p.conv_id, p.conv_seq, p.sender_id, d.sender, d.client_msg_id, d.now_ms,
                     d.content_type, d.body, d.mime, d.sha256, d.file_sha256,
                     d.file_size if d.file_sha256 is not None else None))
    return rows


def _appended(plan: list[_Planned], message_ids: dict[tuple[int, int], int],
              id_to_name: dict[int, str]) -> list[Appended]:
    appended: list[Appended] = []
    for p in plan:
        mid = message_ids[(p.conv_id, p.conv_seq)]
        d = p.draft
        group_id = 0 if p.direct else p.conv_id
        entry = LogEntry(group_id, d.sender, d.to if p.direct else None, p.conv_seq, d.now_ms,
                         d.client_msg_id, d.content_type,
                         None if d.content_type == ContentType.IMAGE else d.body, d.mime,
                         d.sha256, d.file_size if d.file_sha256 is not None else len(d.body),
                         mid)
        appended.append(Appended(mid, group_id, p.conv_seq, d.now_ms, False, entry,
                                 tuple((id_to_name[uid], useq) for uid, useq in p.user_seqs)))
    return appended
