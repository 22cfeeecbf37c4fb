"""SQL text: ``?`` placeholders for drivers that want ``%s``, and schema scripts split into
statements. Pure functions (no database)."""

from __future__ import annotations

import functools
import re

__all__ = ["qmark_to_dollar", "qmark_to_format", "split_sql_script"]

# A single-quoted SQL literal, a ``?`` placeholder or a literal ``%``.
_QMARK_RE = re.compile(r"('(?:[^']|'')*')|(\?)|(%)")


@functools.lru_cache(maxsize=1024)
def qmark_to_format(sql: str) -> str:
    """Convert ``?`` placeholders to ``%s`` (and escape ``%`` as ``%%``).

    A ``?`` inside a single-quoted literal is left alone; ``%`` is doubled
    everywhere (literals included) because the driver interpolates the whole
    string.  Cached, so each distinct SQL string is converted once.
    """

    def repl(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return m.group(1).replace("%", "%%")
        if m.group(2) is not None:
            return "%s"
        return "%%"

    return _QMARK_RE.sub(repl, sql)


# A single-quoted SQL literal, or a ``?`` placeholder with the cast that follows it, if any.
_QMARK_CAST_RE = re.compile(r"('(?:[^']|'')*')|\?((?:::[A-Za-z_]+(?:\[\])?)?)")


def qmark_to_dollar(sql: str) -> tuple[str, list[str]]:
    """Number the ``?`` placeholders ``$1``, ``$2``... (for ``PREPARE``) and return, per
    placeholder, the cast that follows it in ``sql`` (``"::bigint[]"``, or ``""``), for the
    arguments of ``EXECUTE``. A ``?`` inside a single-quoted literal is left alone."""
    casts: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return m.group(1)
        casts.append(m.group(2).strip())
        return f"${len(casts)}{m.group(2)}"

    return _QMARK_CAST_RE.sub(repl, sql), casts


def split_sql_script(script: str) -> list[str]:
    """Split a schema script into statements.

    Handles ``--`` comments and single-quoted literals; does not handle
    ``BEGIN ... END`` bodies (triggers), which the schema must not use.
    """
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if c == "-" and script.startswith("--", i):
            j = script.find("\n", i)
            i = n if j == -1 else j
            continue
        if c == "'":
            j = i + 1
            while j < n:
                if script[j] == "'":
                    if script.startswith("''", j):
                        j += 2
                        continue
                    break
                j += 1
            buf.append(script[i : j + 1])
            i = j + 1
            continue
        if c == ";":
            stmt = "".join(buf).strip()
            if stmt:
                statements.append(stmt)
            buf = []
            i += 1
            continue
        buf.append(c)
        i += 1
    stmt = "".join(buf).strip()
    if stmt:
        statements.append(stmt)
    return statements
