"""The interactive client, driven for real: two ``chatproto-client`` processes in tmux against
a ``twistd -n chatserver`` subprocess."""

from __future__ import annotations

from pathlib import Path

from tests.terminal.conftest import (
    PASSWORD,
    ChatServer,
    Tmux,
    client_command,
    fill_login,
    png_bytes,
)

_client = client_command


def _register(tmux: Tmux, who: str, name: str | None) -> None:
    fill_login(tmux, who, name, "C-r")


def test_two_users_chat_image_typing_and_presence(chat_server: ChatServer, tmux: Tmux,
                                                  tmp_path: Path) -> None:
    """Two users register (one trusting the server on first use, one with its fingerprint);
    bob opens a chat and writes, alice sees it with bob's delivery marks moving to "read",
    alice's typing shows on bob's screen, bob sends an image that alice finds saved in her
    downloads folder, and when bob quits alice sees him go offline."""
    image = tmp_path / "cat.png"
    image.write_bytes(png_bytes())
    tmux.start("alice", _client(chat_server, tmp_path, "alice"))
    _register(tmux, "alice", "alice")
    screen = tmux.wait_for("alice", "[y/n]")
    assert chat_server.fingerprint in screen
    tmux.send("alice", "y")
    tmux.wait_for("alice", "Signed in as alice")
    known = tmp_path / "config" / "chatproto" / "known_servers"
    assert chat_server.fingerprint in known.read_text()

    tmux.start("bob", _client(chat_server, tmp_path, "bob", "--name", "bob",
                              "--server-fingerprint", chat_server.fingerprint))
    _register(tmux, "bob", None)
    tmux.wait_for("bob", "Signed in as bob")
    tmux.type("bob", "/msg alice hello alice, it is bob")
    tmux.send("bob", "Enter")
    tmux.wait_for("bob", "hello alice, it is bob ✓")

    screen = tmux.wait_for("alice", "(1)")  # the window list: one unread message
    assert "● bob" in screen
    tmux.send("alice", "M-2")
    tmux.wait_for("alice", "<bob> hello alice, it is bob")
    tmux.wait_for("bob", "✓✓ read")
    tmux.wait_for("bob", "alice ● online")

    tmux.type("alice", "I am typ")
    tmux.wait_for("bob", "alice is typing…")
    tmux.send("alice", "C-u")

    tmux.type("bob", f"/image {image}")
    tmux.send("bob", "Enter")
    screen = tmux.wait_for("alice", "saved to")
    downloads = tmp_path / "downloads-alice"
    [saved] = list(downloads.iterdir())
    assert saved.read_bytes() == image.read_bytes()
    assert saved.name in screen.replace("\n", "") or saved.name[:20] in screen

    tmux.type("bob", "/quit")
    tmux.send("bob", "Enter")
    tmux.wait_for("bob", "EXITED 0")
    tmux.wait_for("alice", "bob went offline")
    tmux.wait_for("alice", "○ bob")


def test_offline_messages_group_and_changed_key(chat_server: ChatServer, tmux: Tmux,
                                                tmp_path: Path) -> None:
    """Carol creates a group with dave and writes while dave is away; when dave signs in again
    (same state directory) the group and the message are there. A client whose pin for the
    server differs refuses to continue, naming both fingerprints, and exits with status 5."""
    tmux.start("dave", _client(chat_server, tmp_path, "dave", "--name", "dave",
                               "--server-fingerprint", chat_server.fingerprint))
    _register(tmux, "dave", None)
    tmux.wait_for("dave", "Signed in as dave")
    tmux.type("dave", "/quit")
    tmux.send("dave", "Enter")
    tmux.wait_for("dave", "EXITED 0")

    tmux.start("carol", _client(chat_server, tmp_path, "carol", "--name", "carol",
                                "--server-fingerprint", chat_server.fingerprint))
    _register(tmux, "carol", None)
    tmux.wait_for("carol", "Signed in as carol")
    tmux.type("carol", "/group create dave")
    tmux.send("carol", "Enter")
    tmux.wait_for("carol", "carol created the group")
    tmux.type("carol", "see you in the group")
    tmux.send("carol", "Enter")
    tmux.wait_for("carol", "see you in the group ✓")

    tmux.start("dave2", _client(chat_server, tmp_path, "dave", "--name", "dave",
                                "--server-fingerprint", chat_server.fingerprint))
    tmux.wait_for("dave2", "Password:")
    tmux.type("dave2", PASSWORD)
    tmux.send("dave2", "Enter")
    tmux.wait_for("dave2", "Signed in as dave")
    tmux.wait_for("dave2", "(1)")
    tmux.send("dave2", "C-n")
    tmux.wait_for("dave2", "<carol> see you in the group")
    tmux.wait_for("carol", "see you in the group ✓✓")

    pins = tmp_path / "pins"
    wrong = "SHA256:" + "A" * 43
    pins.write_text(f"127.0.0.1:{chat_server.port} {wrong}\n")
    tmux.start("mallory", _client(chat_server, tmp_path, "mallory", "--name", "mallory",
                                  "--known-servers", str(pins)))
    tmux.wait_for("mallory", "Password:")
    tmux.type("mallory", PASSWORD)
    tmux.send("mallory", "Enter")
    screen = tmux.wait_for("mallory", "SERVER IDENTITY CHANGED")
    assert wrong in screen and chat_server.fingerprint in screen
    tmux.send("mallory", "q")
    tmux.wait_for("mallory", "EXITED 5")
