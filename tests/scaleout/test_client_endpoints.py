"""Clients given several server endpoints (the nodes of one deployment)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from chatproto.client.failover import EndpointRotation
from tests.terminal.conftest import CLIENT, PASSWORD, WAIT, ChatServer, free_port


def test_rotation_moves_on_after_a_failed_attempt() -> None:
    """Attempts go to the current endpoint; a failure moves to the next (wrapping); a late
    failure report for an endpoint that is no longer current changes nothing."""
    rotation = EndpointRotation(["tcp:a:1", "tcp:b:2", "tcp:c:3"])
    assert rotation.current == "tcp:a:1"
    rotation.failed("tcp:a:1")
    assert rotation.current == "tcp:b:2"
    rotation.failed("tcp:a:1")  # stale
    assert rotation.current == "tcp:b:2"
    rotation.failed("tcp:b:2")
    rotation.failed("tcp:c:3")
    assert rotation.current == "tcp:a:1"
    assert EndpointRotation("tcp:a:1").endpoints == ["tcp:a:1"]
    with pytest.raises(ValueError):
        EndpointRotation([])


@pytest.mark.slow
def test_cli_tries_each_server(chat_server: ChatServer, client_env: dict[str, str],
                               tmp_path: Path) -> None:
    """``--server DEAD --server LIVE``: the one-shot commands connect to the live one."""
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    dead = f"tcp:127.0.0.1:{free_port()}"

    def run(command: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLIENT, command, "--server", dead, "--server", chat_server.endpoint,
             "--name", name, "--password-file", str(password),
             "--server-fingerprint", chat_server.fingerprint,
             "--state-dir", str(tmp_path / f"state-{name}"), *extra],
            capture_output=True, text=True, env=client_env, timeout=WAIT)

    assert run("register", "nodea").returncode == 0
    assert run("register", "nodeb").returncode == 0
    sent = run("send", "nodea", "--to", "nodeb", "over", "there")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["conv_seq"] >= 1


def test_a_connection_being_lost_is_not_usable() -> None:
    """While a lost connection fails its pending requests (before the session hears of the
    loss), code resumed by those failures sees the session as not connected: a request fails
    with ConnectionLost and wait_connected waits for the next connection instead of firing
    at once (which made a retry loop spin forever when a node was killed)."""
    from twisted.internet.task import Clock

    from chatproto.client import ConnectionLost
    from chatproto.client.reconnect import ChatSession

    class Client:
        lost = False

        def history(self, *args: object) -> object:
            raise AssertionError("a request went to a lost connection")

    session = ChatSession(Clock(), lambda listener: None, "ann", "pw")  # type: ignore[arg-type,return-value]
    client = Client()
    session._client = client  # type: ignore[assignment]
    assert session.connected and session.wait_connected().called
    client.lost = True
    assert not session.connected
    assert not session.wait_connected().called
    failed: list[object] = []
    session.history("ben").addErrback(failed.append)
    assert failed and failed[0].check(ConnectionLost)  # type: ignore[attr-defined]
