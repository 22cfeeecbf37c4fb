"""Fixtures for the web client: a real ``twistd -n chatserver`` with a TCP and a web listener,
and headless Chromium (Debian's package, never a downloaded browser) driven by Playwright.

Without chromium or Playwright the browser tests are skipped; with ``CI`` set they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.terminal.conftest import FAST_ARGS, TWISTD, WAIT, free_port

CHROMIUM = "/usr/bin/chromium"
#: Playwright's default for every expect()/wait in these tests (milliseconds).
EXPECT_MS = 15000
DOCS = Path(__file__).resolve().parents[2] / "docs"


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
                "--identity", str(self.directory / "server.key"), *FAST_ARGS, *self.extra]
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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_web_server(directory: Path, extra: list[str] | None = None) -> WebServer:
    server = WebServer(directory, free_port(), free_port(), extra or [])
    server.start()
    return server


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
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """Pages in fresh browser contexts (separate storage: separate devices)."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None) -> Any:
        ctx = browser.new_context(viewport=viewport or {"width": 1100, "height": 720},
                                  locale="en-GB", timezone_id="UTC")
        ctx.set_default_timeout(EXPECT_MS)
        contexts.append(ctx)
        page = ctx.new_page()
        page.errors = []  # uncaught page errors, checked by the tests
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
