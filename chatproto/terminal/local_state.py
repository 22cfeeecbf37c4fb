"""What the terminal client keeps in its state directory per server and user: the window list
with each window's delivery marks (so ``✓✓ read`` survives a restart), the session cursor and
outbox files' names, and the last name signed in (pre-filled on the next start)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from chatproto.terminal.model import ChatModel, Key
from chatproto.wire import messages as m

__all__ = ["LocalStore"]

_log = Logger()


class LocalStore:
    """The files of one server in ``state_dir`` (created mode 0700 when first written).

    Args:
        state_dir: The state directory.
        host: The server's ``host:port`` (part of every file name).
    """

    def __init__(self, state_dir: Path, host: str) -> None:
        self.state_dir = state_dir
        self.host = "".join(c if c.isalnum() or c in "._-" else "_" for c in host)

    def path(self, kind: str, name: str, ext: str) -> Path:
        """``STATE_DIR/KIND-HOST-NAME.EXT``."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.state_dir / f"{kind}-{self.host}-{name}.{ext}"

    def _last_name_file(self) -> Path:
        return self.state_dir / f"last-name-{self.host}"

    def last_name(self) -> str:
        """The name last signed in to this server from here ("" if none)."""
        try:
            name = self._last_name_file().read_text(encoding="utf-8").strip()
        except OSError:
            return ""
        return name if m.NAME_PATTERN.fullmatch(name) else ""

    def remember_name(self, name: str) -> None:
        """Remember the name signed in (not the password)."""
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._last_name_file().write_text(name + "\n", encoding="utf-8")
        except OSError as e:
            _log.warn("cannot save the name: {e}", e=e)

    def restore_windows(self, model: ChatModel) -> None:
        """Reopen the saved windows of ``model.me``, with their marks and left groups."""
        try:
            saved = json.loads(self.path("windows", model.me, "json").read_text())
        except (OSError, ValueError):
            return
        if not isinstance(saved, dict):
            return
        model.left_groups.update(int(g) for g in saved.get("left_groups", []))
        for entry in saved.get("marks", []):  # conversations without a window
            key: Key = ("group", int(entry["group"])) if entry.get("group") else (
                "dm", str(entry.get("dm", "")))
            model.marks[key] = (int(entry.get("delivered", 0)), int(entry.get("read", 0)))
        for entry in saved.get("windows", []):
            if entry.get("dm"):
                conv = model.dm(str(entry["dm"]))
            elif entry.get("group"):
                model.set_group_title(int(entry["group"]), str(entry.get("title", "")))
                conv = model.group(int(entry["group"]))
            else:
                continue
            conv.delivered_upto = int(entry.get("delivered", 0))
            conv.read_upto = int(entry.get("read", 0))

    def save_windows(self, model: ChatModel) -> None:
        """Save the window list of ``model.me`` in order, with each window's marks."""
        windows: list[dict[str, Any]] = []
        for conv in model.windows[1:]:
            entry: dict[str, Any]
            if conv.is_group:
                entry = {"group": conv.target,
                         "title": model.group_titles.get(int(conv.target), "")}
            else:
                entry = {"dm": conv.target}
            entry.update(delivered=conv.delivered_upto, read=conv.read_upto)
            windows.append(entry)
        marks = [{key[0]: key[1], "delivered": delivered, "read": read}
                 for key, (delivered, read) in model.marks.items()]
        data = {"windows": windows, "marks": marks, "left_groups": sorted(model.left_groups)}
        try:
            self.path("windows", model.me, "json").write_text(json.dumps(data))
        except OSError as e:
            _log.warn("cannot save the window list: {e}", e=e)
