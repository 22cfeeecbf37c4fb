"""The page's own modules (WebCrypto, MessagePack, frames, handshake) against the spec's
known-answer vectors (docs/_vectors/*.txt and the encoding examples), run inside Chromium."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chatproto.wire import messages as m
from chatproto.wire.handshake import server_key2_tbs
from chatproto.wire.keys import signature_input
from chatproto.wire.schedule import SIGNATURE_CONTEXT_V2
from chatproto.wire.suites import X25519_ID, X25519MLKEM768_ID
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


def v2_vectors() -> dict[str, str]:
    return {k: v for k, v in _pairs(VECTORS / "v2_vectors.txt") if k != "#"}


def seeded(label: bytes, sizes: list[int]) -> list[str]:
    """The vectors' fixed randomness: call i returns SHA-512(label || uint32 BE i)[:n]."""
    return [hashlib.sha512(label + struct.pack(">I", i)).digest()[:n].hex()
            for i, n in enumerate(sizes)]


#: A page-side rng handing out fixed values in order, each of the size asked for.
FIXED_RNG_JS = """
  const { fromHex } = await import("/bytes.js");
  const fixed = (values) => (n) => {
    const v = fromHex(values.shift());
    if (v.length !== n) throw new Error(`rng: ${n} bytes asked, ${v.length} fixed`);
    return v;
  };
"""

HYBRID_AND_SCHEDULE_JS = """
async ([v, clientSeeds]) => {
""" + FIXED_RNG_JS + """
  const { toHex } = await import("/bytes.js");
  const { X25519MLKEM768 } = await import("/suites.js");
  const s = await import("/schedule.js");
  const out = {};
  // ML-KEM-768 key generation from the seed, X25519 from the next call; decapsulation of the
  // vectors' ciphertext gives the hybrid secret.
  const pair = await X25519MLKEM768.generate(fixed(clientSeeds));
  out.share = toHex(pair.share);
  out.secret = toHex(await pair.decapsulate(fromHex(v.hybrid_server_response)));
  try { await pair.decapsulate(fromHex(v.hybrid_server_response)); out.reuse = "accepted"; }
  catch (e) { out.reuse = e.message; }
  // The chained schedule.
  const h1 = fromHex(v.schedule_h1), h2 = fromHex(v.schedule_h2);
  const hs = await s.handshakeSecret(fromHex(v.hybrid_shared_secret));
  out.handshake_secret = toHex(hs);
  const hsTraffic = await s.handshakeTraffic(hs, h1);
  out.c_hs_traffic = toHex(hsTraffic.client);
  out.s_hs_traffic = toHex(hsTraffic.server);
  const [cHsKey, cHsIv] = await s.trafficKeyIv(hsTraffic.client);
  out.c_hs_key = toHex(cHsKey);
  out.c_hs_iv = toHex(cHsIv);
  out.derived = toHex(await s.deriveSecret(hs, "derived", h2));
  const master = await s.masterSecret(hs, fromHex(v.schedule_shared_secret_2), h2);
  out.master_secret = toHex(master);
  const ap = await s.applicationTraffic(master, h2);
  out.c_ap_traffic = toHex(ap.client);
  out.s_ap_traffic = toHex(ap.server);
  out.finished_key = toHex(ap.finishedKey);
  const [sApKey, sApIv] = await s.trafficKeyIv(ap.server);
  out.s_ap_key = toHex(sApKey);
  out.s_ap_iv = toHex(sApIv);
  const counting = Uint8Array.from({ length: 32 }, (_, i) => i);
  out.key_update_next_secret = toHex(await s.nextTrafficSecret(counting));
  return out;
}
"""


def test_hybrid_suite_and_schedule_known_answers_in_the_browser(
        web_server: WebServer, new_page: Any) -> None:
    """X25519MLKEM768 through the vendored ML-KEM-768 and WebCrypto's X25519: the seeded key
    share and the decapsulated hybrid secret are the vectors'; a key pair decapsulates once.
    Every step of the chained key schedule and the KeyUpdate ratchet match the vectors."""
    v = v2_vectors()
    page = new_page()
    _open(page, web_server)
    out = page.evaluate(HYBRID_AND_SCHEDULE_JS, [v, seeded(b"v2 hybrid client", [64, 32])])
    assert out.pop("share") == v["hybrid_client_share"]
    assert out.pop("secret") == v["hybrid_shared_secret"]
    assert out.pop("reuse") == "key pair already used"
    assert out == {name: v[f"schedule_{name}"] for name in out if name != "key_update_next_secret"
                   } | {"key_update_next_secret": v["key_update_next_secret"]}
    assert page.errors == []


def signed_server_key2(v: dict[str, str], *, version: int, suite: int, share_len: int) -> str:
    """A ServerKey2 frame answering the flow's Hello2, signed by the flow's identity (the
    Ed25519 key of 32 zero bytes) but choosing ``version`` and ``suite``."""
    identity = Ed25519PrivateKey.from_private_bytes(bytes(32))
    identity_public = identity.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    hello2 = bytes.fromhex(v["flow_hello2_frame"])[4:]
    share, server_random = b"\x09" * share_len, b"\x07" * 32
    tbs = server_key2_tbs(version, suite, server_random, share, identity_public)
    signature = identity.sign(signature_input(hello2, tbs, context=SIGNATURE_CONTEXT_V2))
    body = m.encode_message(m.ServerKey2(version, suite, server_random, share, identity_public,
                                         signature))
    return (struct.pack(">I", len(body)) + body).hex()


V2_LOGIN_JS = """
async ([v, clientRandoms, notOffered]) => {
""" + FIXED_RNG_JS + """
  const { toHex, concat } = await import("/bytes.js");
  const { ClientHandshake } = await import("/handshake.js");
  const { X25519_ID } = await import("/suites.js");
  const out = {};
  const hs = new ClientHandshake({ suites: [X25519_ID], rng: fixed(clientRandoms.slice()) });
  out.hello2 = toHex(await hs.start());
  const [sk] = await hs.receive(fromHex(v.flow_server_key2_frame));
  out.suite = sk.suite;
  hs.accept();
  const device = fromHex("000102030405060708090a0b0c0d0e0f");
  out.signin = toHex(await hs.signin("alice", "hunter2-p\\u00e4ss-\\u2713", device));
  const [send] = await hs.receive(fromHex(v.flow_ack_frame));
  out.client_key_and_finished = toHex(send.data);
  const [done] = await hs.receive(fromHex(v.flow_hello_done_frame));
  out.done = { name: done.name, session: toHex(done.sessionId), time: done.serverTimeMs };
  // A changed byte of ServerKey2 (here: its signature) is refused before credentials exist.
  for (const [label, at] of [["bad_signature", -1], ["bad_version", 6], ["bad_suite", 7]]) {
    const bad = fromHex(v.flow_server_key2_frame);
    bad[at < 0 ? bad.length + at : at] ^= 1;
    const other = new ClientHandshake({ suites: [X25519_ID], rng: fixed(clientRandoms.slice()) });
    await other.start();
    try { await other.receive(bad); out[label] = "accepted"; }
    catch (e) { out[label] = e.code; }
  }
  // Validly signed, but a version or suite the page did not offer: UNSUPPORTED_VERSION.
  for (const [label, frame] of Object.entries(notOffered)) {
    const other = new ClientHandshake({ suites: [X25519_ID], rng: fixed(clientRandoms.slice()) });
    await other.start();
    try { await other.receive(fromHex(frame)); out[label] = "accepted"; }
    catch (e) { out[label] = e.code; }
  }
  return out;
}
"""


def test_v2_login_known_answers_in_the_browser(web_server: WebServer, new_page: Any) -> None:
    """The page's version-2 handshake, fed the vectors' fixed randomness and server frames,
    produces byte for byte the vectors' Hello2, the padded Signin, ClientKey and Finished, and
    reaches the session; an edited ServerKey2 (signature, version or chosen suite: all signed)
    is BAD_SERVER_SIGNATURE (113); a validly signed choice of a version or suite the page did
    not offer is UNSUPPORTED_VERSION (108)."""
    v = v2_vectors()
    page = new_page()
    _open(page, web_server)
    out = page.evaluate(V2_LOGIN_JS, [v, seeded(b"client", [32, 32, 32]), {
        "other_suite": signed_server_key2(v, version=2, suite=X25519MLKEM768_ID, share_len=1120),
        "other_version": signed_server_key2(v, version=3, suite=X25519_ID, share_len=32)}])
    assert out["hello2"] == v["flow_hello2_frame"]
    assert out["suite"] == "X25519"
    assert out["signin"] == v["flow_signin_frame"]
    assert out["client_key_and_finished"] == v["flow_client_key_frame"] + v["flow_finished_frame"]
    assert out["done"] == {"name": "alice", "session": bytes(range(0x64, 0x74)).hex(),
                           "time": 1700000000000}
    assert [out["bad_signature"], out["bad_version"], out["bad_suite"]] == [113, 113, 113]
    assert [out["other_suite"], out["other_version"]] == [108, 108]
    assert page.errors == []


FRAMES_JS = """
async (v) => {
  const { FrameKey, FrameReader } = await import("/frames.js");
  const { fromHex, toHex } = await import("/bytes.js");
  const sealed = [], opened = [], errors = [];
  const receiver = await FrameKey.create(fromHex(v.key), fromHex(v.static_iv));
  const reader = new FrameReader();
  let fresh = null;
  for (const f of v.frames) {
    // Version 2 pads inside the message: the page seals with pad_length 0.
    if (!f.padded) {
      const fresh = await FrameKey.create(fromHex(v.key), fromHex(v.static_iv));
      fresh.seq = f.seq;
      sealed.push(toHex(await fresh.seal(fromHex(f.payload))));
    }
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
    """Layer-1 frames: sealing without layer-1 padding (version 2) gives the vectors' bytes;
    every vector, padded or not, decrypts (fed byte by byte); a flipped bit and a replay are
    refused."""
    v = frame_vectors()
    page = new_page()
    _open(page, web_server)
    out = page.evaluate(FRAMES_JS, v)
    unpadded = [f for f in v["frames"] if not f["padded"]]
    assert unpadded and out["sealed"] == [f["frame"] for f in unpadded]
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
                     "9240", "924001c0", "9321c0", "a3626f62", "9344a3626f62c3"]) {
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
        ["9344a3626f62c3", 106],
    ]
    assert out["lenient"] == 7
