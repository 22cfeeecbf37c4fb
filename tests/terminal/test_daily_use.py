"""The terminal client as people use it day to day, driven in tmux against a real server:
quitting with Ctrl-Q, line editing, group windows, kept marks, leaving groups, local image
checks, reconnecting."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from tests.terminal.conftest import (
    CLIENT,
    PASSWORD,
    WAIT,
    ChatServer,
    ConnectionCutter,
    Tmux,
    client_command,
    fill_login,
    start_server,
    stop_server,
)


def _client(server: ChatServer, tmp_path: Path, who: str, *extra: str) -> list[str]:
    return client_command(server, tmp_path, who, *extra, pinned=True)


def _register(server: ChatServer, tmp_path: Path, env: dict[str, str], *names: str) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    for name in names:
        result = subprocess.run(
            [CLIENT, "register", "--server", server.endpoint, "--name", name,
             "--password-file", str(password), "--server-fingerprint", server.fingerprint,
             "--state-dir", str(tmp_path / f"cli-{name}")],
            capture_output=True, text=True, env=env, timeout=WAIT)
        assert result.returncode == 0, result.stderr


def _sign_in(tmux: Tmux, who: str, name: str | None) -> None:
    fill_login(tmux, who, name, "Enter")
    tmux.wait_for(who, "Signed in as")


def _command(tmux: Tmux, who: str, line: str) -> None:
    tmux.type(who, line)
    tmux.send(who, "Enter")


def test_ctrl_q_quits_and_the_line_edits_like_readline(chat_server: ChatServer, tmux: Tmux,
                                                       tmp_path: Path,
                                                       client_env: dict[str, str]) -> None:
    """With the terminal's flow control on (ixon), Ctrl-Q still quits (status 0) and the
    setting is restored afterwards; Ctrl-U clears the line, so "/win 1" typed after it is a
    command and the old text is never sent."""
    _register(chat_server, tmp_path, client_env, "abe", "bea")
    line = " ".join(shlex.quote(a) for a in _client(chat_server, tmp_path, "abe", "--name",
                                                     "abe"))
    tmux.start("abe", ["sh", "-c", f"stty ixon; {line}; echo CLIENT $?; stty -a"])
    _sign_in(tmux, "abe", None)
    _command(tmux, "abe", "/msg bea")
    tmux.wait_for("abe", "[2:bea]")
    tmux.type("abe", "some old text")
    tmux.send("abe", "C-u")
    _command(tmux, "abe", "/win 1")
    tmux.wait_for("abe", "[1:status]")
    tmux.type("abe", "one two three")
    tmux.send("abe", "C-w", "C-a", "M-f")
    tmux.type("abe", "X")
    tmux.send("abe", "C-e")
    tmux.type("abe", "!")
    tmux.wait_for("abe", "oneX two !")
    tmux.send("abe", "C-q")
    screen = tmux.wait_for("abe", "CLIENT 0")
    assert "some old text" not in screen.split("CLIENT 0")[0].replace("\n", "")
    settings = screen.split("CLIENT 0")[1].split()
    assert "ixon" in settings and "-ixon" not in settings


def test_groups_marks_leaving_and_images(chat_server: ChatServer, tmux: Tmux, tmp_path: Path,
                                         client_env: dict[str, str]) -> None:
    """An invited member's group window shows the members at once; a "read" mark survives a
    restart (and a closed window); the sign-in name is pre-filled on restart; /image of a
    non-image is refused locally with one line; /group leave closes the group's window for
    good and /close closes the window it is typed in."""
    _register(chat_server, tmp_path, client_env, "cleo", "dirk")
    tmux.start("cleo", _client(chat_server, tmp_path, "cleo", "--name", "cleo"))
    _sign_in(tmux, "cleo", None)
    tmux.start("dirk", _client(chat_server, tmp_path, "dirk"))
    _sign_in(tmux, "dirk", "dirk")

    _command(tmux, "cleo", "/group create dirk")
    tmux.wait_for("cleo", "cleo created the group")
    tmux.wait_for("dirk", "2 # cleo, dirk")  # the window list
    tmux.send("dirk", "M-2")
    tmux.wait_for("dirk", "(group ")
    tmux.wait_for("dirk", "cleo, ●dirk")  # the topic lists the members

    _command(tmux, "dirk", "/msg cleo hi cleo")
    tmux.wait_for("dirk", "hi cleo ✓")
    tmux.wait_for("cleo", "(1)")
    tmux.send("cleo", "M-3")
    tmux.wait_for("cleo", "<dirk> hi cleo")
    tmux.wait_for("dirk", "hi cleo ✓✓ read")

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    _command(tmux, "dirk", f"/image {notes}")
    screen = tmux.wait_for("dirk", "(PNG, JPEG, GIF or WebP)")  # "... is not an image (...)"
    assert screen.count("(PNG, JPEG, GIF or WebP)") == 1 and "✗" not in screen

    tmux.send("dirk", "M-2")
    tmux.wait_for("dirk", "[2:#cleo, dirk]")
    tmux.send("cleo", "M-2")
    tmux.wait_for("cleo", "[2:#cleo, dirk]")
    _command(tmux, "dirk", "/group leave")
    tmux.wait_for("cleo", "dirk left the group")
    _command(tmux, "dirk", "/who")  # a round trip: our own LEFT event arrived before it
    screen = tmux.wait_for("dirk", "cleo ● online")
    assert "cleo, dirk" not in screen and "NOT_A_MEMBER" not in screen
    assert "[1:status]" in screen and " 2 ● cleo" in screen  # focus before, cleo renumbered

    tmux.send("dirk", "M-2")
    tmux.wait_for("dirk", "[2:cleo]")
    _command(tmux, "dirk", "/close")
    screen = tmux.wait_for("dirk", "[1:status]")
    assert " 2 ● cleo" not in screen

    _command(tmux, "dirk", "/quit")
    tmux.wait_for("dirk", "EXITED 0")
    tmux.start("dirk2", _client(chat_server, tmp_path, "dirk"))
    screen = tmux.wait_for("dirk2", "Password:")
    assert "Name:     dirk" in screen
    tmux.type("dirk2", PASSWORD)
    tmux.send("dirk2", "Enter")
    tmux.wait_for("dirk2", "Signed in as dirk")
    _command(tmux, "dirk2", "/msg cleo")
    tmux.wait_for("dirk2", "hi cleo ✓✓ read")
    assert "cleo, dirk" not in tmux.capture("dirk2")


def test_status_line_after_a_reconnection(tmux: Tmux, tmp_path: Path,
                                          client_env: dict[str, str]) -> None:
    """The server restarts: the client says reconnecting, then resumed, then connected again;
    a message typed during the outage is sent after it, and the lag shown is not the
    outage's length; Up recalls that line without sending "is typing"."""
    directory = tmp_path / "server"
    directory.mkdir()
    server = start_server(directory)
    try:
        _register(server, tmp_path, client_env, "eve", "fay")
        tmux.start("eve", _client(server, tmp_path, "eve", "--name", "eve"))
        _sign_in(tmux, "eve", None)
        tmux.start("fay", _client(server, tmp_path, "fay", "--name", "fay"))
        _sign_in(tmux, "fay", None)
        _command(tmux, "fay", "/msg eve")
        tmux.wait_for("fay", "[2:eve]")
        _command(tmux, "eve", "/msg fay")
        tmux.wait_for("eve", "[2:fay]")

        stop_server(server)
        tmux.wait_for("eve", "[reconnecting]")
        _command(tmux, "eve", "written while away")
        tmux.wait_for("eve", "[1 queued]")
        server = start_server(directory, server.port)
        tmux.wait_for("eve", "written while away ✓", timeout=2 * WAIT)
        tmux.wait_for("eve", "[connected]", timeout=2 * WAIT)
        screen = tmux.wait_for("eve", "[lag ")
        lag = int(screen.split("[lag ")[1].split(" ms]")[0])
        assert lag < 2000, screen
        tmux.wait_for("fay", "<eve> written while away", timeout=2 * WAIT)

        tmux.send("eve", "Up")
        tmux.wait_for("eve", "[fay] written while away")
        _command(tmux, "fay", "/who")
        screen = tmux.wait_for("fay", "eve ● online")
        assert "is typing" not in screen
    finally:
        stop_server(server)


def test_messages_replayed_into_the_open_window_are_marked_read(
        chat_server: ChatServer, tmux: Tmux, tmp_path: Path,
        client_env: dict[str, str]) -> None:
    """Gil's connection is cut while Hal writes to him; when Gil's client reconnects by
    itself, the message is replayed into the window he has open and marked read at once
    (Hal sees "✓✓ read" without Gil switching windows)."""
    _register(chat_server, tmp_path, client_env, "gil", "hal")
    cutter = ConnectionCutter(chat_server.port)
    try:
        gil = _client(chat_server, tmp_path, "gil", "--name", "gil")
        gil[gil.index(chat_server.endpoint)] = cutter.endpoint
        tmux.start("gil", gil)
        _sign_in(tmux, "gil", None)
        tmux.start("hal", _client(chat_server, tmp_path, "hal", "--name", "hal"))
        _sign_in(tmux, "hal", None)
        _command(tmux, "gil", "/msg hal")
        tmux.wait_for("gil", "[2:hal]")
        _command(tmux, "hal", "/msg gil")
        tmux.wait_for("hal", "[2:gil]")

        cutter.cut()
        tmux.wait_for("gil", "[reconnecting]")
        _command(tmux, "hal", "while you were away")
        tmux.wait_for("hal", "while you were away ✓")
        cutter.resume()
        tmux.wait_for("gil", "<hal> while you were away", timeout=2 * WAIT)
        tmux.wait_for("hal", "while you were away ✓✓ read", timeout=2 * WAIT)
    finally:
        cutter.close()


def test_a_late_yes_to_the_trust_question_still_signs_in(chat_server: ChatServer, tmux: Tmux,
                                                         tmp_path: Path) -> None:
    """Comparing a fingerprint takes longer than the server's handshake timeout: the server
    closes the connection while the question is shown. A yes after that still pins the key
    and the registration goes on (on a new connection)."""
    closed_before = chat_server.log.read_text().count("IDLE_TIMEOUT")
    tmux.start("ida", [CLIENT, "--server", chat_server.endpoint,
                       "--state-dir", str(tmp_path / "state-ida")])
    tmux.wait_for("ida", "Password:")
    tmux.type("ida", "ida")
    tmux.send("ida", "Tab")
    tmux.type("ida", PASSWORD)
    tmux.send("ida", "C-r")
    tmux.wait_for("ida", "[y/n]")
    deadline = time.monotonic() + WAIT
    while chat_server.log.read_text().count("IDLE_TIMEOUT") == closed_before:
        assert time.monotonic() < deadline, "the server did not time the handshake out"
        time.sleep(0.1)  # polling the server's log: there is nothing to wait on
    tmux.send("ida", "y")
    tmux.wait_for("ida", "Signed in as ida")
    known = tmp_path / "config" / "chatproto" / "known_servers"
    assert chat_server.fingerprint in known.read_text()


def test_a_bots_scripted_sends_add_no_presence_lines(chat_server: ChatServer, tmux: Tmux,
                                                     tmp_path: Path,
                                                     client_env: dict[str, str]) -> None:
    """Each scripted ``send`` is a short session; the recipient's window shows the messages
    without an "is online" / "went offline" pair per send. A long message wraps indented
    under its text."""
    _register(chat_server, tmp_path, client_env, "jo", "kbot")
    tmux.start("jo", _client(chat_server, tmp_path, "jo", "--name", "jo"), width=80)
    _sign_in(tmux, "jo", None)
    _command(tmux, "jo", "/msg kbot")
    tmux.wait_for("jo", "[2:kbot]")
    password = tmp_path / "password"
    long_text = "build " + " ".join(f"step{n}" for n in range(30)) + " is green"
    for text in ("build 1 is green", "build 2 is green", long_text):
        sent = subprocess.run(
            [CLIENT, "send", "--server", chat_server.endpoint, "--name", "kbot",
             "--password-file", str(password), "--server-fingerprint", chat_server.fingerprint,
             "--state-dir", str(tmp_path / "cli-kbot"), "--to", "jo", text],
            capture_output=True, text=True, env=client_env, timeout=WAIT)
        assert sent.returncode == 0, sent.stderr
    screen = tmux.wait_for("jo", "is green", timeout=WAIT)
    screen = tmux.wait_for("jo", "step29 is green")
    assert "<kbot> build 2 is green" in screen
    assert "is online" not in screen and "went offline" not in screen
    rows = [row.split("│", 1)[1] for row in screen.splitlines() if "│" in row]
    first = next(i for i, row in enumerate(rows) if "<kbot> build step0" in row)
    indent = rows[first].index("build")
    assert rows[first + 1][:indent].strip() == "" and rows[first + 1][indent:].strip()
