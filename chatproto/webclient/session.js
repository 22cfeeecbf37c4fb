// The session after HelloDone (protocol version 2): session keys both ways, one padded
// message per frame, and KeyUpdate in both directions (docs/protocol.rst, "KeyUpdate").
//
// Each direction ratchets on its own. Before the frame that would bring the bytes under the
// current send key above the limit (2^32 - 64), the session sends KeyUpdate under the old key,
// replaces its traffic secret by Expand-Label(secret, "traffic upd", "", 32) and goes on under
// the new key with counter 0. A received KeyUpdate does the same for the server's direction
// and never reaches the application. More than 2^32 bytes under one receive key is
// FRAME_LIMIT (109).

import { concat } from "./bytes.js";
import { FrameKey, ProtocolError } from "./frames.js";
import { decodePadded, encodeMessage, padMessage } from "./messages.js";
import { nextTrafficSecret } from "./schedule.js";

/** Bytes per traffic secret (2^28 AES blocks) before a KeyUpdate is due. */
export const VOLUME_LIMIT = 2 ** 32;
/** Room a sender keeps under the limit for the KeyUpdate frame itself. */
const KEY_UPDATE_ROOM = 64;
const KEY_UPDATE = padMessage(encodeMessage({ type: "KeyUpdate" }));

async function nextKey(secret) {
  const next = await nextTrafficSecret(secret);
  return [next, await FrameKey.fromTrafficSecret(next)];
}

export class Session {
  /**
   * @param {SessionKeys} keys from the handshake
   * @param {object} [options]
   * @param {number} [options.sendLimit] bytes per send key before a KeyUpdate (tests lower it)
   * @param {number} [options.receiveLimit] bytes the server may send under one key
   */
  constructor(keys, { sendLimit = VOLUME_LIMIT, receiveLimit = VOLUME_LIMIT } = {}) {
    this.sendKey = keys.sendKey;
    this.receiveKey = keys.receiveKey;
    this.sendSecret = keys.sendSecret;
    this.receiveSecret = keys.receiveSecret;
    this.reader = keys.reader;
    this.sendLimit = sendLimit;
    this.receiveLimit = receiveLimit;
    this.keyUpdatesSent = 0;
    this.keyUpdatesReceived = 0;
    // Sealing may have to derive a new key (asynchronous): frames are made one after the
    // other, in call order.
    this._sending = Promise.resolve();
  }

  /** The frame bytes of ``msg`` (frames come out in call order; write them in that order). */
  seal(msg) {
    const payload = padMessage(encodeMessage(msg));
    const frame = this._sending.then(() => this._frame(payload));
    this._sending = frame.catch(() => {});
    return frame;
  }

  /** Send KeyUpdate now (a sender MAY ratchet earlier than the limit). */
  updateKey() {
    const frame = this._sending.then(() => this._keyUpdate());
    this._sending = frame.catch(() => {});
    return frame;
  }

  async _frame(payload) {
    if (this.sendKey.volume + payload.length <= this.sendLimit - KEY_UPDATE_ROOM) {
      return this.sendKey.seal(payload);
    }
    const update = await this._keyUpdate();
    return concat(update, await this.sendKey.seal(payload));
  }

  async _keyUpdate() {
    const update = await this.sendKey.seal(KEY_UPDATE);
    [this.sendSecret, this.sendKey] = await nextKey(this.sendSecret);
    this.keyUpdatesSent += 1;
    return update;
  }

  /** Decrypt and decode every complete frame received so far (KeyUpdate is handled here). */
  async receive(data) {
    if (data && data.length) this.reader.append(data);
    const out = [];
    for (;;) {
      const payload = await this.reader.nextEncrypted(this.receiveKey);
      if (payload === null) return out;
      if (this.receiveKey.volume > this.receiveLimit) {
        throw new ProtocolError(109, `more than ${this.receiveLimit} bytes under one key`);
      }
      const [msg] = decodePadded(payload);
      if (msg.type !== "KeyUpdate") {
        out.push(msg);
        continue;
      }
      [this.receiveSecret, this.receiveKey] = await nextKey(this.receiveSecret);
      this.keyUpdatesReceived += 1;
    }
  }
}
