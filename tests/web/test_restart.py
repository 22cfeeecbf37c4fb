"""The server restarted under an open page, and replaced by one with another identity key."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import (
    Cli,
    WebServer,
    expect,
    open_chat,
    send_text,
    sign_up,
    start_web_server,
)

#: Reconnection backs off up to 30 s; a restart takes a few seconds.
RECONNECT_MS = 40000


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[WebServer]:
    server = start_web_server(_mkdir(tmp_path / "srv"))
    yield server
    server.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _marks(page: Any) -> list[str]:
    return [m.strip() for m in page.locator(".message.mine .mark").all_inner_texts()]


def test_restart_reconnects_and_flushes_the_outbox(own_server: WebServer, new_page: Any,
                                                   tmp_path: Path) -> None:
    """Messages written while the server is down wait in the outbox (IndexedDB), also across
    closing the tab, and are sent after the reconnection: each arrives exactly once."""
    cli = Cli(own_server, tmp_path)
    cli.run("register", "olga")
    page = new_page()
    sign_up(page, own_server, "paul")
    open_chat(page, "olga")
    send_text(page, "before restart")
    expect(page.locator(".message.mine .mark")).to_have_text(["✓"])

    own_server.stop()
    expect(page.locator("#connection-state")).to_have_text("reconnecting…")
    send_text(page, "during outage 1")
    expect(page.locator(".message.mine .mark").last).to_have_text("…")
    own_server.start()
    expect(page.locator("#connection-state")).to_have_text("online", timeout=RECONNECT_MS)
    expect(page.locator(".message.mine .mark")).to_have_text(["✓", "✓"])

    own_server.stop()
    expect(page.locator("#connection-state")).to_have_text("reconnecting…")
    send_text(page, "during outage 2")
    expect(page.locator(".message.mine .mark").last).to_have_text("…")
    # Close the tab while the server is down; a new tab of the same browser finds the outbox.
    context = page.context
    page.close()
    own_server.start()
    page = context.new_page()
    sign_up(page, own_server, "paul", register=False)
    page.locator("#conversation-list button[data-key='u:olga']").click()
    expect(page.locator(".message.mine .text")).to_have_text(
        ["before restart", "during outage 1", "during outage 2"])
    expect(page.locator(".message.mine .mark")).to_have_text(["✓", "✓", "✓"])

    tail = cli.tail("olga")
    try:
        tail.wait_for(lambda x: x.get("text") == "during outage 2")
        # Delivered at most once each too: the server's log of olga has them once.
        history = tail.texts()
        assert history == ["before restart", "during outage 1", "during outage 2"]
    finally:
        tail.stop()


def test_changed_server_key_is_refused(own_server: WebServer, new_page: Any) -> None:
    """A page that pinned the server's key refuses a server with another key before sending
    credentials, naming both fingerprints; a wrong ``#fp=`` in the link is refused too."""
    page = new_page()
    sign_up(page, own_server, "quinn")
    old = own_server.fingerprint
    page.click("#signout-button")
    own_server.stop()
    (own_server.directory / "server.key").unlink()
    own_server.start()
    new = own_server.fingerprint
    assert new != old
    signins = own_server.log.read_text().count("quinn signed in")

    page.goto(own_server.url)
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#signin-name", "quinn")
    page.fill("#signin-password", "correct horse battery")
    page.click("#signin-button")
    expect(page.locator("#changed-screen")).to_be_visible()
    expect(page.locator("#changed-pinned-label")).to_have_text("Pinned fingerprint")
    expect(page.locator("#changed-pinned")).to_have_text(old)
    expect(page.locator("#changed-received")).to_have_text(new)
    assert page.locator("#changed-screen button").count() == 0  # no "continue anyway"
    assert own_server.log.read_text().count("quinn signed in") == signins

    other = new_page()
    wrong = "SHA256:" + "A" * 43
    other.goto(own_server.url + "#fp=" + wrong)
    other.wait_for_selector("body[data-ready=true]")
    other.fill("#signin-name", "quinn")
    other.fill("#signin-password", "correct horse battery")
    other.click("#signin-button")
    expect(other.locator("#changed-pinned-label")).to_have_text(
        "Fingerprint in the link you opened")
    expect(other.locator("#changed-pinned")).to_have_text(wrong)
    expect(other.locator("#changed-received")).to_have_text(new)


def test_web_and_tcp_share_the_per_ip_connection_cap(tmp_path: Path, new_page: Any) -> None:
    """With one connection allowed per address, a signed-in page makes a second page and a
    CLI client (TCP) from the same address get SERVER_BUSY: the same accounting for both."""
    server = start_web_server(_mkdir(tmp_path / "capped"), ["--max-connections-per-ip", "1"])
    try:
        cli = Cli(server, tmp_path)
        cli.run("register", "vera")
        first = new_page()
        sign_up(first, server, "vera", register=False)
        second = new_page()
        second.goto(server.url + "#fp=" + server.fingerprint)
        second.wait_for_selector("body[data-ready=true]")
        second.fill("#signin-name", "vera")
        second.fill("#signin-password", "correct horse battery")
        second.click("#signin-button")
        # A plaintext Error comes before the server proved its identity: only its class shows.
        expect(second.locator("#signin-error")).to_contain_text("protocol error (1xx)")
        refused = subprocess.run(cli.args("send", "vera", "--to", "vera", "hi"),
                                 capture_output=True, text=True, env=cli.env, timeout=20)
        # Before keys exist the CLI names only the code's class (the text is unauthenticated).
        assert refused.returncode == 3 and "(1xx)" in refused.stderr + refused.stdout
    finally:
        server.stop()
