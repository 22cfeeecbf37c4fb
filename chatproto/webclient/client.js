// The chat client library of the page: one WebSocket per login, the handshake, the session,
// requests and replies, delivery with a persistent cursor, an outbox in IndexedDB, ping and
// reconnection with backoff. It emits events; app.js draws them.

import { ClientHandshake, HandshakeRefused } from "./handshake.js";
import { Session } from "./session.js";
import { CONTENT, RECEIPT } from "./messages.js";
import { concat, randomBytes, toHex } from "./bytes.js";
import { sha256 } from "./crypto.js";

export const CHUNK = 524288;
export const MAX_IMAGE = 10 * 1024 * 1024;
const PING_INTERVAL = 25000;
const PING_TIMEOUT = 10000;
const BACKOFF_INITIAL = 500;
const BACKOFF_MAX = 30000;
const TRANSIENT = new Set([500, 501, 112]);

/** Why a login cannot go on (the UI shows it; no reconnection). */
export class LoginFailed extends Error {
  constructor(kind, detail = {}) {
    super(detail.reason || kind);
    Object.assign(this, detail);
    this.kind = kind; // "auth", "register", "key-changed", "untrusted", "refused", "protocol"
  }
}

/** The page's server: the WebSocket URL and the name its pin is stored under. */
export function serverFromLocation(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return { url: `${scheme}//${loc.host}/ws`, pinName: loc.host };
}

/** ``#fp=SHA256:...`` in the URL fragment: a fingerprint given out of band, or null. */
export function fingerprintFromFragment(hash = window.location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const fp = params.get("fp");
  return fp && /^SHA256:[A-Za-z0-9+/]{43}$/.test(fp) ? fp : null;
}

export class ChatClient extends EventTarget {
  /**
   * @param {object} o
   * @param {object} o.server {url, pinName}
   * @param {LocalStore} o.store
   * @param {function} o.confirmServer async (fingerprint) -> boolean, first contact
   * @param {string|null} o.expectedFingerprint from the URL fragment
   */
  constructor({ server, store, confirmServer, expectedFingerprint = null }) {
    super();
    this.server = server;
    this.store = store;
    this.confirmServer = confirmServer;
    this.expectedFingerprint = expectedFingerprint;
    this.name = null;
    this.state = "offline";
    this.nextReq = 1;
    this.pending = new Map();
    this.inFlight = new Map(); // req -> outbox item
    this.blocked = []; // outbox items waiting for an image's SendAck
    this.images = new Map(); // user_seq -> partial image
    this.incomplete = new Set();
    this.cursor = null;
    this.ackedUpTo = 0;
    this.attempt = 0;
    this.closedByUser = false;
    this.suite = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state) {
    this.state = state;
    this.emit("state", state);
  }

  // --- login ------------------------------------------------------------------------------

  /** Register (if asked) and sign in; resolves on HelloDone, rejects with LoginFailed. */
  async login(name, password, { register = false } = {}) {
    this.name = name;
    this._password = password; // in memory only, for reconnecting
    this.deviceId = await this.store.deviceId();
    this.cursor = await this.store.cursor(name);
    this.ackedUpTo = this.cursor ?? 0;
    this.closedByUser = false;
    this.setState("connecting");
    this.justPinned = false;
    try {
      await this._connect(register);
    } catch (err) {
      // The server closes a login that stays idle (5 s by default) while the user compares
      // the fingerprint: once it is pinned, the login starts again on a new connection.
      if (!(this.justPinned && err instanceof LoginFailed && err.kind === "refused")) throw err;
      await this._connect(register);
    }
  }

  _connect(register) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.server.url);
      ws.binaryType = "arraybuffer";
      const hs = new ClientHandshake();
      const conn = { ws, hs, session: null, chain: Promise.resolve(), sendChain: Promise.resolve(),
        settled: false };
      this.conn = conn;
      let registering = register;
      const fail = (err) => {
        if (!conn.settled) {
          conn.settled = true;
          reject(err);
        }
        try { ws.close(); } catch { /* already closed */ }
      };
      const handshakeEvent = async (ev) => {
        if (ev.kind === "server-key") {
          this.suite = ev.suite; // the key exchange the server chose (shown by the page)
          conn.deciding = true;
          const verdict = await this._checkServer(ev.fingerprint);
          conn.deciding = false;
          if (verdict !== true) return fail(verdict);
          if (conn.dead) {
            return fail(new LoginFailed("refused", { reason: "the connection closed" }));
          }
          hs.accept();
          this._write(conn, registering
            ? hs.register(this.name, this._password)
            : hs.signin(this.name, this._password, this.deviceId));
        } else if (ev.kind === "registered") {
          registering = false;
          this.emit("registered", ev.name);
          this._write(conn, hs.signin(this.name, this._password, this.deviceId));
        } else if (ev.kind === "register-refused" || ev.kind === "signin-refused") {
          fail(new LoginFailed(ev.kind === "register-refused" ? "register" : "auth", ev));
        } else if (ev.kind === "send") {
          this._write(conn, Promise.resolve(ev.data));
        } else if (ev.kind === "done") {
          conn.session = new Session(ev.keys);
          conn.settled = true;
          this.attempt = 0;
          this._started(conn);
          resolve();
          await this._receive(conn, new Uint8Array(0));
        }
      };
      ws.onopen = () => this._write(conn, hs.start());
      ws.onmessage = (e) => {
        const data = new Uint8Array(e.data);
        conn.chain = conn.chain.then(async () => {
          if (conn.dead) return;
          try {
            if (conn.session) {
              await this._receive(conn, data);
            } else {
              for (const ev of await hs.receive(data)) await handshakeEvent(ev);
            }
          } catch (err) {
            conn.dead = true;
            const reason = err instanceof HandshakeRefused ? err.reason : err.message;
            fail(new LoginFailed(err.code === 113 ? "protocol" : "refused",
              { code: err.code, reason }));
            this.emit("protocol-error", { code: err.code, reason });
          }
        });
      };
      ws.onclose = () => {
        conn.dead = true;
        this._stopTimers(conn);
        if (conn.deciding) return; // reported once the user has decided
        if (!conn.settled) {
          conn.settled = true;
          reject(new LoginFailed("refused", { reason: "the connection closed" }));
          return;
        }
        if (conn.session) this._lost(conn);
      };
    });
  }

  async _checkServer(fp) {
    const pinned = await this.store.pinnedFingerprint(this.server.pinName);
    const expected = this.expectedFingerprint || pinned;
    if (expected) {
      if (expected === fp) {
        if (!pinned) await this.store.pin(this.server.pinName, fp);
        return true;
      }
      return new LoginFailed("key-changed", { pinned: expected, received: fp, code: 114,
        fromLink: expected === this.expectedFingerprint });
    }
    if (await this.confirmServer(fp)) {
      await this.store.pin(this.server.pinName, fp);
      this.justPinned = true;
      return true;
    }
    return new LoginFailed("untrusted", { received: fp });
  }

  _write(conn, framePromise) {
    conn.sendChain = conn.sendChain.then(() => framePromise).then((frame) => {
      if (conn.ws.readyState === WebSocket.OPEN) conn.ws.send(frame);
    });
    return conn.sendChain;
  }

  send(msg) {
    const conn = this.conn;
    if (!conn || !conn.session || conn.dead) return false;
    this._write(conn, conn.session.seal(msg));
    return true;
  }

  request(msg) {
    const req = this.nextReq++;
    if (this.nextReq > 0xffffffff) this.nextReq = 1;
    return new Promise((resolve, reject) => {
      this.pending.set(req, { resolve, reject });
      if (!this.send({ ...msg, req })) {
        this.pending.delete(req);
        reject(new Error("not connected"));
      }
    });
  }

  // --- session ----------------------------------------------------------------------------

  _started(conn) {
    const resumed = this.everConnected;
    this.everConnected = true;
    this.setState(resumed ? "resumed" : "connected");
    this._schedulePing(conn);
    this.request({ type: "Sync", cursor: this.cursor }).then(
      (done) => this.emit("synced", done.last_seq), () => {});
    this._flushOutbox();
  }

  _schedulePing(conn) {
    conn.pingTimer = setTimeout(() => {
      if (conn.dead) return;
      conn.pingNonce = (conn.pingNonce || 0) + 1;
      this.send({ type: "Ping", nonce: conn.pingNonce });
      conn.pongTimer = setTimeout(() => conn.ws.close(), PING_TIMEOUT);
    }, PING_INTERVAL);
  }

  _stopTimers(conn) {
    clearTimeout(conn.pingTimer);
    clearTimeout(conn.pongTimer);
  }

  _lost(conn) {
    for (const [, p] of this.pending) p.reject(new Error("connection lost"));
    this.pending.clear();
    this.inFlight.clear();
    this.blocked = [];
    this.images.clear();
    this.incomplete.clear();
    if (this.closedByUser || this.conn !== conn) return;
    this.setState("reconnecting");
    const cap = Math.min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** this.attempt++);
    const delay = Math.random() * cap;
    this.reconnectTimer = setTimeout(() => this._reconnect(), delay);
  }

  async _reconnect() {
    if (this.closedByUser) return;
    try {
      this.cursor = await this.store.cursor(this.name);
      await this._connect(false);
    } catch (err) {
      if (err instanceof LoginFailed && err.kind === "auth" && err.code === 201) {
        // TRY_LATER: rate limited; wait at least as long as the server says.
        this.setState("reconnecting");
        this.reconnectTimer = setTimeout(() => this._reconnect(), err.retryAfterMs + 100);
        return;
      }
      if (err instanceof LoginFailed && err.kind !== "refused") {
        this.setState("offline");
        this.emit("fatal", err);
        return;
      }
      this._lost(this.conn);
    }
  }

  /** Quit politely and stay offline. */
  quit() {
    this.closedByUser = true;
    clearTimeout(this.reconnectTimer);
    const conn = this.conn;
    if (conn && conn.session && !conn.dead) {
      this.request({ type: "Quit" }).catch(() => {});
    } else if (conn) {
      conn.ws.close();
    }
    this.setState("offline");
  }

  async _receive(conn, data) {
    for (const msg of await conn.session.receive(data)) {
      if (conn.dead) return;
      this._handle(conn, msg);
    }
  }

  _handle(conn, msg) {
    switch (msg.type) {
      case "Ping":
        this.send({ type: "Pong", nonce: msg.nonce });
        return;
      case "Pong":
        if (msg.nonce === conn.pingNonce) {
          clearTimeout(conn.pongTimer);
          this._schedulePing(conn);
        }
        return;
      case "Deliver":
        this._deliver(msg);
        return;
      case "ImageChunk":
        this._chunk(msg);
        return;
      case "Receipt":
        this.emit("receipt", msg);
        return;
      case "TypingEvent":
        this.emit("typing", msg);
        return;
      case "PresenceEvent":
        this.emit("presence", msg);
        return;
      case "SendAck":
        this._sendAck(msg);
        return;
      case "Error":
        if (msg.req === 0) {
          if (msg.code >= 300 && msg.code < 400) {
            this.emit("notice", msg);
          } else {
            conn.dead = true;
            conn.ws.close();
            this.emit("protocol-error", msg);
          }
          return;
        }
        if (this.inFlight.has(msg.req)) {
          this._sendError(msg);
          return;
        }
        break;
      default:
        break;
    }
    const waiter = this.pending.get(msg.req);
    if (waiter) {
      this.pending.delete(msg.req);
      if (msg.type === "Error") waiter.reject(Object.assign(new Error(msg.reason), msg));
      else waiter.resolve(msg);
    } else if (msg.type === "AckQuit") {
      conn.ws.close();
    }
  }

  // --- receiving ----------------------------------------------------------------------------

  _deliver(msg) {
    if (this.cursor !== null && msg.user_seq <= this.cursor) return;
    if (msg.content_type === CONTENT.IMAGE && msg.image) {
      const parts = [msg.body];
      const item = { msg, parts, received: msg.body.length };
      this.images.set(msg.user_seq, item);
      this.incomplete.add(msg.user_seq);
      this._maybeImageDone(item);
    } else {
      this.emit("message", msg);
      this._advance(msg.user_seq);
    }
  }

  _chunk(msg) {
    const item = this.images.get(msg.ref);
    if (!item) return;
    item.parts.push(msg.data);
    item.received += msg.data.length;
    this._maybeImageDone(item);
  }

  async _maybeImageDone(item) {
    const { msg } = item;
    if (item.received < msg.image.total_size) return;
    this.images.delete(msg.user_seq);
    const bytes = concat(...item.parts);
    const ok = bytes.length === msg.image.total_size &&
      toHex(await sha256(bytes)) === toHex(msg.image.sha256);
    this.emit("message", { ...msg, imageBytes: ok ? bytes : null });
    this.incomplete.delete(msg.user_seq);
    this._advance(msg.user_seq);
  }

  _advance(seq) {
    // The cursor may not pass an image still arriving.
    let limit = seq;
    for (const s of this.incomplete) limit = Math.min(limit, s - 1);
    if (this.cursor === null || limit > this.cursor) {
      this.cursor = limit;
      this.store.setCursor(this.name, limit);
    }
    if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        if (this.cursor !== null && this.cursor > this.ackedUpTo) {
          if (this.send({ type: "DeliveryAck", up_to: this.cursor })) this.ackedUpTo = this.cursor;
        }
      }, 100);
    }
  }

  // --- sending ------------------------------------------------------------------------------

  /** Queue a text message (persisted first); returns the outbox item. */
  async sendText(target, text) {
    return this._queue(target, CONTENT.TEXT, new TextEncoder().encode(text));
  }

  /** Queue an image (PNG/JPEG/GIF/WebP bytes, at most MAX_IMAGE). */
  async sendImage(target, bytes) {
    if (bytes.length === 0 || bytes.length > MAX_IMAGE) throw new Error("image too large");
    return this._queue(target, CONTENT.IMAGE, bytes);
  }

  async _queue(target, contentType, body) {
    const clientMsgId = randomBytes(16);
    const item = {
      id: toHex(clientMsgId), account: this.name, clientMsgId, groupId: target.groupId || 0,
      to: target.groupId ? null : target.peer, contentType, body, queued: Date.now(),
      sha256: contentType === CONTENT.IMAGE ? await sha256(body) : null,
    };
    await this.store.addToOutbox(item);
    this.emit("queued", item);
    this._sendItem(item);
    return item;
  }

  async _flushOutbox() {
    this.flushing = true;
    try {
      for (const item of await this.store.outbox(this.name)) {
        this.emit("queued", item);
        this._sendItem(item);
      }
    } finally {
      this.flushing = false;
    }
  }

  _sendItem(item) {
    for (const sent of this.inFlight.values()) if (sent.id === item.id) return;
    if (this.blocked.some((b) => b.id === item.id)) return;
    // Messages queued after an image wait for its SendAck, so they are stored after it.
    if ([...this.inFlight.values()].some((sent) => sent.contentType === CONTENT.IMAGE)) {
      this.blocked.push(item);
      return;
    }
    const req = this.nextReq++;
    const image = item.contentType === CONTENT.IMAGE;
    const first = image ? item.body.subarray(0, CHUNK) : item.body;
    const ok = this.send({
      type: "Chat", req, client_msg_id: item.clientMsgId, group_id: item.groupId, to: item.to,
      sender: null, content_type: item.contentType, body: first,
      image: image ? { total_size: item.body.length, sha256: item.sha256, mime: null } : null,
    });
    if (!ok) return;
    this.inFlight.set(req, item);
    if (image) {
      for (let at = CHUNK, index = 1; at < item.body.length; at += CHUNK, index++) {
        this.send({ type: "ImageChunk", ref: req, index, data: item.body.subarray(at, at + CHUNK) });
      }
    }
  }

  async _sendAck(msg) {
    const item = this.inFlight.get(msg.req);
    if (!item) return;
    this.inFlight.delete(msg.req);
    this._unblock();
    await this.store.removeFromOutbox(item.id);
    this.emit("sent", { item, convSeq: msg.conv_seq, serverTimeMs: msg.server_time_ms });
  }

  _unblock() {
    const waiting = this.blocked;
    this.blocked = [];
    for (const item of waiting) this._sendItem(item);
  }

  async _sendError(msg) {
    const item = this.inFlight.get(msg.req);
    this.inFlight.delete(msg.req);
    if (TRANSIENT.has(msg.code)) {
      setTimeout(() => this._sendItem(item), 1000);
      return;
    }
    this._unblock();
    await this.store.removeFromOutbox(item.id);
    this.emit("send-failed", { item, code: msg.code, reason: msg.reason });
  }

  // --- small requests -------------------------------------------------------------------------

  read(target, upTo) {
    this.send({ type: "Read", group_id: target.groupId || 0,
      peer: target.groupId ? null : target.peer, up_to: upTo });
  }

  typing(target, active) {
    this.send({ type: "Typing", group_id: target.groupId || 0,
      to: target.groupId ? null : target.peer, active });
  }

  history(target, beforeSeq, limit = 30) {
    return this.request({ type: "History", group_id: target.groupId || 0,
      peer: target.groupId ? null : target.peer, before_seq: beforeSeq, limit });
  }
}

export { RECEIPT };
