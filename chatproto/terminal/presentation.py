"""What both clients of ``chatproto-client`` (the interactive one and the scripting commands)
show the same way: group events in words, sizes, times, and received images' file names.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from chatproto.client import MAX_IMAGE_BYTES
from chatproto.wire import messages as m
from chatproto.wire.images import EXTENSIONS, image_type

__all__ = [
    "EVENT_ACTIONS",
    "IMAGE_FORMATS",
    "clock_time",
    "decode_event",
    "describe_event",
    "format_size",
    "image_extension",
    "last_seen_text",
    "save_image",
    "read_image_file",
    "time_iso",
]

#: The wire's group event action values (``GroupAction``) that this version knows.
#: 8 is OWNER_CHANGED (the owner left; ``names`` is the new owner): it is written as a
#: literal until ``chatproto.wire.messages.GroupAction`` names it.
OWNER_CHANGED = getattr(m.GroupAction, "OWNER_CHANGED", 8)

#: Group event action → its name in ``tail``'s JSON (``"event": {"action": ...}``).
EVENT_ACTIONS: dict[int, str] = {
    m.GroupAction.CREATED: "created",
    m.GroupAction.ADDED: "added",
    m.GroupAction.REMOVED: "removed",
    m.GroupAction.LEFT: "left",
    m.GroupAction.RENAMED: "renamed",
    m.GroupAction.PROMOTED: "promoted",
    m.GroupAction.DEMOTED: "demoted",
    OWNER_CHANGED: "owner_changed",
}

#: The image formats the clients send, for messages.
IMAGE_FORMATS = "PNG, JPEG, GIF or WebP"


def decode_event(body: bytes) -> m.GroupEvent | None:
    """The group event in a message body (None if it is unreadable)."""
    try:
        return m.decode_record(m.GroupEvent, body)
    except Exception:
        return None


def describe_event(event: m.GroupEvent) -> str:
    """A group event as a sentence."""
    names = ", ".join(event.names)
    action = event.action
    if action == m.GroupAction.CREATED:
        title = f" \"{event.title}\"" if event.title else ""
        return f"{event.actor} created the group{title} with {names}"
    if action == m.GroupAction.ADDED:
        return f"{event.actor} added {names}"
    if action == m.GroupAction.REMOVED:
        return f"{event.actor} removed {names}"
    if action == m.GroupAction.LEFT:
        return f"{event.actor} left the group"
    if action == m.GroupAction.RENAMED:
        return f"{event.actor} renamed the group to \"{event.title}\""
    plural = "s" if len(event.names) > 1 else ""
    if action == m.GroupAction.PROMOTED:
        return f"{event.actor} made {names} admin{plural}"
    if action == m.GroupAction.DEMOTED:
        return f"{event.actor} made {names} plain member{plural}"
    if action == OWNER_CHANGED:
        return f"{names} is now the owner"
    return f"{event.actor}: group event {action}"


def format_size(size: int) -> str:
    """``532 B``, ``12.3 KiB``, ``4.0 MiB``."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def time_iso(ms: int) -> str:
    """``2024-03-01T14:02:11.512Z``."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def clock_time(ms: int) -> str:
    """``HH:MM`` in local time."""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%H:%M")


def last_seen_text(ms: int | None, now_ms: int) -> str:
    """``last seen 14:02`` today, ``last seen 2024-03-01 14:02`` otherwise."""
    if ms is None:
        return "never seen"
    when = datetime.datetime.fromtimestamp(ms / 1000)
    now = datetime.datetime.fromtimestamp(now_ms / 1000)
    if when.date() == now.date():
        return f"last seen {when:%H:%M}"
    return f"last seen {when:%Y-%m-%d %H:%M}"


def image_extension(data: bytes, mime: str | None = None) -> str:
    """The file extension of an image, from its MIME type or else its magic bytes."""
    if mime is None or mime not in EXTENSIONS:
        mime = image_type(data)
    return EXTENSIONS.get(mime or "", ".img")


def save_image(directory: Path, deliver: m.Deliver, data: bytes) -> Path:
    """Save a received image as ``SENDER-YYYYmmdd-HHMMSS.EXT`` in ``directory``, never
    overwriting a file: ``-1``, ``-2``, ... are added to the stem until the name is free.

    Returns:
        The path written.
    """
    when = datetime.datetime.fromtimestamp(deliver.server_time_ms / 1000)
    ext = image_extension(data, deliver.image.mime if deliver.image else None)
    return write_new_file(directory, f"{deliver.sender}-{when:%Y%m%d-%H%M%S}", ext, data)


def write_new_file(directory: Path, stem: str, ext: str, data: bytes) -> Path:
    """Write ``stem + ext`` in ``directory`` (created if needed), never overwriting a file:
    ``-1``, ``-2``, ... are added to the stem until the name is free. The path written."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        path = directory / (f"{stem}{ext}" if n == 0 else f"{stem}-{n}{ext}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path
    raise OSError(f"no free file name for {stem}{ext} in {directory}")


def read_image_file(path: Path) -> bytes:
    """The bytes of an image file to send, checked here before anything is uploaded: the
    file exists, is 1 byte to ``MAX_IMAGE_BYTES`` (by its size, before reading it) and is a
    PNG, JPEG, GIF or WebP image by its first bytes.

    Raises:
        ValueError: With a one-line message naming the file and the problem.
    """
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
        if size > MAX_IMAGE_BYTES:
            raise ValueError(f"{path} is {format_size(size)}; an image is at most "
                             f"{format_size(MAX_IMAGE_BYTES)}")
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{e.strerror or e}: {path}") from None
    if not data:
        raise ValueError(f"{path} is empty")
    if image_type(data) is None:
        raise ValueError(f"{path} is not an image ({IMAGE_FORMATS})")
    return data
