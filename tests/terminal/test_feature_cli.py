"""The scripting commands of the everyday features against a ``twistd`` subprocess: edit,
delete, conversations, search, block, devices, change-password and delete-account."""

from __future__ import annotations

import json
from pathlib import Path

from tests.terminal.test_cli import Cli, cli  # noqa: F401 - the fixture

__all__ = ["cli"]


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_edit_delete_conversations_and_search(cli: Cli) -> None:  # noqa: F811
    """A message edited and another deleted by their conv_seq; ``conversations`` shows the
    last entry and the unread count; ``search`` finds the edited text as JSON lines."""
    assert cli.run("register", "fc-gina").returncode == 0
    assert cli.run("register", "fc-hugo").returncode == 0
    first = json.loads(cli.run("send", "fc-gina", "--to", "fc-hugo", "teh plan").stdout)
    second = json.loads(cli.run("send", "fc-gina", "--to", "fc-hugo", "oops").stdout)
    edited = cli.run("edit", "fc-gina", "--to", "fc-hugo", str(first["conv_seq"]), "the plan")
    assert edited.returncode == 0, edited.stderr
    assert json.loads(edited.stdout)["conv_seq"] == 3
    deleted = cli.run("delete", "fc-gina", "--to", "fc-hugo", str(second["conv_seq"]))
    assert deleted.returncode == 0, deleted.stderr
    late = cli.run("edit", "fc-gina", "--to", "fc-hugo", str(second["conv_seq"]), "x")
    assert late.returncode != 0 and "UNKNOWN_MESSAGE" in late.stderr

    [conv] = _json_lines(cli.run("conversations", "fc-hugo").stdout)
    assert (conv["peer"], conv["unread"], conv["last_seq"], conv["last_content_type"]) == (
        "fc-gina", 2, 4, 5)
    hits = _json_lines(cli.run("search", "fc-hugo", "plan").stdout)
    assert [(h["sender"], h["text"], h["conv_seq"]) for h in hits] == [
        ("fc-gina", "the plan", 1)]
    assert _json_lines(cli.run("search", "fc-hugo", "oops").stdout) == []


def test_block_devices_password_and_delete_account(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    """``block`` makes the blocked user's ``send`` fail as for an unknown user;
    ``devices`` lists this device; after ``change-password`` only the new password signs
    in; ``delete-account --yes`` deletes the account, which then cannot sign in."""
    assert cli.run("register", "fc-ivy").returncode == 0
    assert cli.run("register", "fc-jack").returncode == 0
    assert cli.run("block", "fc-ivy", "fc-jack").returncode == 0
    assert json.loads(cli.run("blocked", "fc-ivy").stdout) == ["fc-jack"]
    refused = cli.run("send", "fc-jack", "--to", "fc-ivy", "hi")
    assert refused.returncode != 0 and "UNKNOWN_USER" in refused.stderr
    assert cli.run("unblock", "fc-ivy", "fc-jack").returncode == 0
    assert cli.run("send", "fc-jack", "--to", "fc-ivy", "hi").returncode == 0
    [device] = _json_lines(cli.run("devices", "fc-ivy").stdout)
    assert device["current"] is True and len(str(device["device_id"])) == 32

    new_password = tmp_path / "new-password"
    new_password.write_text("the new long password\n")
    changed = cli.run("change-password", "fc-ivy", "--new-password-file", str(new_password))
    assert changed.returncode == 0, changed.stderr
    assert cli.run("devices", "fc-ivy").returncode == 4  # the old password: refused
    cli.password_file.write_text("the new long password\n")
    assert cli.run("delete-account", "fc-ivy").returncode == 2  # no --yes
    deleted = cli.run("delete-account", "fc-ivy", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert cli.run("devices", "fc-ivy").returncode == 4


def test_send_file_tail_and_fetch_file(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    """``send-file`` sends any file; ``tail`` prints it as a file message (and an edit as an
    edit); ``fetch-file`` writes the identical bytes, refusing to overwrite."""
    assert cli.run("register", "fc-kim").returncode == 0
    assert cli.run("register", "fc-lou").returncode == 0
    source = tmp_path / "data.csv"
    source.write_bytes(b"a,b\n1,2\n" * 100_000)
    sent = cli.run("send-file", "fc-kim", "--to", "fc-lou", str(source))
    assert sent.returncode == 0, sent.stderr
    seq = json.loads(sent.stdout)["conv_seq"]
    note = json.loads(cli.run("send", "fc-kim", "--to", "fc-lou", "see teh file").stdout)
    assert cli.run("edit", "fc-kim", "--to", "fc-lou", str(note["conv_seq"]),
                   "see the file").returncode == 0
    tail = cli.run("tail", "fc-lou", "--count", "3")
    file_msg, _, edit = _json_lines(tail.stdout)
    assert (file_msg["type"], file_msg["name"], file_msg["mime"], file_msg["size"]) == (
        "file", "data.csv", "text/csv", source.stat().st_size)
    assert (edit["type"], edit["target_seq"], edit["text"]) == (
        "edit", note["conv_seq"], "see the file")
    output = tmp_path / "fetched.csv"
    fetched = cli.run("fetch-file", "fc-lou", "--to", "fc-kim", str(seq), "--output",
                      str(output))
    assert fetched.returncode == 0, fetched.stderr
    assert output.read_bytes() == source.read_bytes()
    assert json.loads(fetched.stdout)["sha256"] == file_msg["sha256"]
    again = cli.run("fetch-file", "fc-lou", "--to", "fc-kim", str(seq), "--output",
                    str(output))
    assert again.returncode == 2
