"""Fixtures for the terminal client, the command line and the examples: a real
``twistd -n chatserver`` subprocess (SQLite, fast hashing) and a private tmux server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
CLIENT = str(BIN / "chatproto-client")
PASSWORD = "correct horse battery"
FAST_ARGS = ["--insecure-fast-hashing", "--argon2-memory-kib", "64", "--argon2-iterations", "1",
             "--registrations-per-ip", "1000"]
#: The longest a single wait in these tests lasts.
WAIT = 20.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ChatServer:
    """A running ``twistd -n chatserver``."""

    proc: subprocess.Popen[bytes]
    port: int
    fingerprint: str
    log: Path

    @property
    def endpoint(self) -> str:
        """The client endpoint description."""
        return f"tcp:127.0.0.1:{self.port}"


def start_server(directory: Path, port: int | None = None) -> ChatServer:
    """A ``twistd -n chatserver`` on ``port`` (a free one by default) with its database and
    key in ``directory`` (start it again with the same arguments to restart it)."""
    port = port or free_port()
    log = directory / "server.log"
    args = [TWISTD, "-n", "--pidfile=", "chatserver", "--listen",
            f"tcp:{port}:interface=127.0.0.1", "--database", f"sqlite:{directory / 'chat.db'}",
            "--identity", str(directory / "server.key"), *FAST_ARGS]
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=directory)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)  # readiness polling of a subprocess
    else:
        proc.kill()
        pytest.fail(f"the server did not listen:\n{log.read_text()}")
    found = re.findall(r"fingerprint: (SHA256:\S+)", log.read_text())
    assert found, log.read_text()
    return ChatServer(proc, port, found[-1], log)


def stop_server(server: ChatServer) -> None:
    """SIGTERM, and wait for the server to exit."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """One server per test module (tests use distinct user names)."""
    server = start_server(tmp_path_factory.mktemp("server"))
    yield server
    stop_server(server)


@pytest.fixture
def client_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose HOME and XDG directories are private to the test."""
    env = dict(os.environ)
    env.pop("CHATPROTO_PASSWORD", None)
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"), TERM="xterm-256color", LANG="C.UTF-8",
               LC_ALL="C.UTF-8", PYTHONUNBUFFERED="1")
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def png_bytes(rows: int = 40) -> bytes:
    """A small valid PNG image (1 pixel wide)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + bytes([y % 256, 255 - y % 256, 128]) for y in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, rows, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Tmux:
    """A private tmux server (its own socket) with one session per client."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"chatproto-test-{uuid.uuid4().hex[:8]}"
        self.env = env

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                                text=True, env=self.env, timeout=10, check=True)
        return result.stdout

    def start(self, name: str, command: list[str], width: int = 120, height: int = 40) -> None:
        """Run ``command`` in a new detached session of the given size."""
        line = " ".join(_quote(a) for a in command)
        # Keep the pane open after the program ends, so its last screen can be read.
        self._tmux("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
                   f"{line}; echo EXITED $?; sleep 600")

    def send(self, name: str, *keys: str) -> None:
        """``send-keys``: key names (Enter, Tab, C-r, M-2) or, with ``-l``, literal text."""
        self._tmux("send-keys", "-t", _target(name), *keys)

    def type(self, name: str, text: str) -> None:
        """Type literal text."""
        self._tmux("send-keys", "-t", _target(name), "-l", text)

    def capture(self, name: str) -> str:
        """The visible screen."""
        return self._tmux("capture-pane", "-p", "-t", _target(name))

    def wait_for(self, name: str, text: str, timeout: float = WAIT) -> str:
        """Poll the screen until ``text`` appears (bounded); returns the screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture(name)
            if text in screen:
                return screen
            time.sleep(0.1)  # polling a terminal: there is nothing to wait on
        pytest.fail(f"{text!r} did not appear in {name}:\n{screen}")

    def close(self) -> None:
        """Kill the tmux server (and the clients in it)."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       env=self.env, timeout=10, check=False)


def _target(session: str) -> str:
    """The pane of a session by its exact name (a bare name may match a window's name)."""
    return f"={session}:"


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


@pytest.fixture
def tmux(client_env: dict[str, str]) -> Iterator[Tmux]:
    """A tmux server for the test; skipped without tmux (fails instead when CI is set)."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is required in CI (apt-get install tmux)")
        pytest.skip("tmux is not installed")
    t = Tmux(client_env)
    yield t
    t.close()


class ConnectionCutter:
    """A TCP forwarder to a server that a test can cut: :meth:`cut` closes every forwarded
    connection and refuses new ones until :meth:`resume` (the server itself keeps running)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.refusing = False
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        """The client endpoint description of the forwarder."""
        return f"tcp:127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.open += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Close every forwarded connection; refuse new ones."""
        self.refusing = True
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def resume(self) -> None:
        """Forward new connections again."""
        self.refusing = False

    def close(self) -> None:
        """Stop listening and cut everything."""
        self.cut()
        self.listener.close()


def client_command(server: ChatServer, tmp_path: Path, who: str, *extra: str,
                   pinned: bool = False) -> list[str]:
    """``chatproto-client`` for ``who``, with its own state and downloads folders (and the
    server's fingerprint if ``pinned``)."""
    pin = ["--server-fingerprint", server.fingerprint] if pinned else []
    return [CLIENT, "--server", server.endpoint, *pin,
            "--state-dir", str(tmp_path / f"state-{who}"),
            "--downloads", str(tmp_path / f"downloads-{who}"), *extra]


def fill_login(tmux: Tmux, who: str, name: str | None, key: str) -> None:
    """Fill the sign-in form (the name unless pre-filled) and press ``key`` (Enter signs
    in, C-r registers)."""
    tmux.wait_for(who, "Password:")
    if name is not None:
        tmux.type(who, name)
        tmux.send(who, "Tab")
    tmux.type(who, PASSWORD)
    tmux.send(who, key)
