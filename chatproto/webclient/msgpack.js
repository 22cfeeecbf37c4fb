// The MessagePack subset of docs/protocol.rst, written for this client (about 200 lines) rather
// than vendored: the protocol needs exactly nil, booleans, non-negative integers, str, bin and
// arrays, a strict str/bin distinction, rejection of maps/floats/ext, and size bounds, which a
// general library would have to be configured (and audited) for.
//
// JavaScript values: null, true/false, Number (or BigInt above 2^53-1), string (str),
// Uint8Array (bin), Array.

import { encoder, strictDecoder } from "./bytes.js";

export class MalformedMessage extends Error {
  constructor(message) {
    super(message);
    this.name = "MalformedMessage";
    this.code = 105;
  }
}

const MAX_ARRAY = 4096;
const MAX_LENGTH = 1024 * 1024;

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.len = 0;
  }
  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  byte(b) {
    this.ensure(1);
    this.buf[this.len++] = b;
  }
  bytes(b) {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  uint(n, width) {
    this.ensure(width);
    const view = new DataView(this.buf.buffer, this.len, width);
    if (width === 1) view.setUint8(0, n);
    else if (width === 2) view.setUint16(0, n);
    else if (width === 4) view.setUint32(0, n);
    else view.setBigUint64(0, BigInt(n));
    this.len += width;
  }
  result() {
    return this.buf.slice(0, this.len);
  }
}

function writeLength(w, n, small, fix, b8, b16, b32) {
  if (fix !== null && n < small) w.byte(fix | n);
  else if (b8 !== null && n < 0x100) { w.byte(b8); w.uint(n, 1); }
  else if (n < 0x10000) { w.byte(b16); w.uint(n, 2); }
  else { w.byte(b32); w.uint(n, 4); }
}

function writeValue(w, v) {
  if (v === null || v === undefined) w.byte(0xc0);
  else if (v === false) w.byte(0xc2);
  else if (v === true) w.byte(0xc3);
  else if (typeof v === "number" || typeof v === "bigint") {
    if (typeof v === "number" && (!Number.isInteger(v) || v < 0)) {
      throw new TypeError(`not a non-negative integer: ${v}`);
    }
    const n = BigInt(v);
    if (n < 0n || n >= 2n ** 64n) throw new TypeError(`integer out of range: ${v}`);
    if (n < 0x80n) w.byte(Number(n));
    else if (n < 0x100n) { w.byte(0xcc); w.uint(Number(n), 1); }
    else if (n < 0x10000n) { w.byte(0xcd); w.uint(Number(n), 2); }
    else if (n < 0x100000000n) { w.byte(0xce); w.uint(Number(n), 4); }
    else { w.byte(0xcf); w.uint(n, 8); }
  } else if (typeof v === "string") {
    const b = encoder.encode(v);
    writeLength(w, b.length, 32, 0xa0, 0xd9, 0xda, 0xdb);
    w.bytes(b);
  } else if (v instanceof Uint8Array) {
    writeLength(w, v.length, 0, null, 0xc4, 0xc5, 0xc6);
    w.bytes(v);
  } else if (Array.isArray(v)) {
    writeLength(w, v.length, 16, 0x90, null, 0xdc, 0xdd);
    for (const item of v) writeValue(w, item);
  } else {
    throw new TypeError(`cannot encode ${typeof v}`);
  }
}

/** Encode one value with the smallest representation of every part (as msgpack-python). */
export function encode(value) {
  const w = new Writer();
  writeValue(w, value);
  return w.result();
}

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  need(n) {
    if (this.pos + n > this.b.length) throw new MalformedMessage("truncated MessagePack");
  }
  u8() { this.need(1); return this.b[this.pos++]; }
  u16() { this.need(2); const v = this.view.getUint16(this.pos); this.pos += 2; return v; }
  u32() { this.need(4); const v = this.view.getUint32(this.pos); this.pos += 4; return v; }
  u64() {
    this.need(8);
    const v = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  take(n) {
    if (n > MAX_LENGTH) throw new MalformedMessage("string or binary too long");
    this.need(n);
    const out = this.b.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

function signed(r, width) {
  r.need(width);
  let v;
  if (width === 1) v = r.view.getInt8(r.pos);
  else if (width === 2) v = r.view.getInt16(r.pos);
  else if (width === 4) v = r.view.getInt32(r.pos);
  else {
    const big = r.view.getBigInt64(r.pos);
    v = big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= 0n ? Number(big) : big;
  }
  r.pos += width;
  if (v < 0 || v < 0n) throw new MalformedMessage("negative integer");
  return v;
}

function str(r, n) {
  try {
    return strictDecoder.decode(r.take(n));
  } catch (e) {
    if (e instanceof MalformedMessage) throw e;
    throw new MalformedMessage("invalid UTF-8");
  }
}

function array(r, n, depth) {
  if (n > MAX_ARRAY) throw new MalformedMessage("array too long");
  if (depth > 8) throw new MalformedMessage("nested too deep");
  const out = [];
  for (let i = 0; i < n; i++) out.push(readValue(r, depth + 1));
  return out;
}

function readValue(r, depth) {
  const t = r.u8();
  if (t <= 0x7f) return t;
  if (t >= 0x90 && t <= 0x9f) return array(r, t & 0x0f, depth);
  if (t >= 0xa0 && t <= 0xbf) return str(r, t & 0x1f);
  switch (t) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: return r.take(r.u8());
    case 0xc5: return r.take(r.u16());
    case 0xc6: return r.take(r.u32());
    case 0xcc: return r.u8();
    case 0xcd: return r.u16();
    case 0xce: return r.u32();
    case 0xcf: return r.u64();
    case 0xd0: return signed(r, 1);
    case 0xd1: return signed(r, 2);
    case 0xd2: return signed(r, 4);
    case 0xd3: return signed(r, 8);
    case 0xd9: return str(r, r.u8());
    case 0xda: return str(r, r.u16());
    case 0xdb: return str(r, r.u32());
    case 0xdc: return array(r, r.u16(), depth);
    case 0xdd: return array(r, r.u32(), depth);
    default:
      throw new MalformedMessage(`MessagePack type 0x${t.toString(16)} is not allowed`);
  }
}

/** Decode exactly one value; trailing bytes, maps, floats, ext and negatives are errors. */
export function decode(bytes) {
  if (bytes.length > MAX_LENGTH) throw new MalformedMessage("payload too long");
  const r = new Reader(bytes);
  const v = readValue(r, 0);
  if (r.pos !== bytes.length) throw new MalformedMessage("bytes after the MessagePack object");
  return v;
}

/** Decode the one value at the start of ``bytes``: ``[value, its length in bytes]``. */
export function decodePrefix(bytes) {
  if (bytes.length > MAX_LENGTH) throw new MalformedMessage("payload too long");
  const r = new Reader(bytes);
  const v = readValue(r, 0);
  return [v, r.pos];
}
