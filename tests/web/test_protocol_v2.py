"""Protocol version 2 in the browser against the real server and the Python reference: the
hybrid suite is negotiated, a stripped hybrid share is detected, KeyUpdate works both ways."""

from __future__ import annotations

from typing import Any

from chatproto.wire import messages as m
from chatproto.wire import schedule
from chatproto.wire.frame import FrameDecoder, FrameEncoder
from chatproto.wire.session import Session
from tests.terminal.conftest import PASSWORD
from tests.web.conftest import WebServer

#: Page-side helpers: a raw WebSocket to the page's own server, its binary messages as a
#: queue of byte arrays, and a handshake driven up to the server's key.
RAW_SOCKET_JS = """
  const { ClientHandshake } = await import("/handshake.js");
  const { Session } = await import("/session.js");
  const { decodeMessage, encodeMessage } = await import("/messages.js");
  const { plainFrame } = await import("/frames.js");
  const openSocket = () => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    ws.binaryType = "arraybuffer";
    const queue = [], waiters = [];
    ws.onmessage = (e) => {
      const data = new Uint8Array(e.data);
      if (waiters.length) waiters.shift()(data); else queue.push(data);
    };
    ws.onclose = () => { while (waiters.length) waiters.shift()(null); };
    ws.onopen = () => resolve({
      ws,
      next: () => queue.length ? Promise.resolve(queue.shift())
        : new Promise((r) => waiters.push(r)),
    });
    ws.onerror = reject;
  });
  /** Feed received messages to the handshake until it returns events. */
  const events = async (sock, hs) => {
    for (;;) {
      const data = await sock.next();
      if (data === null) throw new Error("closed");
      const evs = await hs.receive(data);
      if (evs.length) return evs;
    }
  };
"""

NEGOTIATION_JS = """
async () => {
""" + RAW_SOCKET_JS + """
  const out = {};
  // As the page offers it: the server chooses the hybrid.
  {
    const sock = await openSocket();
    const hs = new ClientHandshake();
    const hello = await hs.start();
    out.offered = decodeMessage(hello.subarray(4)).key_shares.map((s) => [s.suite,
      s.share.length]);
    sock.ws.send(hello);
    const [ev] = await events(sock, hs);
    out.chosen = ev.suite;
    sock.ws.close();
  }
  // An attacker on the path strips the hybrid share: the server (honestly) chooses X25519,
  // and signs over the Hello2 it received, which is not the one the page sent.
  {
    const sock = await openSocket();
    const hs = new ClientHandshake();
    const hello = decodeMessage((await hs.start()).subarray(4));
    hello.key_shares = hello.key_shares.filter((s) => s.suite === 0x001d);
    sock.ws.send(plainFrame(encodeMessage(hello)));
    try { await events(sock, hs); out.stripped = "accepted"; }
    catch (e) { out.stripped = e.code; }
    out.state = hs.state;
    sock.ws.close();
  }
  return out;
}
"""


def test_hybrid_is_negotiated_and_a_stripped_share_is_detected(
        web_server: WebServer, new_page: Any) -> None:
    """The page offers version 2 with X25519MLKEM768 (1216-byte share) then X25519 (32) and the
    real server chooses the hybrid; when the hybrid share is stripped from Hello2 on the way,
    the ServerKey2 signature (over Hello2 as sent) fails: BAD_SERVER_SIGNATURE (113), before
    any credentials exist."""
    page = new_page()
    page.goto(web_server.url)
    page.wait_for_selector("body[data-ready=true]")
    out = page.evaluate(NEGOTIATION_JS)
    assert out == {"offered": [[0x11EC, 1216], [0x001D, 32]], "chosen": "X25519MLKEM768",
                   "stripped": 113, "state": "FAILED"}


KEY_UPDATE_SERVER_JS = """
async ([name, password]) => {
""" + RAW_SOCKET_JS + """
  const sock = await openSocket();
  const hs = new ClientHandshake();
  sock.ws.send(await hs.start());
  await events(sock, hs);
  hs.accept();
  sock.ws.send(await hs.register(name, password));
  await events(sock, hs);
  sock.ws.send(await hs.signin(name, password, new Uint8Array(16)));
  let done = null;
  for (const ev of await events(sock, hs)) if (ev.kind === "send") sock.ws.send(ev.data);
  for (const ev of await events(sock, hs)) if (ev.kind === "done") done = ev;
  // A low volume limit: the page ratchets its key every few Pings; the server follows.
  const session = new Session(done.keys, { sendLimit: 600 });
  const nonces = [];
  for (let i = 1; i <= 60; i++) sock.ws.send(await session.seal({ type: "Ping", nonce: i }));
  sock.ws.send(await session.updateKey()); // one early, as a sender MAY
  sock.ws.send(await session.seal({ type: "Ping", nonce: 61 }));
  while (nonces.length < 61) {
    const data = await sock.next();
    if (data === null) break;
    for (const msg of await session.receive(data)) if (msg.type === "Pong") nonces.push(msg.nonce);
  }
  sock.ws.close();
  return { suite: hs.suite.name, nonces, updates: session.keyUpdatesSent };
}
"""


def test_key_updates_from_the_page_are_followed_by_the_server(
        web_server: WebServer, new_page: Any) -> None:
    """A hybrid login on a raw WebSocket, then 61 Pings under a 600-byte volume limit: the
    page sends KeyUpdate before each key would pass it (and one early), and the server answers
    every Ping under the ratcheted keys."""
    page = new_page()
    page.goto(web_server.url)
    page.wait_for_selector("body[data-ready=true]")
    out = page.evaluate(KEY_UPDATE_SERVER_JS, ["v2keyupdate", PASSWORD])
    assert out["suite"] == "X25519MLKEM768"
    assert out["nonces"] == list(range(1, 62))
    # 32-byte padded Pings, at most 536 bytes per key: a KeyUpdate before the 17th, 33rd and
    # 49th Ping, plus the early one.
    assert out["updates"] == 4


KEY_UPDATE_PYTHON_JS = """
async ([a, b, fromPython]) => {
  const { FrameKey, FrameReader } = await import("/frames.js");
  const { SessionKeys } = await import("/handshake.js");
  const { Session } = await import("/session.js");
  const { fromHex, toHex } = await import("/bytes.js");
  const key = (secret) => FrameKey.fromTrafficSecret(fromHex(secret));
  const session = new Session(new SessionKeys(await key(a), await key(b), new FrameReader(),
    fromHex(a), fromHex(b)), { sendLimit: 1024, receiveLimit: 1024 });
  const received = [];
  for (const msg of await session.receive(fromHex(fromPython))) received.push(msg.req);
  const frames = [];
  for (let i = 0; i < 200; i++) {
    frames.push(toHex(await session.seal({ type: "Ok", req: i })));
  }
  return { received, updatesReceived: session.keyUpdatesReceived, toPython: frames.join(""),
           updatesSent: session.keyUpdatesSent, sendSecret: toHex(session.sendSecret) };
}
"""


def test_key_update_both_ways_against_the_python_session(
        web_server: WebServer, new_page: Any) -> None:
    """Under a 1 KiB volume limit, 200 messages each way between the page's Session and the
    Python reference Session: each side's KeyUpdates are followed by the other, every message
    arrives in order, and both end on the same ratcheted traffic secret."""
    a, b = b"a" * 32, b"b" * 32  # the page sends under a, the Python side under b
    python = Session(FrameEncoder(*schedule.traffic_key_iv(b)),
                     FrameDecoder(*schedule.traffic_key_iv(a)),
                     send_secret=b, receive_secret=a, volume_limit=1024)
    from_python = b"".join(python.send(m.Ok(i)) for i in range(200))
    assert python.key_updates_sent >= 3
    page = new_page()
    page.goto(web_server.url)
    page.wait_for_selector("body[data-ready=true]")
    out = page.evaluate(KEY_UPDATE_PYTHON_JS, [a.hex(), b.hex(), from_python.hex()])
    assert out["received"] == list(range(200))
    assert out["updatesReceived"] == python.key_updates_sent
    python.receive_data(bytes.fromhex(out["toPython"]))
    got = []
    while (msg := python.next_message()) is not None:
        assert isinstance(msg, m.Ok)
        got.append(msg.req)
    assert got == list(range(200))
    assert out["updatesSent"] == python.key_updates_received >= 3
    assert out["sendSecret"] == python._receive_secret.hex()
