"""Clients given several server endpoints (the nodes of one deployment)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from chatproto.client.reconnect import EndpointRotation
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
