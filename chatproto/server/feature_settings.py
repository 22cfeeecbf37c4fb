"""The settings of the everyday features (edits, accounts, search)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The sender may edit a message for this long after the server stored it.
DEFAULT_EDIT_WINDOW_MS = 15 * 60 * 1000
#: The name of a deleted account cannot be registered again for this long.
DEFAULT_NAME_HOLD_MS = 90 * 24 * 3600 * 1000
#: The largest file (FILE_OFFER) the server accepts.
DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024
#: File transfers in progress at once, per connection and per server.
MAX_FILE_UPLOADS_PER_CONNECTION = 2
MAX_FILE_UPLOADS = 64
#: At most this often, a search also drops the index rows of pruned messages (SQLite).
DEFAULT_SEARCH_PURGE_INTERVAL_MS = 3600 * 1000


@dataclass(frozen=True)
class FeatureSettings:
    edit_window_ms: int = DEFAULT_EDIT_WINDOW_MS
    name_hold_ms: int = DEFAULT_NAME_HOLD_MS
    search_purge_interval_ms: int = DEFAULT_SEARCH_PURGE_INTERVAL_MS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    #: Where file bodies go (None: beside the SQLite file; see storage.content_files).
    blob_dir: Path | None = None
