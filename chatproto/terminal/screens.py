"""The screens of the terminal client besides the chat windows: the sign-in / register form,
the first-contact trust question and the fatal messages (a changed server key)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import urwid

from chatproto.client import ServerKeyChanged
from chatproto.terminal.cli import NAME_RULE
from chatproto.wire import messages as m

__all__ = ["LoginForm", "boxed", "key_changed_text", "message_view", "trust_question"]


def boxed(widget: urwid.Widget, title: str, attr: str = "") -> urwid.Widget:
    """A centred box with a title."""
    box = urwid.LineBox(urwid.Padding(widget, left=1, right=1), title=title)
    return urwid.Filler(urwid.Padding(urwid.AttrMap(box, attr), "center", ("relative", 80)),
                        "middle")


def message_view(text: str | list[Any], attr: str = "") -> urwid.Widget:
    """A screen of text in a box."""
    return boxed(urwid.Text(text), "chatproto", attr)


def trust_question(host: str, fingerprint: str, pins: Path) -> list[Any]:
    """The first-contact question: the server's fingerprint, and ``[y/n]``."""
    return [
        ("title", "New server\n\n"),
        f"You have not connected to {host} before. Its identity key fingerprint is\n\n",
        ("title", f"    {fingerprint}\n\n"),
        "Compare it with the one the server's operator gave you (the server logs it at "
        "start; chatproto-admin prints it).\n\n",
        f"Trust this server and remember its key in {pins}? ",
        ("title", "[y/n]"),
    ]


def key_changed_text(error: ServerKeyChanged, pins: Path) -> list[Any]:
    """The "SERVER IDENTITY CHANGED" screen."""
    return [
        ("alert", " SERVER IDENTITY CHANGED "), "\n\n",
        f"The server {error.host} presented a different identity key than the one "
        "pinned for it.\n\n",
        "  pinned:    ", ("title", error.expected), "\n",
        "  presented: ", ("title", error.got), "\n\n",
        "Someone may be impersonating the server, or its key was replaced. Nothing was "
        f"sent. If the operator confirms the new key, remove the line for {error.host} "
        f"from {pins} and start again.",
    ]


class LoginForm:
    """The sign-in form: name and password; Enter signs in, Ctrl-R registers.

    Args:
        server: The server, for the title.
        name: A name to pre-fill (the password field then has the focus).
        submit: ``submit(name, password, register)`` once the fields are valid.
    """

    def __init__(self, server: str, name: str,
                 submit: Callable[[str, str, bool], None]) -> None:
        self.submit = submit
        self.name = urwid.Edit("Name:     ", name)
        self.password = urwid.Edit("Password: ", mask="*")
        urwid.connect_signal(self.name, "submit", lambda *_: self.focus_password())
        urwid.connect_signal(self.password, "submit", lambda *_: self.try_submit(False))
        self.message = urwid.Text("")
        self.form = urwid.Pile([urwid.AttrMap(self.name, "field"),
                                urwid.AttrMap(self.password, "field")])
        if name:
            self.focus_password()
        self.view = boxed(urwid.Pile([
            urwid.Text(("title", "chatproto"), align="center"),
            urwid.Text(f"server {server}", align="center"),
            urwid.Divider(),
            self.form,
            urwid.Divider(),
            urwid.Text("Enter: sign in    Ctrl-R: register a new account with this name and "
                       "password    Tab: next field    Ctrl-Q: quit"),
            urwid.Divider(),
            self.message,
        ]), "sign in")

    def focus_password(self) -> None:
        """Move to the password field."""
        self.form.focus_position = 1

    def toggle_field(self) -> None:
        """Tab: the other field."""
        self.form.focus_position = 1 - self.form.focus_position

    def say(self, message: str | tuple[str, str]) -> None:
        """Show a message under the form."""
        self.message.set_text(message)

    def clear_password(self) -> None:
        """Forget the typed password."""
        self.password.set_edit_text("")

    def try_submit(self, register: bool) -> None:
        """Check the fields, then hand them to ``submit``."""
        name = self.name.edit_text.strip()
        password = self.password.edit_text
        if m.NAME_PATTERN.fullmatch(name) is None:
            self.say(("error", NAME_RULE[0].upper() + NAME_RULE[1:] + "."))
            self.form.focus_position = 0
            return
        if not password:
            self.focus_password()
            return
        if register and len(password) < 8:
            self.say(("error", "A new password needs 8 characters or more."))
            return
        self.submit(name, password, register)
