"""The command line of the terminal client: the table of ``/commands`` (their usage and
help), parsing a submitted line, and Tab completion. No I/O, tested directly; the handlers
are in :mod:`chatproto.terminal.commands`.
"""

from __future__ import annotations

import glob
import os
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "GROUP_SUBCOMMANDS", "Command", "complete", "parse_command"]


# --- commands ------------------------------------------------------------------------------

#: Command → (arguments, help).
COMMANDS: dict[str, tuple[str, str]] = {
    "msg": ("NAME [TEXT]", "open (or start) a direct chat with NAME, optionally sending TEXT"),
    "group": ("create NAME... | add NAME... | remove NAME... | leave | members | rename TITLE",
              "create a group, change the current group's members, leave it, list them"),
    "image": ("PATH", "send an image file (PNG, JPEG, GIF, WebP) to this window"),
    "history": ("", "load older messages of this window"),
    "who": ("", "presence of your contacts (● online, ○ offline)"),
    "win": ("N|NAME", "switch window (also Alt+1..9, Ctrl-N / Ctrl-P)"),
    "close": ("", "close this window"),
    "help": ("", "this list"),
    "quit": ("", "sign out and exit"),
}
GROUP_SUBCOMMANDS = ("create", "add", "remove", "leave", "members", "rename")


@dataclass
class Command:
    """A parsed command line: ``name`` is empty for plain text."""

    name: str
    args: list[str]
    rest: str


def parse_command(text: str) -> Command:
    """Split ``/cmd args`` (``//text`` sends ``/text``); plain text has an empty name."""
    if not text.startswith("/") or text.startswith("//"):
        return Command("", [], text[1:] if text.startswith("//") else text)
    head, _, rest = text[1:].partition(" ")
    try:
        args = shlex.split(rest)
    except ValueError:
        args = rest.split()
    return Command(head.lower(), args, rest.strip())


def _common_prefix(words: Sequence[str]) -> str:
    return os.path.commonprefix(list(words)) if words else ""


def complete(text: str, pos: int, names: Iterable[str],
             list_paths: Callable[[str], list[str]] | None = None) -> list[tuple[str, int]]:
    """Completions of the word before the cursor, as ``(new_text, new_pos)`` pairs for
    urwid's ``Edit.text_completer``: command names, ``/group`` subcommands, file paths after
    ``/image``, user names elsewhere (a name first on a plain line gets ``": "``)."""
    before, after = text[:pos], text[pos:]
    start = before.rfind(" ") + 1
    word = before[start:]
    words_before = before[:start].split()
    candidates: list[str]
    suffix = " "
    if not words_before and word.startswith("/"):
        candidates = ["/" + c for c in COMMANDS if ("/" + c).startswith(word)]
    elif words_before == ["/group"]:
        candidates = [c for c in GROUP_SUBCOMMANDS if c.startswith(word)]
    elif words_before and words_before[0] == "/image":
        lister = list_paths or _list_paths
        candidates = lister(word)
        suffix = ""
    else:
        candidates = [n for n in names if n.startswith(word)]
        if not words_before:
            suffix = ": "
    if not candidates:
        return []

    def apply(word_done: str, end: str) -> tuple[str, int]:
        new_before = before[:start] + word_done + end
        return new_before + after, len(new_before)

    if len(candidates) == 1:
        only = candidates[0]
        return [apply(only, "" if only.endswith("/") else suffix)]
    prefix = _common_prefix(candidates)
    if len(prefix) > len(word):
        return [apply(prefix, "")]
    return [apply(c, "" if c.endswith("/") else suffix) for c in sorted(candidates)]


def _list_paths(word: str) -> list[str]:
    expanded = os.path.expanduser(word)
    matches = sorted(glob.glob(glob.escape(expanded) + "*"))
    out = []
    for path in matches[:200]:
        shown = word + path[len(expanded):] if path.startswith(expanded) else path
        out.append(shown + "/" if os.path.isdir(path) else shown)
    return out
