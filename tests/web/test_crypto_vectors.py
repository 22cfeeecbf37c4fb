"""The page's own modules (WebCrypto, MessagePack, frames, handshake) against the spec's
known-answer vectors (docs/_vectors/*.txt and the encoding examples), run inside Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.web.conftest import WebServer

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "_vectors"
SPEC = Path(__file__).resolve().parents[2] / "docs" / "protocol.rst"


def _pairs(path: Path) -> list[tuple[str, str]]:
    """``name = value`` lines in order, and ``#`` comment lines as ("#", text)."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            out.append(("#", line))
        elif "=" in line:
            name, value = line.split("=", 1)
            out.append((name.strip(), value.strip()))
    return out


def handshake_vectors() -> dict[str, str]:
    return {k: v for k, v in _pairs(VECTORS / "handshake_vectors.txt") if k != "#"}


def frame_vectors() -> dict[str, Any]:
    top: dict[str, str] = {}
    frames: list[dict[str, Any]] = []
    padded = True
    current: dict[str, Any] | None = None
    for k, v in _pairs(VECTORS / "frame_vectors.txt"):
        if k == "#":
            if "No padding" in v:
                padded = False
            continue
        if k == "seq":
            current = {"seq": int(v), "padded": padded}
            frames.append(current)
        elif current is None:
            top[k] = v
        else:
            current[k] = "" if v == "(empty)" else v
    return {"key": top["key"], "static_iv": top["static_iv"], "frames": frames}


def encoding_examples() -> list[str]:
    """The hex bytes of the spec's "Encoding examples" (continuation lines joined)."""
    text = SPEC.read_text()
    section = text.split("Encoding examples", 1)[1].split("Key schedule", 1)[0]
    return [re.sub(r"\s+", "", m) for m in
            re.findall(r"bytes = ([0-9a-f]+(?:\n\s+[0-9a-f]+)*)", section)]


def _open(page: Any, server: WebServer) -> None:
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")


HANDSHAKE_JS = """
async (v) => {
  const { ClientHandshake } = await import("/handshake.js");
  const { fromHex, toHex, encoder } = await import("/bytes.js");
  const out = {};
  const randoms = [fromHex(v.client_random)];
  const hs = new ClientHandshake({
    random: () => randoms.shift(),
    fixedShares: [fromHex(v.client_ephemeral_private), fromHex(v.client_key_c_private)],
  });
  out.hello = toHex(await hs.start());
  const [sk] = await hs.receive(fromHex(v.server_key_frame));
  out.fingerprint = sk.fingerprint;
  out.identity = toHex(sk.identityKey);
  hs.accept();
  const device = fromHex("000102030405060708090a0b0c0d0e0f");
  out.register = toHex(await hs.register("alice", "hunter2-päss-✓"));
  out.registered = (await hs.receive(fromHex(v.frame_3_ackregister)))[0];
  out.signin_wrong = toHex(await hs.signin("alice", "hunter3-wrong", device));
  out.refused = (await hs.receive(fromHex(v.frame_5_nck)))[0];
  out.signin = toHex(await hs.signin("alice", "hunter2-päss-✓", device));
  const [send] = await hs.receive(fromHex(v.frame_7_ack));
  out.client_key_and_finished = toHex(send.data);
  const [done] = await hs.receive(fromHex(v.frame_10_hellodone));
  out.done = { name: done.name, session: toHex(done.sessionId), time: done.serverTimeMs };
  // A changed byte in the signature is refused before any credentials exist.
  const bad = fromHex(v.server_key_frame);
  bad[bad.length - 1] ^= 1;
  const hs2 = new ClientHandshake({ random: () => fromHex(v.client_random),
    fixedShares: [fromHex(v.client_ephemeral_private)] });
  await hs2.start();
  try { await hs2.receive(bad); out.bad_signature = "accepted"; }
  catch (e) { out.bad_signature = e.code; }
  return out;
}
"""


def test_handshake_known_answers_in_the_browser(web_server: WebServer, new_page: Any) -> None:
    """The page's handshake, fed the vectors' fixed randomness and server frames, produces
    byte for byte the vectors' client frames, fingerprint and session."""
    v = handshake_vectors()
    page = new_page()
    _open(page, web_server)
    out = page.evaluate(HANDSHAKE_JS, v)
    assert out["hello"] == v["hello_frame"]
    assert out["fingerprint"] == v["identity_fingerprint"]
    assert out["identity"] == v["identity_public"]
    assert out["register"] == v["frame_2_register"]
    assert out["registered"] == {"kind": "registered", "name": "alice"}
    assert out["signin_wrong"] == v["frame_4_signin"]
    assert out["refused"]["kind"] == "signin-refused" and out["refused"]["code"] == 200
    assert out["signin"] == v["frame_6_signin"]
    assert out["client_key_and_finished"] == v["frame_8_clientkey"] + v["frame_9_finished"]
    assert out["done"]["name"] == "alice"
    assert out["done"]["time"] == 1700000000000
    assert out["bad_signature"] == 113
    assert page.errors == []


FRAMES_JS = """
async (v) => {
  const { FrameKey, FrameReader } = await import("/frames.js");
  const { fromHex, toHex } = await import("/bytes.js");
  const sealed = [], opened = [], errors = [];
  const sender = await FrameKey.create(fromHex(v.key), fromHex(v.static_iv));
  const receiver = await FrameKey.create(fromHex(v.key), fromHex(v.static_iv));
  const reader = new FrameReader();
  let fresh = null;
  for (const f of v.frames) {
    if (f.padded) sealed.push(toHex(await sender.seal(fromHex(f.payload))));
    // Received one byte at a time, as any WebSocket split may deliver it.
    const r = f.padded ? receiver : (fresh = await FrameKey.create(fromHex(v.key),
      fromHex(v.static_iv)));
    const bytes = fromHex(f.frame);
    let got = null;
    for (let i = 0; i < bytes.length; i++) {
      reader.append(bytes.subarray(i, i + 1));
      const p = await reader.nextEncrypted(r);
      if (p !== null) got = toHex(p);
    }
    opened.push(got);
  }
  // Tampering: a flipped ciphertext bit is BAD_TAG, a replayed frame BAD_IV.
  const first = fromHex(v.frames[0].frame);
  const flipped = first.slice();
  flipped[20] ^= 1;
  for (const [label, bytes, seq] of [["tag", flipped, 0], ["replay", first, 1]]) {
    const k = await FrameKey.create(fromHex(v.key), fromHex(v.static_iv));
    k.seq = seq;
    const rd = new FrameReader();
    rd.append(bytes);
    try { await rd.nextEncrypted(k); errors.push([label, "accepted"]); }
    catch (e) { errors.push([label, e.code]); }
  }
  return { sealed, opened, errors };
}
"""


def test_frames_known_answers_in_the_browser(web_server: WebServer, new_page: Any) -> None:
    """Layer-1 frames: sealing with the default padding gives the vectors' bytes; every
    vector decrypts (fed byte by byte); a flipped bit and a replay are refused."""
    v = frame_vectors()
    page = new_page()
    _open(page, web_server)
    out = page.evaluate(FRAMES_JS, v)
    padded = [f for f in v["frames"] if f["padded"]]
    assert out["sealed"] == [f["frame"] for f in padded]
    assert out["opened"] == [f["payload"] for f in v["frames"]]
    assert out["errors"] == [["tag", 103], ["replay", 102]]


MSGPACK_JS = """
async (examples) => {
  const { decodeMessage, encodeMessage, decodeGroupEvent, decodeRecord } =
    await import("/messages.js");
  const { decode, encode } = await import("/msgpack.js");
  const { fromHex, toHex } = await import("/bytes.js");
  const roundTrips = [];
  for (const hex of examples) {
    const bytes = fromHex(hex);
    let again;
    try {
      again = toHex(encodeMessage(decodeMessage(bytes)));
    } catch {
      const v = decode(bytes); // a nested record: GroupEvent or ImageInfo
      again = toHex(encode(v));
    }
    roundTrips.push(again);
  }
  const rejected = [];
  for (const hex of ["81a161a162", "cb3ff0000000000000", "d4010a", "92ff01", "9221",
                     "9240", "924001c0", "9321c0", "a3626f62", "9343a3626f62c3"]) {
    try { decodeMessage(fromHex(hex)); rejected.push([hex, "accepted"]); }
    catch (e) { rejected.push([hex, e.code]); }
  }
  const lenient = decodeMessage(fromHex("9240d007")); // 7 as a signed int 8
  return { roundTrips, rejected, lenient: lenient.nonce };
}
"""


def test_messagepack_encoding_examples_in_the_browser(web_server: WebServer,
                                                      new_page: Any) -> None:
    """Every encoding example of the spec decodes and re-encodes to the same bytes (smallest
    representation); maps, floats, ext, negatives, wrong arity and trailing bytes are
    MALFORMED (105), unknown types 106; other integer encodings are accepted."""
    examples = encoding_examples()
    assert len(examples) >= 10
    page = new_page()
    _open(page, web_server)
    out = page.evaluate(MSGPACK_JS, examples)
    assert out["roundTrips"] == examples
    assert out["rejected"] == [
        ["81a161a162", 105], ["cb3ff0000000000000", 105], ["d4010a", 105], ["92ff01", 105],
        ["9221", 105], ["9240", 105], ["924001c0", 105], ["9321c0", 105], ["a3626f62", 105],
        ["9343a3626f62c3", 106],
    ]
    assert out["lenient"] == 7
