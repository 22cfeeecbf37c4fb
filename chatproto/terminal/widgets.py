"""The urwid pieces of the terminal client: colours, a window line, the command line with the
readline keys people's fingers know, and the key filter in front of every screen."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import urwid

from chatproto.terminal.model import MARKS, Line

__all__ = ["PALETTE", "InputLine", "KeyView", "line_widget", "nick_attr", "render_prefix"]

NICK_COLOURS = ["light red", "light green", "yellow", "light blue", "light magenta",
                "light cyan", "dark red", "dark green", "brown", "dark magenta", "dark cyan"]

PALETTE: list[tuple[str, str, str]] = [
    ("header", "white", "dark blue"),
    ("status", "white", "dark blue"),
    ("status_em", "yellow,bold", "dark blue"),
    ("time", "dark gray", ""),
    ("dim", "dark gray", ""),
    ("info", "dark cyan", ""),
    ("error", "light red,bold", ""),
    ("presence", "dark green", ""),
    ("event", "brown", ""),
    ("image", "light magenta", ""),
    ("mark", "dark gray", ""),
    ("mark_read", "dark green", ""),
    ("mark_failed", "light red", ""),
    ("me", "white,bold", ""),
    ("typing", "dark gray", ""),
    ("online", "light green", ""),
    ("offline", "dark gray", ""),
    ("win", "light gray", ""),
    ("win_active", "black", "light gray"),
    ("win_unread", "yellow,bold", ""),
    ("win_highlight", "light magenta,bold", ""),
    ("prompt", "light cyan", ""),
    ("title", "white,bold", ""),
    ("alert", "white,bold", "dark red"),
    ("field", "white", "dark gray"),
] + [(f"nick{i}", colour, "") for i, colour in enumerate(NICK_COLOURS)]

Size = tuple[()] | tuple[int] | tuple[int, int]


def nick_attr(name: str) -> str:
    """A stable colour for a nick."""
    return f"nick{zlib.crc32(name.encode()) % len(NICK_COLOURS)}"


def render_prefix(line: Line, me: str) -> list[Any]:
    """The markup before a line's text: the time and the sender (or the notice marker)."""
    out: list[Any] = [("time", time.strftime("%H:%M ", time.localtime(line.time_ms / 1000)))]
    if line.kind == "info":
        attr = {"error": "error", "presence": "presence"}.get(line.level, "info")
        return [*out, (attr, "-!- ")]
    if line.kind == "event":
        return [*out, ("event", "-*- ")]
    sender = line.sender or "?"
    return [*out, ("dim", "<"), ("me" if sender == me else nick_attr(sender), sender),
            ("dim", "> ")]


def render_text(line: Line) -> list[Any]:
    """The markup of a line's text and, for our own messages, its mark."""
    if line.kind == "info":
        return [({"error": "error", "presence": "presence"}.get(line.level, "info"), line.text)]
    if line.kind == "event":
        return [("event", line.text)]
    out: list[Any] = [("image", "[image] "), line.text] if line.kind == "image" else [line.text]
    if line.status:
        attr = {"read": "mark_read", "failed": "mark_failed"}.get(line.status, "mark")
        out.append((attr, f" {MARKS[line.status]}"))
    return out


def line_widget(line: Line, me: str) -> urwid.Columns:
    """One window line; a long text wraps indented under its first character, not under the
    time."""
    return urwid.Columns([("pack", urwid.Text(render_prefix(line, me))),
                          urwid.Text(render_text(line))])


def _word_left(text: str, pos: int) -> int:
    """The start of the word before ``pos`` (readline's backward-word)."""
    while pos > 0 and not text[pos - 1].isalnum():
        pos -= 1
    while pos > 0 and text[pos - 1].isalnum():
        pos -= 1
    return pos


def _word_right(text: str, pos: int) -> int:
    """The end of the word after ``pos`` (readline's forward-word)."""
    while pos < len(text) and not text[pos].isalnum():
        pos += 1
    while pos < len(text) and text[pos].isalnum():
        pos += 1
    return pos


class InputLine(urwid.Edit):
    """The command line: Tab completes, Up/Down recall earlier lines, and the readline keys:
    Ctrl-A / Ctrl-E (start / end), Ctrl-U (delete to the start), Ctrl-K (delete to the end),
    Ctrl-W (delete the word before the cursor), Alt-B / Alt-F (word back / forward), Esc
    (clear the line).

    :attr:`recalling` is True while a recalled line is being put in, so whoever listens to
    changes can tell it from typing.
    """

    def __init__(self, completer: Callable[[str, int], Sequence[tuple[str, int]]]) -> None:
        super().__init__("", text_completer=completer)
        self.recall: list[str] = []
        self.recall_index = 0
        self.recalling = False

    def remember(self, text: str) -> None:
        """Add a submitted line to the recall list."""
        if text and (not self.recall or self.recall[-1] != text):
            self.recall.append(text)
        self.recall_index = len(self.recall)

    def replace_text(self, text: str, pos: int | None = None) -> None:
        """Set the text as a recall (not typing), cursor at ``pos`` (default the end)."""
        self.recalling = True
        try:
            self.set_edit_text(text)
        finally:
            self.recalling = False
        self.set_edit_pos(len(text) if pos is None else pos)

    def keypress(self, size: Size, key: str) -> str | None:
        """Recall and the readline keys; the rest is the Edit's."""
        text, pos = self.edit_text, self.edit_pos
        if key in ("up", "down"):
            if not self.recall:
                return None
            step = -1 if key == "up" else 1
            self.recall_index = max(0, min(len(self.recall), self.recall_index + step))
            recalled = self.recall[self.recall_index] \
                if self.recall_index < len(self.recall) else ""
            self.replace_text(recalled)
            return None
        if key == "ctrl a":
            self.set_edit_pos(0)
        elif key == "ctrl e":
            self.set_edit_pos(len(text))
        elif key == "ctrl u":
            self.set_edit_text(text[pos:])
            self.set_edit_pos(0)
        elif key == "ctrl k":
            self.set_edit_text(text[:pos])
        elif key == "ctrl w":
            start = _word_left(text, pos)
            self.set_edit_text(text[:start] + text[pos:])
            self.set_edit_pos(start)
        elif key == "meta b":
            self.set_edit_pos(_word_left(text, pos))
        elif key == "meta f":
            self.set_edit_pos(_word_right(text, pos))
        elif key == "esc":
            self.set_edit_text("")
        else:
            return super().keypress(size, key)  # type: ignore[arg-type]  # a flow widget
        return None


class KeyView(urwid.WidgetWrap[urwid.Widget]):
    """Gives global keys to a handler before the wrapped widget sees them."""

    def __init__(self, widget: urwid.Widget, handler: Callable[[str], bool]) -> None:
        super().__init__(widget)
        self.handler = handler

    def set(self, widget: urwid.Widget) -> None:
        """Show another widget."""
        self._w = widget

    def selectable(self) -> bool:
        """Always: the global keys must arrive even on screens of plain text."""
        return True

    def keypress(self, size: Size, key: str) -> str | None:
        """Global keys first."""
        if self.handler(key):
            return None
        if not self._w.selectable():
            return key
        result: str | None = self._w.keypress(size, key)
        return result
