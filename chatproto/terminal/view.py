"""The main screen of the terminal client, drawn from the model: the topic, the window list,
the open window's lines, who is typing, the status line and the command line::

    ┌ topic: the window's peer and presence, or the group and its members ───────┐
    │ window list │ 14:02 <bob> hi ✓✓                                            │
    │ 1 status    │ 14:03 <alice> hello ✓✓ read                                  │
    │ 2 ● bob (2) │                                                              │
    ├─────────────┴──────────────────────────────────────────────────────────────┤
    │ bob is typing…                                                             │
    │ [14:03] [alice] [connected] [2:bob] [act: 3] [lag 2 ms]                    │
    │ [bob] the input line, /help for commands, Tab completes                    │
    └────────────────────────────────────────────────────────────────────────────┘
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import urwid

from chatproto.terminal.model import ChatModel, Conversation
from chatproto.terminal.presentation import last_seen_text
from chatproto.terminal.widgets import InputLine, line_widget

__all__ = ["MainView", "StatusInfo"]


@dataclass
class StatusInfo:
    """What the status line shows besides the model."""

    server: str
    state: str
    lag_ms: int | None
    queued: int


class MainView:
    """The widgets of the main screen.

    Args:
        completer: The command line's Tab completion.
    """

    def __init__(self, completer: Callable[[str, int], Sequence[tuple[str, int]]]) -> None:
        self.topic = urwid.Text("")
        self.window_list: urwid.SimpleFocusListWalker[urwid.Columns] = \
            urwid.SimpleFocusListWalker([])
        self.messages: urwid.SimpleFocusListWalker[urwid.Columns] = \
            urwid.SimpleFocusListWalker([])
        self.message_box = urwid.ListBox(self.messages)
        #: Keep the last line in view (False while the user scrolled up).
        self.follow = True
        self.typing_text = urwid.Text("")
        self.status_text = urwid.Text("")
        self.input = InputLine(completer)
        sidebar = urwid.ListBox(self.window_list)
        rule = urwid.AttrMap(urwid.SolidFill("│"), "dim")
        body = urwid.Columns([(18, sidebar), (1, rule), self.message_box], dividechars=1)
        footer = urwid.Pile([
            urwid.AttrMap(self.typing_text, "typing"),
            urwid.AttrMap(self.status_text, "status"),
            self.input,
        ])
        self.widget = urwid.Frame(body, header=urwid.AttrMap(self.topic, "header"),
                                  footer=footer, focus_part="footer")
        self._shown: tuple[Any, int] | None = None

    def reset(self) -> None:
        """Forget what is drawn (a new model)."""
        self._shown = None

    def scroll(self, delta: int) -> bool:
        """Scroll the open window; False if it is at the top already (load older lines)."""
        if not self.messages:
            return delta > 0
        position = self.message_box.focus_position
        if delta < 0 and position == 0:
            return False
        target = max(0, min(len(self.messages) - 1, position + delta))
        self.message_box.set_focus(target, "above" if delta < 0 else "below")
        self.follow = target == len(self.messages) - 1
        return True

    def refresh(self, model: ChatModel, status: StatusInfo, now: float) -> None:
        """Update every widget from the model."""
        conv = model.current
        self.topic.set_text(self._topic(model, conv, status.server))
        self._refresh_window_list(model)
        shown = (conv.key, conv.version)
        if shown != self._shown:
            self._shown = shown
            self.messages[:] = [line_widget(line, model.me) for line in conv.lines]
        if self.messages and self.follow:
            self.message_box.set_focus(len(self.messages) - 1)
        typing = conv.typing_names(now)
        if typing:
            who = " and ".join(typing) if len(typing) < 3 else f"{len(typing)} people"
            self.typing_text.set_text(f" {who} {'is' if len(typing) == 1 else 'are'} typing…")
        else:
            self.typing_text.set_text("")
        self.status_text.set_text(self._status_markup(model, status))
        self.input.set_caption(("prompt", f"[{conv.title}] "))

    @staticmethod
    def _topic(model: ChatModel, conv: Conversation, server: str) -> str:
        if conv.is_status:
            return f" chatproto — {model.me} on {server}"
        if conv.is_group:
            group_id = int(conv.target)
            members = model.group_members.get(group_id)
            text = f" {conv.title} (group {group_id})"
            if members:
                text += " — " + ", ".join(
                    f"{model.presence_mark(n)}{n}".strip() for n in members)
            return text
        name = str(conv.target)
        p = model.presence.get(name)
        if p is None:
            return f" {name}"
        if p.online:
            return f" {name} ● online"
        return f" {name} ○ {last_seen_text(p.last_seen_ms, model.now_ms())}"

    def _refresh_window_list(self, model: ChatModel) -> None:
        items: list[urwid.Columns] = []
        for index, conv in enumerate(model.windows):
            if conv.is_status:
                mark = " "
            elif conv.is_group:
                mark = "#"
            else:
                mark = model.presence_mark(str(conv.target))
            title = conv.title[1:] if conv.is_group else conv.title
            label = f"{index + 1:>2} {mark} {title}"
            if index == model.active:
                attr = "win_active"
            elif conv.highlight:
                attr = "win_highlight"
            elif conv.unread:
                attr = "win_unread"
            elif mark == "●":
                attr = "online"
            else:
                attr = "win"
            row: list[Any] = [urwid.Text((attr, label), wrap="ellipsis")]
            if conv.unread:
                row.append(("pack", urwid.Text(("win_unread", f"({conv.unread})"))))
            items.append(urwid.Columns(row, dividechars=1))
        self.window_list[:] = items

    @staticmethod
    def _status_markup(model: ChatModel, status: StatusInfo) -> list[Any]:
        conv = model.current
        parts: list[Any] = [f" [{time.strftime('%H:%M')}] [", ("status_em", model.me), "] ["]
        parts += [("status_em" if status.state in ("connected", "resumed") else "alert",
                   status.state), "] "]
        parts.append(f"[{model.active + 1}:{conv.title}] ")
        active = [str(i + 1) for i, c in enumerate(model.windows) if c.unread]
        if active:
            parts += ["[act: ", ("status_em", ",".join(active)), "] "]
        if status.lag_ms is not None:
            parts.append(f"[lag {status.lag_ms} ms] ")
        if status.queued:
            parts.append(f"[{status.queued} queued] ")
        return parts
