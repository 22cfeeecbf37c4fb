"""Several server endpoints for one deployment: the order a session tries them in."""

from __future__ import annotations

from collections.abc import Sequence


class EndpointRotation:
    """Several server endpoints (nodes of one deployment) tried in turn: a connection attempt
    goes to the current one; after a failed attempt the next one is current. A session that
    lost its node therefore resumes on another (its cursor and outbox make that lossless)."""

    def __init__(self, endpoints: str | Sequence[str]) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("at least one server endpoint is needed")
        self.index = 0

    @property
    def current(self) -> str:
        return self.endpoints[self.index]

    def failed(self, endpoint: str) -> None:
        """An attempt at ``endpoint`` failed: move on (unless another attempt already did)."""
        if self.current == endpoint:
            self.index = (self.index + 1) % len(self.endpoints)
