"""Who may change a group and what a change does: pure rules, no database.

Owners and admins add, remove and rename; only the owner promotes and demotes; an admin may
not remove the owner or another admin, and nobody removes the owner (the owner leaves
instead). Any member may leave. Adding a member or removing a non-member changes nothing;
a change that changes nothing appends no event. When the owner leaves, the longest-standing
admin (earliest ``joined_ms``, ties by user id), else the longest-standing member, becomes
the owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from chatproto.storage.errors import NotAllowed, NotAMember
from chatproto.wire.messages import GroupAction


class Role(StrEnum):
    """A member's role in a group (the ``members.role`` column)."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


#: Actions only the owner or an admin may take.
_ADMIN_ACTIONS = frozenset({GroupAction.ADDED, GroupAction.REMOVED, GroupAction.RENAMED})
#: Actions only the owner may take.
_OWNER_ACTIONS = frozenset({GroupAction.PROMOTED, GroupAction.DEMOTED})
#: Actions a member asks for (CREATED and OWNER_CHANGED are the store's own events).
REQUESTED_ACTIONS = _ADMIN_ACTIONS | _OWNER_ACTIONS | {GroupAction.LEFT}


@dataclass(frozen=True, slots=True)
class GroupChange:
    """What a permitted change does. Names keep the request's order, each once."""

    action: int
    add: tuple[str, ...] = ()  # become members
    remove: tuple[str, ...] = ()  # stop being members
    set_role: tuple[str, ...] = ()  # get ``new_role``
    new_role: Role | None = None
    rename: bool = False
    hand_over: bool = False  # the owner leaves: choose_successor picks the next owner
    #: The names the change's event lists.
    event_names: tuple[str, ...] = ()

    @property
    def appends_event(self) -> bool:
        """Whether the change is logged: always, unless it changes nothing."""
        return self.rename or bool(self.add or self.remove or self.set_role)


def check_actor(action: int, group_id: int, actor_role: Role | None) -> None:
    """Refuse at once what the actor's role never allows (before looking at the names).

    NotAMember for a non-member, NotAllowed for a role below the action's."""
    if actor_role is None:
        raise NotAMember(group_id)
    if action not in REQUESTED_ACTIONS:
        raise ValueError(f"not a group change a member asks for: {action}")
    if action in _OWNER_ACTIONS and actor_role is not Role.OWNER:
        raise NotAllowed("only the group's owner may change roles")
    if action in _ADMIN_ACTIONS and actor_role is Role.MEMBER:
        raise NotAllowed("only the group's owner or admins may do that")


def plan_change(action: int, group_id: int, actor: str, actor_role: Role | None,
                targets: Sequence[tuple[str, Role | None]] = ()) -> GroupChange:
    """The change ``actor`` asks for, given the current role of each named user (None: not a
    member), in request order. Raises NotAMember or NotAllowed."""
    check_actor(action, group_id, actor_role)
    targets = list(dict(targets).items())  # each name once, first position kept
    if action == GroupAction.ADDED:
        added = tuple(name for name, role in targets if role is None)
        return GroupChange(action, add=added, new_role=Role.MEMBER, event_names=added)
    if action == GroupAction.REMOVED:
        for name, role in targets:
            if role is Role.OWNER or (role is Role.ADMIN and actor_role is not Role.OWNER):
                raise NotAllowed(f"{name} is the group's {role}; an admin may not remove them")
        removed = tuple(name for name, role in targets if role is not None)
        return GroupChange(action, remove=removed, event_names=removed)
    if action == GroupAction.LEFT:
        return GroupChange(action, remove=(actor,), hand_over=actor_role is Role.OWNER,
                           event_names=(actor,))
    if action == GroupAction.RENAMED:
        return GroupChange(action, rename=True)
    for name, role in targets:  # PROMOTED or DEMOTED
        if role is None or role is Role.OWNER:
            raise NotAllowed(f"{name} is not a member whose role can change")
    names = tuple(name for name, _ in targets)
    new_role = Role.ADMIN if action == GroupAction.PROMOTED else Role.MEMBER
    return GroupChange(action, set_role=names, new_role=new_role, event_names=names)


class Standing(NamedTuple):
    """A member as the hand-over sees them."""

    user_id: int
    role: Role
    joined_ms: int


def choose_successor(others: Iterable[Standing]) -> Standing | None:
    """The next owner among the members other than the leaving owner: the longest-standing
    admin, else the longest-standing member (earliest joined_ms, ties by the lower user id);
    None when nobody is left."""
    return min(others, default=None,
               key=lambda s: (s.role is not Role.ADMIN, s.joined_ms, s.user_id))
