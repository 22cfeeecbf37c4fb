// The client side of the handshake, protocol version 2 (docs/protocol.rst, "Handshake" and
// "Protocol version 2"): a state machine fed with received bytes, returning the bytes to send
// and the events for the caller. It performs no I/O; WebCrypto makes its steps asynchronous,
// so callers must not overlap calls.
//
// The page offers version 2 only, with X25519MLKEM768 then X25519, like the Python client; it
// never falls back to version 1 (that fallback is the downgrade the signed offer prevents).

import { concat, encoder, equal, uint32 } from "./bytes.js";
import { ed25519Verify, fingerprint, hmacSha256, sha256 } from "./crypto.js";
import { MalformedMessage, encode } from "./msgpack.js";
import { decodeMessage, decodePadded, encodeMessage, padMessage } from "./messages.js";
import { FrameKey, FrameReader, ProtocolError, frameIv, plainFrame } from "./frames.js";
import {
  SIGNATURE_CONTEXT_V2, applicationTraffic, handshakeSecret, handshakeTraffic, masterSecret,
} from "./schedule.js";
import { DEFAULT_SUITES, SUITES } from "./suites.js";

export const PROTOCOL_VERSION = 2;

export const HandshakeState = Object.freeze({
  START: "START",
  AWAIT_SERVER_KEY: "AWAIT_SERVER_KEY",
  AWAIT_IDENTITY_DECISION: "AWAIT_IDENTITY_DECISION",
  READY: "READY",
  AWAIT_SIGNIN_ANSWER: "AWAIT_SIGNIN_ANSWER",
  AWAIT_REGISTER_ANSWER: "AWAIT_REGISTER_ANSWER",
  AWAIT_HELLO_DONE: "AWAIT_HELLO_DONE",
  DONE: "DONE",
  FAILED: "FAILED",
});

const CODE_CLASSES = { 1: "a protocol error", 2: "an authentication error", 3: "a request error",
  5: "a server error" };

/**
 * The fixed text shown for an Error that arrived before the server proved its identity
 * (a plaintext frame anyone could have sent): only the class of its code, never its text.
 */
export function unauthenticatedReason(code) {
  const cls = Math.floor(code / 100);
  const what = CODE_CLASSES[cls] || "an error";
  return `the server closed the connection with ${what} (${cls}xx) before proving its ` +
    "identity; its text is not shown because anyone could have sent it";
}

/** A refusal or failure the server reported (Error, HelloError, Nck with 205). */
export class HandshakeRefused extends Error {
  constructor(code, reason) {
    super(`${code}: ${reason}`);
    this.name = "HandshakeRefused";
    this.code = code;
    this.reason = reason;
  }
}

/** Keys, traffic secrets (for KeyUpdate) and leftover bytes handed to the session. */
export class SessionKeys {
  constructor(sendKey, receiveKey, reader, sendSecret, receiveSecret) {
    this.sendKey = sendKey;
    this.receiveKey = receiveKey;
    this.reader = reader;
    this.sendSecret = sendSecret;
    this.receiveSecret = receiveSecret;
  }
}

/** The message in a version-2 encrypted payload and its own (unpadded, canonical) bytes. */
function decodeHandshakePayload(payload) {
  const [msg, body] = decodePadded(payload);
  if (!equal(encodeMessage(msg), body)) {
    throw new MalformedMessage("a handshake message not in canonical encoding");
  }
  return [msg, body];
}

class Transcript {
  constructor() {
    this.parts = [];
  }
  add(body) {
    this.parts.push(uint32(body.length), body);
  }
  hash() {
    return sha256(concat(...this.parts));
  }
}

export class ClientHandshake {
  /**
   * @param {object} options
   * @param {number[]} [options.suites] suite ids to offer, best first (default: the hybrid,
   *   then X25519)
   * @param {function} [options.rng] n -> Uint8Array: fixed randomness for known-answer tests;
   *   client_random and every private key then come from it, in the Python reference's order
   */
  constructor({ suites = DEFAULT_SUITES, rng = null } = {}) {
    if (!suites.length || suites.some((s) => !SUITES.has(s)) ||
        new Set(suites).size !== suites.length) {
      throw new Error(`bad suite list ${suites}`);
    }
    this.offered = suites.slice();
    this.rng = rng;
    this.random = rng || ((n) => crypto.getRandomValues(new Uint8Array(n)));
    this.state = HandshakeState.START;
    this.reader = new FrameReader();
    this.transcript = new Transcript();
    this.keyPairs = new Map();
    this.suite = null;
  }

  /** The Hello2 frame: one key share per offered suite. */
  async start() {
    this._expect(HandshakeState.START);
    this.state = HandshakeState.AWAIT_SERVER_KEY;
    const clientRandom = this.random(32);
    for (const id of this.offered) {
      this.keyPairs.set(id, await SUITES.get(id).generate(this.rng));
    }
    const shares = [...this.keyPairs].map(([suite, pair]) => ({ suite, share: pair.share }));
    this.helloBody = encodeMessage({
      type: "Hello2", versions: [PROTOCOL_VERSION], client_random: clientRandom,
      key_shares: shares,
    });
    this.transcript.add(this.helloBody);
    return plainFrame(this.helloBody);
  }

  /**
   * Feed received bytes. Returns a list of events:
   *   {kind: "server-key", fingerprint, identityKey, suite}   decide with accept() / fail
   *   {kind: "registered", name} / {kind: "register-refused", code, reason, retryAfterMs}
   *   {kind: "signin-refused", code, reason, retryAfterMs}
   *   {kind: "send", data}                              bytes to write (ClientKey + Finished)
   *   {kind: "done", name, sessionId, serverTimeMs, keys}
   * Throws ProtocolError, HandshakeRefused, CryptoFailure or MalformedMessage on failure
   * (then close).
   */
  async receive(data) {
    this.reader.append(data);
    const events = [];
    try {
      for (;;) {
        const event = await this._step();
        if (event === null) break;
        events.push(event);
        if (event.kind === "done" || event.kind === "server-key") break;
      }
    } catch (e) {
      this.state = HandshakeState.FAILED;
      throw e;
    }
    return events;
  }

  async _step() {
    switch (this.state) {
      case HandshakeState.AWAIT_SERVER_KEY: {
        const body = this.reader.nextPlain();
        if (body === null) return null;
        return this._serverKey(body);
      }
      case HandshakeState.AWAIT_SIGNIN_ANSWER:
      case HandshakeState.AWAIT_REGISTER_ANSWER: {
        const payload = await this.reader.nextEncrypted(this.hsReceive);
        if (payload === null) return null;
        return this._answer(...decodeHandshakePayload(payload));
      }
      case HandshakeState.AWAIT_HELLO_DONE: {
        // HelloDone comes under the session keys, HelloError under the handshake keys: the
        // frame's iv (counter 0 under the session key) says which.
        const iv = this.reader.peekIv();
        if (iv === null) return null;
        const session = equal(iv, frameIv(this.sessionReceive.staticIv, 0));
        const payload = await this.reader.nextEncrypted(
          session ? this.sessionReceive : this.hsReceive);
        if (payload === null) return null;
        const [msg] = decodeHandshakePayload(payload);
        if (session && msg.type === "HelloDone") {
          this.state = HandshakeState.DONE;
          const keys = new SessionKeys(this.sessionSend, this.sessionReceive, this.reader,
            this.secrets.client, this.secrets.server);
          this.secrets = null;
          return {
            kind: "done", name: msg.name, sessionId: msg.session_id,
            serverTimeMs: msg.server_time_ms, keys,
          };
        }
        if (!session && (msg.type === "HelloError" || msg.type === "Error")) {
          throw new HandshakeRefused(msg.code, msg.reason);
        }
        throw new ProtocolError(107, `unexpected ${msg.type}`);
      }
      default:
        // Waiting for our own decision or the user's action: the server has nothing to say.
        if (this.reader.buf.length > 0 && this.state !== HandshakeState.AWAIT_IDENTITY_DECISION) {
          throw new ProtocolError(107, "unexpected data from the server");
        }
        return null;
    }
  }

  async _serverKey(body) {
    const msg = decodeMessage(body);
    if (msg.type === "Error") throw new HandshakeRefused(msg.code, unauthenticatedReason(msg.code));
    if (msg.type !== "ServerKey2") throw new ProtocolError(107, `unexpected ${msg.type}`);
    if (!equal(encodeMessage(msg), body)) {
      throw new MalformedMessage("a handshake message not in canonical encoding");
    }
    // Signed over Hello2 as we sent it: a share stripped on the way changes what the server
    // signed, so a downgrade fails here, before anything secret is sent.
    const tbs = encode([14, msg.version, msg.suite, msg.server_random, msg.server_share,
      msg.identity_key]);
    const signed = concat(encoder.encode(SIGNATURE_CONTEXT_V2), new Uint8Array(1),
      await sha256(concat(uint32(this.helloBody.length), this.helloBody, uint32(tbs.length), tbs)));
    if (!(await ed25519Verify(msg.identity_key, msg.signature, signed))) {
      throw new ProtocolError(113, "the server's signature does not verify");
    }
    if (msg.version !== PROTOCOL_VERSION || !this.keyPairs.has(msg.suite)) {
      throw new ProtocolError(108,
        `the server chose version ${msg.version}, suite ${msg.suite}, which were not offered`);
    }
    this.transcript.add(body);
    const pair = this.keyPairs.get(msg.suite);
    this.keyPairs.clear(); // the other offered suites' private keys are never used
    this.suite = SUITES.get(msg.suite);
    this.hsSecret = await handshakeSecret(await pair.decapsulate(msg.server_share));
    const traffic = await handshakeTraffic(this.hsSecret, await this.transcript.hash());
    this.hsSend = await FrameKey.fromTrafficSecret(traffic.client);
    this.hsReceive = await FrameKey.fromTrafficSecret(traffic.server);
    this.identityKey = msg.identity_key;
    this.fingerprint = await fingerprint(msg.identity_key);
    this.state = HandshakeState.AWAIT_IDENTITY_DECISION;
    return {
      kind: "server-key", fingerprint: this.fingerprint, identityKey: msg.identity_key,
      suite: this.suite.name,
    };
  }

  /** The user (or the pin) accepted the server's identity; credentials may be sent. */
  accept() {
    this._expect(HandshakeState.AWAIT_IDENTITY_DECISION);
    this.state = HandshakeState.READY;
  }

  async _sendHs(msg, credentials = false) {
    const body = encodeMessage(msg);
    this.transcript.add(body);
    return this.hsSend.seal(padMessage(body, credentials));
  }

  async signin(name, password, deviceId) {
    this._expect(HandshakeState.READY);
    this.state = HandshakeState.AWAIT_SIGNIN_ANSWER;
    return this._sendHs({ type: "Signin", name, password, device_id: deviceId }, true);
  }

  async register(name, password) {
    this._expect(HandshakeState.READY);
    this.state = HandshakeState.AWAIT_REGISTER_ANSWER;
    return this._sendHs({ type: "Register", name, password }, true);
  }

  async _answer(msg, body) {
    const signin = this.state === HandshakeState.AWAIT_SIGNIN_ANSWER;
    const allowed = signin ? ["Nck", "Ack"] : ["NckRegister", "AckRegister"];
    if (msg.type === "Error" || msg.type === "HelloError") {
      throw new HandshakeRefused(msg.code, msg.reason);
    }
    if (!allowed.includes(msg.type)) throw new ProtocolError(107, `unexpected ${msg.type}`);
    this.transcript.add(body);
    if (msg.type === "Nck" || msg.type === "NckRegister") {
      if (msg.code === 205) throw new HandshakeRefused(205, msg.reason);
      this.state = HandshakeState.READY;
      return {
        kind: signin ? "signin-refused" : "register-refused", code: msg.code,
        reason: msg.reason, retryAfterMs: msg.retry_after_ms,
      };
    }
    if (msg.type === "AckRegister") {
      this.state = HandshakeState.READY;
      return { kind: "registered", name: msg.name };
    }
    // Ack: the response to the server's share (ClientKey, handshake key), then Finished under
    // the session key. The second exchange's secret is chained onto the first one's.
    const { secret, response } = await this.suite.encapsulate(msg.server_key, this.rng);
    const clientKeyFrame = await this._sendHs({ type: "ClientKey", client_key: response });
    const h2 = await this.transcript.hash();
    const master = await masterSecret(this.hsSecret, secret, h2);
    this.hsSecret = null;
    this.secrets = await applicationTraffic(master, h2);
    this.sessionSend = await FrameKey.fromTrafficSecret(this.secrets.client);
    this.sessionReceive = await FrameKey.fromTrafficSecret(this.secrets.server);
    const verifyData = await hmacSha256(this.secrets.finishedKey, h2);
    const finished = await this.sessionSend.seal(
      padMessage(encodeMessage({ type: "Finished", verify_data: verifyData })));
    this.state = HandshakeState.AWAIT_HELLO_DONE;
    return { kind: "send", data: concat(clientKeyFrame, finished) };
  }

  _expect(state) {
    if (this.state !== state) throw new Error(`handshake is ${this.state}, not ${state}`);
  }
}
