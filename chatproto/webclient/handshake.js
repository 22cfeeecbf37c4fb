// The client side of the handshake (docs/protocol.rst, "Handshake"): a state machine fed with
// received bytes, returning the bytes to send and the events for the caller. It performs no
// I/O; WebCrypto makes its steps asynchronous, so callers must not overlap calls.

import { concat, encoder, equal, uint32 } from "./bytes.js";
import { ed25519Verify, fingerprint, hkdf, hmacSha256, sha256 } from "./crypto.js";
import { encode } from "./msgpack.js";
import { decodeMessage, encodeMessage } from "./messages.js";
import { FrameKey, FrameReader, ProtocolError, frameIv, plainFrame } from "./frames.js";
import { classical } from "./suites.js";

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

/** Keys and leftover state handed to the session after HelloDone. */
export class SessionKeys {
  constructor(sendKey, receiveKey, reader) {
    this.sendKey = sendKey;
    this.receiveKey = receiveKey;
    this.reader = reader;
  }
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
   * @param {object} [options.suite] the key-exchange suite (default: classical)
   * @param {function} [options.random] n -> Uint8Array (tests fix it)
   * @param {Uint8Array[]} [options.fixedShares] fixed private keys (known-answer tests)
   */
  constructor({ suite = classical, random, fixedShares = [] } = {}) {
    this.suite = suite;
    this.random = random || ((n) => crypto.getRandomValues(new Uint8Array(n)));
    this.fixedShares = fixedShares.slice();
    this.state = HandshakeState.START;
    this.reader = new FrameReader();
    this.transcript = new Transcript();
  }

  async _share() {
    return this.suite.keyShare(this.fixedShares.shift());
  }

  /** The Hello frame. */
  async start() {
    this._expect(HandshakeState.START);
    this.share = await this._share();
    const clientRandom = this.random(32);
    this.helloBody = encodeMessage({
      type: "Hello", version: this.suite.version, client_random: clientRandom,
      client_key: this.share.publicKey,
    });
    this.transcript.add(this.helloBody);
    this.state = HandshakeState.AWAIT_SERVER_KEY;
    return plainFrame(this.helloBody);
  }

  /**
   * Feed received bytes. Returns a list of events:
   *   {kind: "server-key", fingerprint, identityKey}   decide with accept() / fail
   *   {kind: "registered", name} / {kind: "register-refused", code, reason, retryAfterMs}
   *   {kind: "signin-refused", code, reason, retryAfterMs}
   *   {kind: "send", data}                              bytes to write (ClientKey + Finished)
   *   {kind: "done", name, sessionId, serverTimeMs, keys}
   * Throws ProtocolError, HandshakeRefused or MalformedMessage on failure (then close).
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
        const body = await this.reader.nextEncrypted(this.hsReceive);
        if (body === null) return null;
        return this._answer(body);
      }
      case HandshakeState.AWAIT_HELLO_DONE: {
        const iv = this.reader.peekIv();
        if (iv === null) return null;
        const session = equal(iv, frameIv(this.sessionReceive.staticIv, 0));
        const body = await this.reader.nextEncrypted(session ? this.sessionReceive : this.hsReceive);
        if (body === null) return null;
        const msg = decodeMessage(body);
        if (session && msg.type === "HelloDone") {
          this.state = HandshakeState.DONE;
          return {
            kind: "done", name: msg.name, sessionId: msg.session_id,
            serverTimeMs: msg.server_time_ms,
            keys: new SessionKeys(this.sessionSend, this.sessionReceive, this.reader),
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
    if (msg.type !== "ServerKey") throw new ProtocolError(107, `unexpected ${msg.type}`);
    const tbs = encode([2, msg.server_random, msg.server_key, msg.identity_key]);
    const signed = concat(encoder.encode(this.suite.signatureContext), new Uint8Array(1),
      await sha256(concat(uint32(this.helloBody.length), this.helloBody, uint32(tbs.length), tbs)));
    if (!(await ed25519Verify(msg.identity_key, msg.signature, signed))) {
      throw new ProtocolError(113, "the server's signature does not verify");
    }
    this.transcript.add(body);
    const ikm = await this.suite.sharedSecret(this.share, msg.server_key);
    this.share = null;
    const okm = await hkdf(await this.transcript.hash(), ikm, this.suite.handshakeInfo, 88);
    this.hsSend = await FrameKey.create(okm.slice(0, 32), okm.slice(64, 76));
    this.hsReceive = await FrameKey.create(okm.slice(32, 64), okm.slice(76, 88));
    this.identityKey = msg.identity_key;
    this.fingerprint = await fingerprint(msg.identity_key);
    this.state = HandshakeState.AWAIT_IDENTITY_DECISION;
    return { kind: "server-key", fingerprint: this.fingerprint, identityKey: msg.identity_key };
  }

  /** The user (or the pin) accepted the server's identity; credentials may be sent. */
  accept() {
    this._expect(HandshakeState.AWAIT_IDENTITY_DECISION);
    this.state = HandshakeState.READY;
  }

  async _sendHs(msg) {
    const body = encodeMessage(msg);
    this.transcript.add(body);
    return this.hsSend.seal(body);
  }

  async signin(name, password, deviceId) {
    this._expect(HandshakeState.READY);
    this.state = HandshakeState.AWAIT_SIGNIN_ANSWER;
    return this._sendHs({ type: "Signin", name, password, device_id: deviceId });
  }

  async register(name, password) {
    this._expect(HandshakeState.READY);
    this.state = HandshakeState.AWAIT_REGISTER_ANSWER;
    return this._sendHs({ type: "Register", name, password });
  }

  async _answer(body) {
    const msg = decodeMessage(body);
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
    // Ack(B): ClientKey under the handshake key, then Finished under the session key.
    const share = await this._share();
    const clientKeyFrame = await this._sendHs({ type: "ClientKey", client_key: share.publicKey });
    const ikm = await this.suite.sharedSecret(share, msg.server_key);
    const th = await this.transcript.hash();
    const okm = await hkdf(th, ikm, this.suite.sessionInfo, 120);
    this.sessionSend = await FrameKey.create(okm.slice(0, 32), okm.slice(64, 76));
    this.sessionReceive = await FrameKey.create(okm.slice(32, 64), okm.slice(76, 88));
    const verifyData = await hmacSha256(okm.slice(88, 120), th);
    const finished = await this.sessionSend.seal(
      encodeMessage({ type: "Finished", verify_data: verifyData }));
    this.state = HandshakeState.AWAIT_HELLO_DONE;
    return { kind: "send", data: concat(clientKeyFrame, finished) };
  }

  _expect(state) {
    if (this.state !== state) throw new Error(`handshake is ${this.state}, not ${state}`);
  }
}
