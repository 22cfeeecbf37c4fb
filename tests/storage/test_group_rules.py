"""The group rules as tables: who may do what, what each change does, who becomes the owner.
No database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatproto.storage.errors import NotAllowed, NotAMember
from chatproto.storage.group_rules import (
    GroupChange,
    Role,
    Standing,
    check_actor,
    choose_successor,
    plan_change,
)
from chatproto.wire.messages import GroupAction as A

OW, AD, M = Role.OWNER, Role.ADMIN, Role.MEMBER
REQUESTED = [A.ADDED, A.REMOVED, A.LEFT, A.RENAMED, A.PROMOTED, A.DEMOTED]

# Which role may ask for which change: (action, role) -> allowed. None = not a member.
PERMISSIONS = {
    A.ADDED: {OW: True, AD: True, M: False},
    A.REMOVED: {OW: True, AD: True, M: False},
    A.RENAMED: {OW: True, AD: True, M: False},
    A.PROMOTED: {OW: True, AD: False, M: False},
    A.DEMOTED: {OW: True, AD: False, M: False},
    A.LEFT: {OW: True, AD: True, M: True},
}


@pytest.mark.parametrize(("action", "role", "allowed"), [
    (action, role, allowed) for action, row in PERMISSIONS.items()
    for role, allowed in row.items()])
def test_who_may_ask_for_what(action: int, role: Role, allowed: bool) -> None:
    """Owners and admins add, remove and rename; only the owner changes roles; anyone leaves."""
    if allowed:
        check_actor(action, 7, role)
    else:
        with pytest.raises(NotAllowed):
            check_actor(action, 7, role)


@pytest.mark.parametrize("action", REQUESTED)
def test_a_non_member_may_do_nothing(action: int) -> None:
    with pytest.raises(NotAMember, match="group 7"):
        plan_change(action, 7, "mallory", None, [("bob", M)])


@pytest.mark.parametrize("action", [A.CREATED, A.OWNER_CHANGED, 99])
def test_the_store_s_own_events_are_not_requests(action: int) -> None:
    with pytest.raises(ValueError, match="not a group change"):
        check_actor(action, 7, OW)


# (action, actor role, targets in request order, the change planned)
CHANGES = [
    # Adding: only non-members are added, in request order, each once.
    (A.ADDED, OW, [("carol", None), ("bob", M), ("dave", None)],
     GroupChange(A.ADDED, add=("carol", "dave"), new_role=M, event_names=("carol", "dave"))),
    (A.ADDED, AD, [("dave", None), ("dave", None)],
     GroupChange(A.ADDED, add=("dave",), new_role=M, event_names=("dave",))),
    (A.ADDED, OW, [("bob", M), ("alice", OW)], GroupChange(A.ADDED, new_role=M)),
    # Removing: only members are removed, in request order.
    (A.REMOVED, AD, [("zed", M), ("nobody", None), ("bob", M)],
     GroupChange(A.REMOVED, remove=("zed", "bob"), event_names=("zed", "bob"))),
    (A.REMOVED, OW, [("carol", AD)],
     GroupChange(A.REMOVED, remove=("carol",), event_names=("carol",))),
    (A.REMOVED, OW, [("nobody", None)], GroupChange(A.REMOVED)),
    # Leaving: the owner's leaving hands the group over.
    (A.LEFT, M, [], GroupChange(A.LEFT, remove=("alice",), event_names=("alice",))),
    (A.LEFT, AD, [], GroupChange(A.LEFT, remove=("alice",), event_names=("alice",))),
    (A.LEFT, OW, [],
     GroupChange(A.LEFT, remove=("alice",), hand_over=True, event_names=("alice",))),
    (A.RENAMED, AD, [], GroupChange(A.RENAMED, rename=True)),
    # Roles: every name is listed, already in the role or not.
    (A.PROMOTED, OW, [("bob", M), ("carol", AD)],
     GroupChange(A.PROMOTED, set_role=("bob", "carol"), new_role=AD,
                 event_names=("bob", "carol"))),
    (A.DEMOTED, OW, [("carol", AD)],
     GroupChange(A.DEMOTED, set_role=("carol",), new_role=M, event_names=("carol",))),
]


@pytest.mark.parametrize(("action", "role", "targets", "expected"), CHANGES)
def test_what_a_change_does(action: int, role: Role, targets: list[tuple[str, Role | None]],
                            expected: GroupChange) -> None:
    """A permitted change names only the users it affects, in the request's order."""
    assert plan_change(action, 7, "alice", role, targets) == expected


@pytest.mark.parametrize(("change", "appends"), [
    (GroupChange(A.ADDED, new_role=M), False),
    (GroupChange(A.REMOVED), False),
    (GroupChange(A.ADDED, add=("x",), new_role=M, event_names=("x",)), True),
    (GroupChange(A.REMOVED, remove=("x",), event_names=("x",)), True),
    (GroupChange(A.LEFT, remove=("x",), event_names=("x",)), True),
    (GroupChange(A.RENAMED, rename=True), True),
    (GroupChange(A.PROMOTED, set_role=("x",), new_role=AD, event_names=("x",)), True),
])
def test_a_change_that_changes_nothing_logs_nothing(change: GroupChange, appends: bool) -> None:
    assert change.appends_event is appends


# (action, actor role, targets): refused with NotAllowed although the actor may ask.
REFUSED = [
    (A.REMOVED, AD, [("bob", M), ("alice", OW)]),  # nobody removes the owner
    (A.REMOVED, OW, [("alice", OW)]),  # not even the owner: the owner leaves instead
    (A.REMOVED, AD, [("carol", AD)]),  # an admin may not remove another admin
    (A.PROMOTED, OW, [("nobody", None)]),  # roles are for members
    (A.PROMOTED, OW, [("alice", OW)]),  # the owner's role does not change
    (A.DEMOTED, OW, [("bob", M), ("alice", OW)]),
]


@pytest.mark.parametrize(("action", "role", "targets"), REFUSED)
def test_refusals_about_the_named_users(action: int, role: Role,
                                        targets: list[tuple[str, Role | None]]) -> None:
    with pytest.raises(NotAllowed):
        plan_change(action, 7, "alice", role, targets)


def _s(user_id: int, role: Role, joined_ms: int) -> Standing:
    return Standing(user_id, role, joined_ms)


# (the other members, the user id of the next owner)
SUCCESSORS = [
    ([], None),
    ([_s(5, M, 10)], 5),
    ([_s(5, M, 10), _s(6, AD, 50)], 6),  # an admin before any member, however new
    ([_s(6, AD, 50), _s(7, AD, 20), _s(5, M, 1)], 7),  # the earliest-joined admin
    ([_s(9, AD, 20), _s(8, AD, 20)], 8),  # joined together: the lower user id
    ([_s(3, M, 30), _s(4, M, 10), _s(2, M, 30)], 4),  # no admin: the earliest member
    ([_s(3, M, 10), _s(2, M, 10)], 2),
]


@pytest.mark.parametrize(("others", "expected"), SUCCESSORS)
def test_who_becomes_the_owner(others: list[Standing], expected: int | None) -> None:
    """The longest-standing admin, else the longest-standing member; ties by user id."""
    chosen = choose_successor(others)
    assert (None if chosen is None else chosen.user_id) == expected
    assert choose_successor(reversed(others)) == chosen  # the order given does not matter


def test_the_rules_load_no_database_and_no_twisted() -> None:
    """group_rules is pure: importing it (in a fresh interpreter) loads neither Twisted nor a
    database driver nor the storage modules that talk to the database."""
    code = ("import sys, chatproto.storage.group_rules; print(sorted(m for m in sys.modules"
            " if m.split('.')[0] in ('twisted', 'sqlite3', '_sqlite3', 'psycopg2')"
            " or m == 'chatproto.storage.database'))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
