// Layer 1: plaintext and AES-256-GCM frames (docs/protocol.rst, "Layer 1: frames").

import { aesGcmOpen, aesGcmSeal, aesKey } from "./crypto.js";
import { concat, equal, uint32 } from "./bytes.js";
import { trafficKeyIv } from "./schedule.js";

export const MAX_PLAIN_BODY = 4096;
export const MAX_FRAME_BODY = 1024 * 1024;
export const HEADER = 17;
export const TAG = 16;
const MAX_FRAMES = 2 ** 32;

export class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** ``static_iv XOR (0^4 || uint64(seq))``. */
export function frameIv(staticIv, seq) {
  const iv = staticIv.slice();
  let n = BigInt(seq);
  for (let i = 11; i >= 4; i--) {
    iv[i] ^= Number(n & 0xffn);
    n >>= 8n;
  }
  return iv;
}

export function plainFrame(body) {
  if (body.length < 1 || body.length > MAX_PLAIN_BODY) throw new Error("plaintext frame size");
  return concat(uint32(body.length), body);
}

/** One direction's key, static IV and frame counter. */
export class FrameKey {
  static async create(rawKey, staticIv) {
    return new FrameKey(await aesKey(rawKey), staticIv);
  }

  /** The key and static iv of a version-2 traffic secret. */
  static async fromTrafficSecret(secret) {
    return FrameKey.create(...(await trafficKeyIv(secret)));
  }

  constructor(key, staticIv) {
    this.key = key;
    this.staticIv = staticIv;
    this.seq = 0;
    /** Bytes (msg_length + pad_length) protected under this key so far. */
    this.volume = 0;
  }

  /**
   * Encrypt ``payload`` as the next frame; the counter advances at once (call in order).
   * Version 2 pads inside the message (messages.js padMessage), so ``pad_length`` is 0.
   */
  seal(payload) {
    if (this.seq >= MAX_FRAMES) throw new ProtocolError(109, "frame limit reached");
    if (payload.length > MAX_FRAME_BODY) throw new Error("frame payload too large");
    const iv = frameIv(this.staticIv, this.seq++);
    this.volume += payload.length;
    const header = new Uint8Array(HEADER);
    new DataView(header.buffer).setUint32(0, payload.length);
    header.set(iv, 5);
    return aesGcmSeal(this.key, iv, payload, header).then((ct) => concat(header, ct));
  }

  expectedIv() {
    return frameIv(this.staticIv, this.seq);
  }
}

/** Buffers received bytes and cuts frames; which kind comes next is the caller's knowledge. */
export class FrameReader {
  constructor(maxBody = MAX_FRAME_BODY) {
    this.buf = new Uint8Array(0);
    this.maxBody = maxBody;
  }

  append(data) {
    this.buf = this.buf.length ? concat(this.buf, data) : data;
  }

  /** The next plaintext frame's body, or ``null`` if it has not fully arrived. */
  nextPlain() {
    if (this.buf.length < 4) return null;
    const length = new DataView(this.buf.buffer, this.buf.byteOffset, 4).getUint32(0);
    if (length === 0) throw new ProtocolError(100, "empty frame");
    if (length > MAX_PLAIN_BODY) throw new ProtocolError(101, "plaintext frame too large");
    if (this.buf.length < 4 + length) return null;
    const body = this.buf.slice(4, 4 + length);
    this.buf = this.buf.slice(4 + length);
    return body;
  }

  /** The iv field of the next encrypted frame, or ``null`` before its header arrived. */
  peekIv() {
    return this.buf.length < HEADER ? null : this.buf.slice(5, HEADER);
  }

  /** Decrypt the next encrypted frame under ``key``; ``null`` if it has not fully arrived. */
  async nextEncrypted(key) {
    if (this.buf.length < HEADER) return null;
    const view = new DataView(this.buf.buffer, this.buf.byteOffset, HEADER);
    const msgLength = view.getUint32(0);
    const pad = view.getUint8(4);
    if (msgLength + pad > this.maxBody) throw new ProtocolError(101, "frame too large");
    if (key.seq >= MAX_FRAMES) throw new ProtocolError(109, "frame limit reached");
    const total = HEADER + msgLength + pad + TAG;
    if (this.buf.length < total) return null;
    const frame = this.buf.slice(0, total);
    this.buf = this.buf.slice(total);
    const header = frame.subarray(0, HEADER);
    if (!equal(header.subarray(5), key.expectedIv())) throw new ProtocolError(102, "bad iv");
    const plain = await aesGcmOpen(key.key, header.slice(5), frame.subarray(HEADER), header);
    if (plain === null) throw new ProtocolError(103, "bad tag");
    for (let i = msgLength; i < plain.length; i++) {
      if (plain[i] !== 0) throw new ProtocolError(104, "bad padding");
    }
    key.seq++;
    key.volume += msgLength + pad;
    return plain.slice(0, msgLength);
  }
}
