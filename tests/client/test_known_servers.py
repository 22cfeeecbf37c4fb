"""KnownServers (the pin file), endpoint_host and the identity decision."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from chatproto.client import (
    KnownServers,
    ServerKeyChanged,
    UntrustedServer,
    check_server_identity,
    endpoint_host,
)
from chatproto.client.known_servers import normalize_host

FP_A = "SHA256:" + "A" * 43
FP_B = "SHA256:" + "B" * 43


def outcome(d: Deferred[None]) -> object:
    out: list[object] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def test_add_then_lookup(tmp_path: Path) -> None:
    """A pin added for host:port is found by lookup; other hosts are unknown (None)."""
    pins = KnownServers(tmp_path / "known_servers")
    assert pins.lookup("chat.example:7000") is None
    pins.add("chat.example:7000", FP_A)
    pins.add("other.example:7000", FP_B)
    assert pins.lookup("chat.example:7000") == FP_A
    assert pins.lookup("other.example:7000") == FP_B
    assert pins.lookup("chat.example:7001") is None
    assert (tmp_path / "known_servers").read_text() == (
        f"chat.example:7000 {FP_A}\nother.example:7000 {FP_B}\n")


def test_file_is_private_and_parent_created(tmp_path: Path) -> None:
    """add creates missing parent directories and the file with mode 0600."""
    path = tmp_path / "config" / "chatproto" / "known_servers"
    KnownServers(path).add("chat.example:7000", FP_A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_comments_blank_and_malformed_lines_are_ignored(tmp_path: Path) -> None:
    """Comments, blank lines and lines without a SHA256 fingerprint pin nothing; appending to
    a file without a final newline keeps the lines apart."""
    path = tmp_path / "known_servers"
    path.write_text(f"# my servers\n\n# chat.example:7000 {FP_B}\nbroken-line\n"
                    f"  chat.example:7000 {FP_A}  # trailing words\nx:1 MD5:abc")
    pins = KnownServers(path)
    assert pins.lookup("chat.example:7000") == FP_A
    assert pins.lookup("broken-line") is None
    assert pins.lookup("x:1") is None
    pins.add("y:2", FP_B)
    assert pins.lookup("y:2") == FP_B
    assert path.read_text().endswith(f"x:1 MD5:abc\ny:2 {FP_B}\n")


def test_add_rejects_values_that_break_the_format(tmp_path: Path) -> None:
    """A host with whitespace or a fingerprint that is not SHA256:... is refused."""
    pins = KnownServers(tmp_path / "k")
    with pytest.raises(ValueError):
        pins.add("bad host:1", FP_A)
    with pytest.raises(ValueError):
        pins.add("#host:1", FP_A)
    with pytest.raises(ValueError):
        pins.add("host:1", "MD5:xyz")


def test_changed_key_is_detected(tmp_path: Path) -> None:
    """A pinned host presenting another fingerprint fails with ServerKeyChanged naming both;
    the matching one is accepted."""
    pins = KnownServers(tmp_path / "k")
    pins.add("chat.example:7000", FP_A)
    assert outcome(check_server_identity("chat.example:7000", FP_A, known_servers=pins)) is None
    failure = outcome(check_server_identity("chat.example:7000", FP_B, known_servers=pins))
    err = failure.value  # type: ignore[attr-defined]
    assert isinstance(err, ServerKeyChanged)
    assert (err.expected, err.got) == (FP_A, FP_B)
    assert FP_A in str(err) and FP_B in str(err)


def test_explicit_fingerprint_overrides_the_pins(tmp_path: Path) -> None:
    """An explicit server_fingerprint decides alone, whatever the pin file says."""
    pins = KnownServers(tmp_path / "k")
    pins.add("h:1", FP_A)
    assert outcome(check_server_identity("h:1", FP_B, known_servers=pins,
                                         server_fingerprint=FP_B)) is None
    failure = outcome(check_server_identity("h:1", FP_A, server_fingerprint=FP_B))
    assert isinstance(failure.value, ServerKeyChanged)  # type: ignore[attr-defined]


def test_trust_on_first_use(tmp_path: Path) -> None:
    """An unknown host asks the callback: True pins it, False refuses (UntrustedServer), and
    no callback refuses too."""
    pins = KnownServers(tmp_path / "k")
    refused = outcome(check_server_identity("h:1", FP_A, known_servers=pins,
                                            trust_on_first_use=lambda h, fp: False))
    assert isinstance(refused.value, UntrustedServer)  # type: ignore[attr-defined]
    assert pins.lookup("h:1") is None
    no_callback = outcome(check_server_identity("h:1", FP_A, known_servers=pins))
    assert isinstance(no_callback.value, UntrustedServer)  # type: ignore[attr-defined]
    assert outcome(check_server_identity("h:1", FP_A, known_servers=pins,
                                         trust_on_first_use=lambda h, fp: True)) is None
    assert pins.lookup("h:1") == FP_A


@pytest.mark.parametrize(
    ("description", "host"),
    [
        ("tcp:chat.example:7000", "chat.example:7000"),
        ("tcp:host=chat.example:port=7000:timeout=5", "chat.example:7000"),
        ("tls:chat.example:7000:trustRoots=/etc/ca", "chat.example:7000"),
        (r"tcp:\:\:1:7000", "[::1]:7000"),
        ("unix:/run/chat.sock", "unix:/run/chat.sock"),
    ],
)
def test_endpoint_host(description: str, host: str) -> None:
    """The pin key is host:port from the endpoint description (IPv6 bracketed), or the whole
    description when it names no host and port."""
    assert endpoint_host(description) == host


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("Chat.Example:7000", "chat.example:7000"),
        ("chat.example.:7000", "chat.example:7000"),
        ("CHAT.EXAMPLE.:07000", "chat.example:7000"),
        ("[0:0:0:0:0:0:0:1]:7000", "[::1]:7000"),
        ("[FE80::1]:0100", "[fe80::1]:100"),
        ("unix:/Run/Chat.sock", "unix:/Run/Chat.sock"),
    ],
)
def test_normalize_host(written: str, normal: str) -> None:
    """Pin keys compare in one form: lower case, no trailing dot, the port as a number."""
    assert normalize_host(written) == normal


def test_pins_match_whatever_the_spelling(tmp_path: Path) -> None:
    """A pin written as Chat.Example.:07000 is found for chat.example:7000 (and the other way
    round), and is stored in normal form; so a changed key cannot hide behind a spelling."""
    pins = KnownServers(tmp_path / "known_servers")
    pins.add("Chat.Example.:07000", FP_A)
    assert pins.lookup("chat.example:7000") == FP_A
    assert pins.entries() == [("chat.example:7000", FP_A)]
    (tmp_path / "known_servers").write_text(f"CHAT.example.:7000 {FP_A}\n")
    assert pins.lookup("chat.example:7000") == FP_A
    assert endpoint_host("tcp:host=Chat.Example.:port=07000") == "chat.example:7000"
