"""Pinned server identities, in a file like OpenSSH's ``known_hosts``.

Each line is ``host:port SHA256:<base64>``; blank lines and lines starting with ``#`` are
ignored, as is anything after the fingerprint. The file is created with mode 0600.

Host names are compared in a normal form (:func:`normalize_host`): lower case, without a
trailing dot, the port as a decimal number and IPv6 addresses in their compressed form, so
``Chat.Example.:07000`` and ``chat.example:7000`` are the same pin.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

__all__ = ["KnownServers", "endpoint_host", "normalize_host"]


def normalize_host(host: str) -> str:
    """The normal form of a ``host:port`` pin key (``[v6]:port`` for IPv6).

    Args:
        host: A ``host:port`` string as the user or an endpoint description wrote it.

    Returns:
        Lower case, trailing dot removed, port as a decimal number without leading zeros, IPv6
        compressed; a key that is not ``host:port`` (a UNIX socket path) is kept as it is.
    """
    name, sep, port = host.rpartition(":")
    if not sep or not name or not port.isascii() or not port.isdigit():
        return host
    if name.startswith("[") and name.endswith("]"):
        try:
            name = f"[{ipaddress.IPv6Address(name[1:-1]).compressed}]"
        except ValueError:
            name = name.lower()
    else:
        name = name.lower()
        if name.endswith(".") and len(name) > 1:
            name = name[:-1]
    return f"{name}:{int(port)}"

FINGERPRINT_PREFIX = "SHA256:"


class KnownServers:
    """The pinned fingerprints of servers, read from and appended to ``path``.

    The file is read on every lookup, so edits by the user (e.g. removing a changed key) take
    effect without restarting.

    Args:
        path: The file; it need not exist yet.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def entries(self) -> list[tuple[str, str]]:
        """Every ``(host, fingerprint)`` pair in the file, in order.

        Returns:
            The pairs; empty if the file does not exist.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[1].startswith(FINGERPRINT_PREFIX):
                continue  # a malformed line pins nothing
            out.append((parts[0], parts[1]))
        return out

    def lookup(self, host: str) -> str | None:
        """The pinned fingerprint of ``host`` (``host:port``), or None if it is unknown.

        Args:
            host: The server, as ``host:port``.

        Returns:
            The first fingerprint pinned for ``host``, or None.
        """
        wanted = normalize_host(host)
        for known, fp in self.entries():
            if normalize_host(known) == wanted:
                return fp
        return None

    def add(self, host: str, fingerprint: str) -> None:
        """Append a pin, creating the file (mode 0600) and its directory (0700) if needed.

        Args:
            host: The server, as ``host:port`` (no whitespace, not starting with ``#``).
            fingerprint: Its fingerprint, ``SHA256:...``.

        Raises:
            ValueError: If the host or the fingerprint cannot be written as one line.
        """
        if not host or host.startswith("#") or any(c.isspace() for c in host):
            raise ValueError(f"invalid host {host!r}")
        host = normalize_host(host)
        if not fingerprint.startswith(FINGERPRINT_PREFIX) or any(
            c.isspace() for c in fingerprint
        ):
            raise ValueError(f"invalid fingerprint {fingerprint!r}")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{host} {fingerprint}\n".encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
        finally:
            os.close(fd)


def _split_description(description: str) -> list[str]:
    """Split an endpoint description on unescaped colons, removing the escapes."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for c in chars:
        if c == "\\":
            current.append(next(chars, ""))
        elif c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


def endpoint_host(description: str) -> str:
    """The ``host:port`` a client endpoint description such as ``tcp:example.org:7000`` or
    ``tls:host=example.org:port=7000`` connects to; the key of the pin.

    IPv6 addresses are bracketed (``[::1]:7000``). If the description names no host and port
    (an unusual endpoint type), the whole description is the key.

    Args:
        description: The endpoint description given to ``clientFromString``.

    Returns:
        The pinning key, in normal form (:func:`normalize_host`).
    """
    _kind, *args = _split_description(description)
    positional = [a for a in args if "=" not in a]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    host = named.get("host") or (positional[0] if positional else None)
    port = named.get("port") or (positional[1] if len(positional) > 1 else None)
    if not host or not port:
        return description
    if ":" in host:
        host = f"[{host}]"
    return normalize_host(f"{host}:{port}")
