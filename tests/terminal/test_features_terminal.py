"""The everyday features in the interactive client, driven for real in tmux against a
``twistd -n chatserver`` subprocess: edit and delete, the conversation list, search,
blocking, devices, a password change signing out the other device, deleting the account."""

from __future__ import annotations

from pathlib import Path

from tests.terminal.conftest import PASSWORD, ChatServer, Tmux, client_command, fill_login

NEW_PASSWORD = "another long passphrase"


def _command(tmux: Tmux, who: str, line: str) -> None:
    tmux.type(who, line)
    tmux.send(who, "Enter")


def _start(tmux: Tmux, server: ChatServer, tmp_path: Path, session: str, name: str,
           key: str) -> None:
    tmux.start(session, client_command(server, tmp_path, session, "--name", name,
                                       pinned=True))
    fill_login(tmux, session, None, key)
    tmux.wait_for(session, f"Signed in as {name}")


def test_edit_delete_chats_search_block_and_file(chat_server: ChatServer, tmux: Tmux,
                                            tmp_path: Path) -> None:
    """Bob's edit shows on Alice's screen as the new text marked "(edited)", his deletion as
    "(message deleted)"; /chats lists the conversation with its last message; /search finds
    the edited text; after /block, Bob's /msg gets "no such user"; /unblock undoes it; a
    file Bob sends with /file, Alice saves with /fetch, byte-identical."""
    _start(tmux, chat_server, tmp_path, "ed-alice", "ed-alice", "C-r")
    _start(tmux, chat_server, tmp_path, "ed-bob", "ed-bob", "C-r")
    _command(tmux, "ed-bob", "/msg ed-alice helo wrold")
    tmux.wait_for("ed-bob", "helo wrold ✓")
    tmux.wait_for("ed-alice", "(1)")
    tmux.send("ed-alice", "M-2")
    tmux.wait_for("ed-alice", "<ed-bob> helo wrold")
    _command(tmux, "ed-bob", "/edit hello world")
    tmux.wait_for("ed-alice", "<ed-bob> hello world (edited)")
    tmux.wait_for("ed-bob", "hello world (edited)")
    _command(tmux, "ed-bob", "an accidental secret")
    tmux.wait_for("ed-alice", "<ed-bob> an accidental secret")
    _command(tmux, "ed-bob", "/delete")
    screen = tmux.wait_for("ed-alice", "<ed-bob> (message deleted)")
    assert "accidental" not in screen

    _command(tmux, "ed-alice", "/chats")
    tmux.wait_for("ed-alice", "1 conversations:")
    tmux.wait_for("ed-alice", "ed-bob — ed-bob: (message deleted)")
    _command(tmux, "ed-alice", "/search world")
    tmux.wait_for("ed-alice", "1 messages with 'world':")
    tmux.wait_for("ed-alice", "ed-bob: hello world")
    _command(tmux, "ed-alice", "/search accidental")
    tmux.wait_for("ed-alice", "0 messages with 'accidental':")

    _command(tmux, "ed-alice", "/block ed-bob")
    tmux.wait_for("ed-alice", "you block ed-bob")
    _command(tmux, "ed-bob", "/msg ed-alice still there?")
    tmux.wait_for("ed-bob", "no such user ed-alice")
    _command(tmux, "ed-alice", "/blocked")
    tmux.wait_for("ed-alice", "you block: ed-bob")
    _command(tmux, "ed-alice", "/unblock ed-bob")
    tmux.wait_for("ed-alice", "you no longer block ed-bob")
    _command(tmux, "ed-bob", "/msg ed-alice back again")
    tmux.wait_for("ed-alice", "<ed-bob> back again")

    document = tmp_path / "minutes.odt"
    document.write_bytes(bytes(range(256)) * 3000)  # any bytes, 750 KiB: two chunks
    _command(tmux, "ed-bob", f"/file {document}")
    tmux.wait_for("ed-alice", "[file] minutes.odt (")
    _command(tmux, "ed-alice", "/fetch")
    tmux.wait_for("ed-alice", "saved minutes.odt to")
    saved = tmp_path / "downloads-ed-alice" / "minutes.odt"
    assert saved.read_bytes() == document.read_bytes()


def test_devices_password_change_and_account_deletion(chat_server: ChatServer, tmux: Tmux,
                                                      tmp_path: Path) -> None:
    """Carol on two devices: /devices lists both; /password on the first signs the second
    out (it says so); the first then deletes the account, and signing in again fails."""
    _start(tmux, chat_server, tmp_path, "acc-phone", "acc-carol", "C-r")
    _start(tmux, chat_server, tmp_path, "acc-laptop", "acc-carol", "Enter")
    _command(tmux, "acc-phone", "/devices")
    tmux.wait_for("acc-phone", "2 devices:")
    tmux.wait_for("acc-phone", "this device")
    tmux.wait_for("acc-phone", "● online")
    _command(tmux, "acc-phone", f"/password '{PASSWORD}' '{NEW_PASSWORD}'")
    tmux.wait_for("acc-phone", "password changed; your other devices were signed out")
    tmux.wait_for("acc-laptop", "signed out: the password was changed on another device")
    tmux.send("acc-phone", "Up")  # the password line is not kept for recall: /devices is
    assert NEW_PASSWORD not in tmux.wait_for("acc-phone", "/devices")
    tmux.send("acc-phone", "C-u")
    _command(tmux, "acc-phone", f"/deleteaccount '{NEW_PASSWORD}'")
    tmux.wait_for("acc-phone", "your account was deleted")

    tmux.start("acc-again", client_command(chat_server, tmp_path, "acc-again", "--name",
                                           "acc-carol", pinned=True))
    tmux.wait_for("acc-again", "Password:")
    tmux.type("acc-again", NEW_PASSWORD)
    tmux.send("acc-again", "Enter")
    screen = tmux.wait_for("acc-again", "Sign-in refused")
    assert "Signed in" not in screen
