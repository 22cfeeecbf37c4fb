"""``chatproto-client register|send|send-image|tail`` against a ``twistd`` subprocess: JSON
output and the documented exit statuses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from chatproto.terminal.cli import EXIT_CODES, build_parser
from tests.terminal.conftest import CLIENT, PASSWORD, WAIT, ChatServer, free_port, png_bytes


class Cli:
    """Runs ``chatproto-client`` with a private environment and a password file."""

    def __init__(self, server: ChatServer, env: dict[str, str], tmp_path: Path) -> None:
        self.server = server
        self.env = env
        self.tmp_path = tmp_path
        self.password_file = tmp_path / "password"
        self.password_file.write_text(PASSWORD + "\n")

    def args(self, command: str, name: str, *extra: str) -> list[str]:
        return [CLIENT, command, "--server", self.server.endpoint, "--name", name,
                "--password-file", str(self.password_file),
                "--server-fingerprint", self.server.fingerprint,
                "--state-dir", str(self.tmp_path / f"state-{name}"),
                "--downloads", str(self.tmp_path / f"downloads-{name}"), *extra]

    def run(self, command: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.args(command, name, *extra), capture_output=True, text=True,
                              env=self.env, timeout=WAIT)


@pytest.fixture
def cli(chat_server: ChatServer, client_env: dict[str, str], tmp_path: Path) -> Cli:
    """The command line, pinned to the test server."""
    return Cli(chat_server, client_env, tmp_path)


def test_help_documents_the_exit_codes() -> None:
    """--help of the program and of each command lists every exit status."""
    parser = build_parser()
    text = parser.format_help()
    for code, meaning in EXIT_CODES.items():
        assert f"  {code}  {meaning}" in text
    sub = build_parser()._subparsers._group_actions[0].choices["send"]  # type: ignore[union-attr]
    assert "exit status" in sub.format_help()


def test_send_and_tail_text_and_image(cli: Cli) -> None:
    """Register two users; a text and an image sent with ``send``/``send-image`` come out of
    ``tail --count 2`` as JSON lines, the image saved to the downloads folder."""
    assert cli.run("register", "erin").returncode == 0
    assert cli.run("register", "frank").returncode == 0
    sent = cli.run("send", "erin", "--to", "frank", "hello", "frank")
    assert sent.returncode == 0, sent.stderr
    ack = json.loads(sent.stdout)
    assert ack["group_id"] == 0 and ack["conv_seq"] >= 1
    image = cli.tmp_path / "pic.png"
    image.write_bytes(png_bytes())
    sent = cli.run("send-image", "erin", "--to", "frank", str(image))
    assert sent.returncode == 0, sent.stderr

    tail = cli.run("tail", "frank", "--count", "2")
    assert tail.returncode == 0, tail.stderr
    text, picture = (json.loads(line) for line in tail.stdout.splitlines())
    assert text["type"] == "text" and text["text"] == "hello frank"
    assert (text["from"], text["to"], text["group_id"]) == ("erin", "frank", 0)
    assert text["user_seq"] < picture["user_seq"] and text["time"].endswith("Z")
    assert picture["type"] == "image" and picture["mime"] == "image/png"
    assert Path(picture["image_path"]).read_bytes() == image.read_bytes()

    # The device acknowledged them: a second tail starts after them, --since 0 from the start.
    again = cli.run("tail", "frank", "--count", "1", "--since", "0")
    assert json.loads(again.stdout)["text"] == "hello frank"


def test_tail_streams_until_terminated(cli: Cli) -> None:
    """``tail`` prints live messages as they arrive and exits 0 on SIGTERM."""
    assert cli.run("register", "gina").returncode == 0
    assert cli.run("register", "hank").returncode == 0
    proc = subprocess.Popen(cli.args("tail", "hank"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli.env)
    try:
        for n in range(3):
            assert cli.run("send", "gina", "--to", "hank", f"live {n}").returncode == 0
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert [x["text"] for x in lines] == ["live 0", "live 1", "live 2"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=WAIT) == 0


def test_exit_codes(cli: Cli, chat_server: ChatServer) -> None:
    """Unknown recipient → 1 with the code; usage → 2; nobody listening → 3; wrong password
    → 4; a fingerprint that does not match → 5, naming both fingerprints."""
    assert cli.run("register", "ivan").returncode == 0
    refused = cli.run("send", "ivan", "--to", "nobody-here", "hi")
    assert refused.returncode == 1
    assert "UNKNOWN_USER" in refused.stderr and "nobody-here" in refused.stderr
    taken = cli.run("register", "ivan")
    assert taken.returncode == 1 and "NAME_TAKEN" in taken.stderr

    usage = subprocess.run([CLIENT, "send", "hi"], capture_output=True, text=True,
                           env=cli.env, timeout=WAIT)
    assert usage.returncode == 2
    no_password = subprocess.run(
        [CLIENT, "send", "--server", chat_server.endpoint, "--name", "ivan", "--to", "x", "hi"],
        capture_output=True, text=True, env=cli.env, timeout=WAIT, stdin=subprocess.DEVNULL)
    assert no_password.returncode == 2 and "password" in no_password.stderr

    args = cli.args("send", "ivan", "--to", "ivan", "hi")
    args[args.index(chat_server.endpoint)] = f"tcp:127.0.0.1:{free_port()}"
    down = subprocess.run(args, capture_output=True, text=True, env=cli.env, timeout=WAIT)
    assert down.returncode == 3

    cli.password_file.write_text("not the password\n")
    bad = cli.run("send", "ivan", "--to", "ivan", "hi")
    assert bad.returncode == 4 and "AUTH_FAILED" in bad.stderr

    wrong = "SHA256:" + "B" * 43
    args = cli.args("send", "ivan", "--to", "ivan", "hi")
    args[args.index(chat_server.fingerprint)] = wrong
    mismatch = subprocess.run(args, capture_output=True, text=True, env=cli.env, timeout=WAIT)
    assert mismatch.returncode == 5
    assert wrong in mismatch.stderr and chat_server.fingerprint in mismatch.stderr


def test_unknown_server_needs_a_decision(cli: Cli, chat_server: ChatServer) -> None:
    """Without a pin or --server-fingerprint a script is refused (5); --trust-on-first-use
    pins the key in the known servers file, and later runs use the pin."""
    pins = cli.tmp_path / "pins"
    base = [CLIENT, "register", "--server", chat_server.endpoint, "--name", "judy",
            "--password-file", str(cli.password_file), "--known-servers", str(pins),
            "--state-dir", str(cli.tmp_path / "state-judy")]
    refused = subprocess.run(base, capture_output=True, text=True, env=cli.env, timeout=WAIT)
    assert refused.returncode == 5 and "--trust-on-first-use" in refused.stderr
    trusted = subprocess.run([*base, "--trust-on-first-use"], capture_output=True, text=True,
                             env=cli.env, timeout=WAIT)
    assert trusted.returncode == 0, trusted.stderr
    assert chat_server.fingerprint in pins.read_text()
    send = [*base, "--to", "judy", "note to self"]
    send[1] = "send"
    assert subprocess.run(send, capture_output=True, text=True, env=cli.env,
                          timeout=WAIT).returncode == 0


def test_tail_count_acknowledges_only_what_it_printed(cli: Cli) -> None:
    """Three messages (a text, an image, a text): ``tail --count 1`` prints and acknowledges
    the first only, so the next ``tail --count 2`` prints the image (saved) and the last
    text, and a third ``tail`` has nothing left before a new message."""
    assert cli.run("register", "kim").returncode == 0
    assert cli.run("register", "lou").returncode == 0
    image = cli.tmp_path / "pic.png"
    image.write_bytes(png_bytes())
    assert cli.run("send", "kim", "--to", "lou", "one").returncode == 0
    assert cli.run("send-image", "kim", "--to", "lou", str(image)).returncode == 0
    assert cli.run("send", "kim", "--to", "lou", "three").returncode == 0

    first = cli.run("tail", "lou", "--count", "1")
    assert first.returncode == 0, first.stderr
    assert [json.loads(x)["text"] for x in first.stdout.splitlines()] == ["one"]
    assert not (cli.tmp_path / "downloads-lou").exists()  # the image was not saved yet

    second = cli.run("tail", "lou", "--count", "2")
    assert second.returncode == 0, second.stderr
    picture, text = (json.loads(x) for x in second.stdout.splitlines())
    assert picture["type"] == "image" and text["text"] == "three"
    assert Path(picture["image_path"]).read_bytes() == image.read_bytes()

    assert cli.run("send", "kim", "--to", "lou", "four").returncode == 0
    third = cli.run("tail", "lou", "--count", "1")
    assert [json.loads(x)["text"] for x in third.stdout.splitlines()] == ["four"]


def test_tail_leaves_out_the_accounts_own_messages(cli: Cli) -> None:
    """``tail`` prints what others sent, not the account's own messages (a bot reacting to
    its own output would loop); ``--include-own`` includes them."""
    assert cli.run("register", "mia").returncode == 0
    assert cli.run("register", "ned").returncode == 0
    assert cli.run("send", "ned", "--to", "mia", "from ned").returncode == 0
    assert cli.run("send", "mia", "--to", "ned", "from mia").returncode == 0
    assert cli.run("send", "ned", "--to", "mia", "ned again").returncode == 0

    mine = cli.run("tail", "ned", "--count", "1", "--since", "0")
    assert [json.loads(x)["text"] for x in mine.stdout.splitlines()] == ["from mia"]
    every = cli.run("tail", "ned", "--count", "3", "--since", "0", "--include-own")
    assert [json.loads(x)["from"] for x in every.stdout.splitlines()] == ["ned", "mia", "ned"]


def test_usage_errors_exit_2_before_connecting(cli: Cli, chat_server: ChatServer) -> None:
    """A malformed --server, an image over the size limit, a file that is not an image and
    an empty text are usage errors (2), found before connecting or uploading."""
    assert cli.run("register", "otto").returncode == 0
    args = cli.args("send", "otto", "--to", "otto", "hi")
    args[args.index(chat_server.endpoint)] = "foo:bar"
    bad_server = subprocess.run(args, capture_output=True, text=True, env=cli.env,
                                timeout=WAIT)
    assert bad_server.returncode == 2 and "invalid --server 'foo:bar'" in bad_server.stderr

    big = cli.tmp_path / "big.png"
    with open(big, "wb") as f:
        f.write(png_bytes())
        f.truncate(20 * 1024 * 1024)
    too_large = cli.run("send-image", "otto", "--to", "otto", str(big))
    assert too_large.returncode == 2 and "at most 10.0 MiB" in too_large.stderr
    text = cli.tmp_path / "notes.txt"
    text.write_text("not a picture")
    not_image = cli.run("send-image", "otto", "--to", "otto", str(text))
    assert not_image.returncode == 2 and "is not an image" in not_image.stderr
    empty = cli.run("send", "otto", "--to", "otto", "")
    assert empty.returncode == 2 and "empty" in empty.stderr
    for result in (bad_server, too_large, not_image, empty):
        assert "Traceback" not in result.stderr
