"""--retention-days: the service prunes the archive at start and then every hour."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import task
from twisted.python import usage

from chatproto.server.limits import LimitSettings
from chatproto.server.passwords import Argon2Parameters, PasswordHasher
from chatproto.server.service import PRUNE_INTERVAL, ChatService
from chatproto.server.tap import Options
from chatproto.storage.database import Database
from chatproto.storage.store import Draft

DAY_MS = 86_400_000


def test_retention_option() -> None:
    """--retention-days defaults to 0 (keep forever), takes fractions, refuses negatives."""
    assert Options()["retention-days"] == 0.0
    opts = Options()
    opts.parseOptions(["--retention-days", "7.5"])
    assert opts["retention-days"] == 7.5
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--retention-days", "-1"])


@pytest_twisted.ensureDeferred
async def test_service_prunes_at_start_and_hourly(tmp_path: Path) -> None:
    """With a 1-day retention, a delivered message older than a day is deleted when the
    service starts; a newer one is deleted an hour after it too has aged past a day."""
    from twisted.internet import reactor

    clock = task.Clock()
    clock.advance(10 * 86_400)
    db = Database.from_uri(f"sqlite:{tmp_path / 'db'}")
    service = ChatService(clock, db, Ed25519PrivateKey.generate(), [],
                          PasswordHasher(reactor, Argon2Parameters(64, 1, 1)), LimitSettings(),
                          retention_days=1)
    await db.start()
    store = service.server.store
    for name in ("alice", "bob"):
        await store.create_user(name, "h", 0)
    now = int(clock.seconds() * 1000)
    old = Draft("alice", 0, "bob", b"o" * 16, 1, b"old", None, None, now - 2 * DAY_MS)
    new = Draft("alice", 0, "bob", b"n" * 16, 1, b"new", None, None, now - DAY_MS + 1_000_000)
    await store.append_message(old)
    await store.append_message(new)
    for name, dev in (("alice", b"a"), ("bob", b"b")):
        await store.acknowledge(name, dev * 16, 2, now)
    service.startService()
    try:
        await service.ready
        first = service.last_prune
        assert first is not None
        await first
        assert service.pruned == [1]  # the run at start
        assert [e.body for e in await store.read_log("bob", 0, 10)] == [b"new"]
        clock.advance(PRUNE_INTERVAL - 1)
        assert service.last_prune is first  # not yet an hour
        clock.advance(1)
        assert service.last_prune is not first
        await service.last_prune
        assert service.pruned == [1, 1]
        assert await store.read_log("bob", 0, 10) == []
    finally:
        await service.stopService()
