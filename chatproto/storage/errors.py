"""The store's refusals: errors callers are expected to handle (the server answers them with an
error code). Anything else a store method raises is a failure, not a refusal."""

from __future__ import annotations

from collections.abc import Sequence


class StoreError(Exception):
    """Base class for store errors callers are expected to handle."""


class NameTaken(StoreError):
    """A user with this name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"user name already taken: {name!r}")
        self.name = name


class UnknownUsers(StoreError):
    """Some named users do not exist; ``names`` lists every missing one."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__("unknown user: " + ", ".join(names))
        self.names = tuple(names)


class UnknownGroup(StoreError):
    def __init__(self, group_id: int) -> None:
        super().__init__(f"no group {group_id}")


class NotAMember(StoreError):
    def __init__(self, group_id: int) -> None:
        super().__init__(f"you are not a member of group {group_id}")


class NotAllowed(StoreError):
    """The group's rules do not let this member do that (see group_rules)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class UnknownMessage(StoreError):
    """No message at that position that the user may change."""

    def __init__(self, group_id: int, conv_seq: int) -> None:
        super().__init__(f"no message {conv_seq} you may change in that conversation")
        self.group_id = group_id
        self.conv_seq = conv_seq
