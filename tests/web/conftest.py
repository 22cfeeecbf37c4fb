"""Fixtures for the web client: a real ``twistd -n chatserver`` with a TCP and a web listener,
and headless Chromium (Debian's package, never a downloaded browser) driven by Playwright.

Without chromium or Playwright the browser tests are skipped; with ``CI`` set they fail.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips these tests (and fails them under CI)
    expect = None

from tests.terminal.conftest import (
    CLIENT,
    FAST_ARGS,
    PASSWORD,
    TWISTD,
    WAIT,
    free_port,
    stop_server,
)

CHROMIUM = "/usr/bin/chromium"
#: Playwright's default for every expect()/wait in these tests (milliseconds).
EXPECT_MS = 15000
DOCS = Path(__file__).resolve().parents[2] / "docs"
#: ``CHATPROTO_SCREENSHOTS=docs`` makes the tests refresh the README's screenshots in docs/
#: (another value names a directory); by default they go to the test run's temporary
#: directory, so a normal test run leaves the tree clean.
SCREENSHOTS_ENV = "CHATPROTO_SCREENSHOTS"


@dataclass
class WebServer:
    """A running ``twistd -n chatserver`` with ``--listen`` and ``--listen-web``."""

    directory: Path
    port: int
    web_port: int
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    fingerprint: str = ""

    @property
    def endpoint(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def start(self) -> None:
        args = [TWISTD, "-n", "--pidfile=", "chatserver",
                "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                "--listen-web", f"tcp:{self.web_port}:interface=127.0.0.1",
                "--database", f"sqlite:{self.directory / 'chat.db'}",
                "--identity", str(self.directory / "server.key"), *FAST_ARGS,
                # Every test user registers from 127.0.0.1 (web and TCP alike).
                "--registrations-per-ip", "1000", *self.extra]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.directory)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.web_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)  # readiness polling of a subprocess
        else:
            self.proc.kill()
            pytest.fail(f"the server did not listen:\n{self.log.read_text()}")
        found = re.findall(r"fingerprint: (SHA256:\S+)", self.log.read_text())
        assert found, self.log.read_text()
        self.fingerprint = found[-1]

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self)  # type: ignore[arg-type]  # it needs only .proc


def start_web_server(directory: Path, extra: list[str] | None = None) -> WebServer:
    server = WebServer(directory, free_port(), free_port(), extra or [])
    server.start()
    return server


def screenshot_directory(target: str, default: Path) -> Path:
    """The directory named by :data:`SCREENSHOTS_ENV`'s value ``target``: ``docs`` is the
    README's docs/, another value a directory (created), empty the test run's ``default``."""
    if not target:
        return default
    directory = DOCS if target == "docs" else Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests' screenshots go (see :data:`SCREENSHOTS_ENV`)."""
    return screenshot_directory(os.environ.get(SCREENSHOTS_ENV, ""),
                                tmp_path_factory.mktemp("screenshots"))


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One server per test module (tests use distinct user names)."""
    server = start_web_server(tmp_path_factory.mktemp("webserver"))
    yield server
    server.stop()


def _require_browser() -> Any:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    if reason is None and not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        reason = "chromium is not installed (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: required in CI")
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian chromium (one per test session)."""
    sync_playwright = _require_browser()
    assert expect is not None
    expect.set_options(timeout=EXPECT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _record_errors(page: Any) -> Any:
    """Collect the page's uncaught errors in ``page.errors`` (once per page)."""
    if not hasattr(page, "errors"):
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """Pages in fresh browser contexts (separate storage: separate devices). An uncaught error
    or unhandled rejection in any page fails the test."""
    contexts: list[Any] = []
    pages: list[Any] = []  # also the ones a test closed

    def make(viewport: dict[str, int] | None = None, read_blobs: bool = False) -> Any:
        # read_blobs: the test reads received images back with fetch(blob:), which the page's
        # own CSP (connect-src 'self') forbids; only those contexts bypass it.
        ctx = browser.new_context(viewport=viewport or {"width": 1100, "height": 720},
                                  locale="en-GB", timezone_id="UTC", bypass_csp=read_blobs)
        ctx.set_default_timeout(EXPECT_MS)
        contexts.append(ctx)
        ctx.on("page", lambda page: pages.append(_record_errors(page)))
        page = _record_errors(ctx.new_page())
        pages.append(page)
        return page

    yield make
    errors = [e for page in {id(p): p for p in pages}.values() for e in page.errors]
    for ctx in contexts:
        ctx.close()
    assert errors == [], "uncaught errors in the page"


class Cli:
    """``chatproto-client`` commands against the web server's TCP listener, pinned to it."""

    def __init__(self, server: WebServer, tmp_path: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.password_file = tmp_path / "cli-password"
        self.password_file.write_text(PASSWORD + "\n")
        self.env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
                        XDG_STATE_HOME=str(tmp_path / "state"), LANG="C.UTF-8",
                        LC_ALL="C.UTF-8", PYTHONUNBUFFERED="1")
        self.env.pop("CHATPROTO_PASSWORD", None)

    def args(self, command: str, name: str, *extra: str) -> list[str]:
        return [CLIENT, command, "--server", self.server.endpoint, "--name", name,
                "--password-file", str(self.password_file),
                "--server-fingerprint", self.server.fingerprint,
                "--state-dir", str(self.tmp_path / f"state-{name}"),
                "--downloads", str(self.tmp_path / f"downloads-{name}"), *extra]

    def run(self, command: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.args(command, name, *extra), capture_output=True,
                                text=True, env=self.env, timeout=WAIT)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        return result

    def tail(self, name: str) -> CliTail:
        return CliTail(self.args("tail", name, "--since", "0"), self.env)


class CliTail:
    """A running ``chatproto-client tail``: its JSON lines, read by a thread into a queue."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, predicate: Any, timeout: float = WAIT) -> dict[str, Any]:
        """The first line (seen before or arriving within ``timeout``) matching ``predicate``."""
        for line in self.seen:
            if predicate(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"tail never printed the expected line; saw {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if predicate(line):
                return line

    def texts(self) -> list[str]:
        """Every text seen so far (after draining what has arrived)."""
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return [x.get("text") for x in self.seen if x.get("type") == "text"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def cli(web_server: WebServer, tmp_path: Path) -> Cli:
    return Cli(web_server, tmp_path)


def sign_up(page: Any, server: WebServer, name: str, *, register: bool = True,
            pin: bool = True, screenshot: Path | None = None) -> None:
    """Open the client, accept the server's fingerprint (first contact), register or sign in,
    and wait for the conversation screen."""
    page.goto(server.url + (f"#fp={server.fingerprint}" if not pin else ""))
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#signin-name", name)
    page.fill("#signin-password", PASSWORD)
    if screenshot:
        page.screenshot(path=str(screenshot))
    page.click("#register-button" if register else "#signin-button")
    if pin:
        trust = page.locator("#trust-screen")
        page.wait_for_selector("#trust-screen:not([hidden]), #chat-screen:not([hidden])")
        if trust.is_visible():
            expect(page.locator("#trust-fingerprint")).to_have_text(server.fingerprint)
            page.click("#trust-accept")
    expect(page.locator("#chat-screen")).to_be_visible()
    expect(page.locator("#me")).to_have_text(name)


def open_chat(page: Any, peer: str) -> None:
    page.fill("#new-chat-name", peer)
    page.press("#new-chat-name", "Enter")
    expect(page.locator("#conversation-title")).to_have_text(peer)


def send_text(page: Any, text: str) -> None:
    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")
