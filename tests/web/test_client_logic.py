"""The page's client library driven directly in Chromium with a fake connection: the outbox
order around images; and the login going on after a slow fingerprint decision."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.web.conftest import WAIT, WebServer, expect, start_web_server

OUTBOX_JS = """
async () => {
  const { ChatClient, CHUNK } = await import("/client.js");
  const sent = [];
  const store = { addToOutbox: async () => {}, removeFromOutbox: async () => {} };
  const client = new ChatClient({ server: {}, store, confirmServer: async () => true });
  client.name = "me";
  const conn = {
    ws: { readyState: WebSocket.OPEN, send: (m) => sent.push(m) },
    session: { seal: (m) => Promise.resolve(m) },
    sendChain: Promise.resolve(),
  };
  client.conn = conn;
  const image = new Uint8Array(CHUNK + 10);
  image.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  await client.sendImage({ peer: "you" }, image);
  await client.sendText({ peer: "you" }, "after the image");
  await conn.sendChain;
  const before = sent.map((m) => [m.type, m.content_type ?? m.index]);
  const imageReq = sent[0].req;
  client._handle(conn, { type: "SendAck", req: imageReq, client_msg_id: sent[0].client_msg_id,
    group_id: 0, conv_seq: 1, server_time_ms: 1 });
  await new Promise((r) => setTimeout(r, 0));
  await conn.sendChain;
  const after = sent.map((m) => [m.type, m.content_type ?? m.index]);
  return { before, after };
}
"""


def test_text_after_an_image_waits_for_its_send_ack(web_server: WebServer,
                                                   new_page: Any) -> None:
    """A text queued after an image is sent only once the image is stored (SendAck), so the
    conversation keeps the order the user wrote in."""
    page = new_page()
    page.goto(web_server.url)
    page.wait_for_selector("body[data-ready=true]")
    out = page.evaluate(OUTBOX_JS)
    assert out["before"] == [["Chat", 2], ["ImageChunk", 1]]
    assert out["after"] == [["Chat", 2], ["ImageChunk", 1], ["Chat", 1]]


def test_login_goes_on_after_a_slow_fingerprint_decision(tmp_path: Path,
                                                         new_page: Any) -> None:
    """The server drops a login that stays idle while the user compares the fingerprint; once
    the user trusts it, the page signs in on a new connection without asking again."""
    directory = tmp_path / "slow"
    directory.mkdir()
    server = start_web_server(directory, ["--idle-timeout", "1", "--handshake-timeout", "2"])
    try:
        page = new_page()
        page.goto(server.url)
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#signin-name", "wendy")
        page.fill("#signin-password", "correct horse battery")
        page.click("#register-button")
        expect(page.locator("#trust-screen")).to_be_visible()
        deadline = time.monotonic() + WAIT
        while not re.search(r"closing .*IDLE_TIMEOUT", server.log.read_text()):
            assert time.monotonic() < deadline, "the server never timed the login out"
            page.wait_for_timeout(100)  # polling the server's log
        page.click("#trust-accept")
        expect(page.locator("#chat-screen")).to_be_visible()
        expect(page.locator("#me")).to_have_text("wendy")
    finally:
        server.stop()


RECONNECT_JS = """
async () => {
  const { ChatClient, LoginFailed } = await import("/client.js");
  const store = { cursor: async () => null };
  const timers = [];
  const realSetTimeout = window.setTimeout;
  window.setTimeout = (fn, ms) => { timers.push([fn, ms]); return timers.length; };
  try {
    const client = new ChatClient({ server: {}, store, confirmServer: async () => true });
    client.name = "me";
    const failures = [new LoginFailed("auth", { code: 201, retryAfterMs: 7000 }),
                      new LoginFailed("auth", { code: 200, reason: "wrong name or password" })];
    let attempts = 0;
    const fatal = [];
    client.addEventListener("fatal", (e) => fatal.push(e.detail.code));
    client._connect = async () => { attempts += 1; throw failures.shift(); };
    await client._reconnect();
    const afterTryLater = { state: client.state, delay: timers[0][1], attempts };
    await timers[0][0]();
    return { afterTryLater, attempts, state: client.state, fatal, timers: timers.length };
  } finally {
    window.setTimeout = realSetTimeout;
  }
}
"""


def test_reconnection_waits_out_try_later_and_stops_on_refusal(web_server: WebServer,
                                                                new_page: Any) -> None:
    """A reconnection refused with TRY_LATER (201) tries again after retry_after_ms; one
    refused for good (wrong password) stops reconnecting and reports it."""
    page = new_page()
    page.goto(web_server.url)
    page.wait_for_selector("body[data-ready=true]")
    out = page.evaluate(RECONNECT_JS)
    assert out["afterTryLater"] == {"state": "reconnecting", "delay": 7100, "attempts": 1}
    assert out["attempts"] == 2
    assert out["state"] == "offline" and out["fatal"] == [200] and out["timers"] == 1


PING_JS = """
async () => {
  const { ChatClient } = await import("/client.js");
  const timers = new Map();
  let next = 0;
  const realSet = window.setTimeout, realClear = window.clearTimeout;
  window.setTimeout = (fn, ms) => { timers.set(++next, [fn, ms]); return next; };
  window.clearTimeout = (id) => timers.delete(id);
  const fire = (ms) => {
    const [id, [fn]] = [...timers.entries()].find(([, [, d]]) => d === ms);
    timers.delete(id);
    fn();
  };
  try {
    const client = new ChatClient({ server: {}, store: {}, confirmServer: async () => true });
    const sent = [];
    client.send = (m) => { sent.push(m); return true; };
    let closed = 0;
    const conn = { ws: { close: () => { closed += 1; } } };
    client._schedulePing(conn);
    fire(25000);                                     // ping interval
    client._handle(conn, { type: "Pong", nonce: 1 }); // answered: next ping scheduled
    const answered = { closed, pending: [...timers.values()].map(([, d]) => d) };
    fire(25000);
    fire(10000);                                     // no Pong for nonce 2
    client._handle(conn, { type: "Ping", nonce: 9 });
    return { sent, answered, closed };
  } finally {
    window.setTimeout = realSet;
    window.clearTimeout = realClear;
  }
}
"""


def test_client_pings_and_closes_a_silent_connection(web_server: WebServer,
                                                     new_page: Any) -> None:
    """The page pings every 25 s; a Pong cancels the 10 s deadline, a missing one closes the
    connection (which then reconnects); the server's Ping is answered with its nonce."""
    page = new_page()
    page.goto(web_server.url)
    page.wait_for_selector("body[data-ready=true]")
    out = page.evaluate(PING_JS)
    assert out["answered"] == {"closed": 0, "pending": [25000]}
    assert out["closed"] == 1
    assert out["sent"] == [{"type": "Ping", "nonce": 1}, {"type": "Ping", "nonce": 2},
                           {"type": "Pong", "nonce": 9}]
