// Layer 2: the message table of docs/protocol.rst, with every field's type checked both ways.
// A message is a plain object: { type: "Chat", req: 2, ... }.

import { decode, decodePrefix, encode, MalformedMessage } from "./msgpack.js";
import { encoder } from "./bytes.js";

const NAME = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
const U63_MAX = 2n ** 63n - 1n;

const uint = (max) => (v) =>
  (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= max) ||
  (typeof v === "bigint" && v >= 0n && v <= BigInt(max));
const T = {
  u8: uint(0xff),
  u16: uint(0xffff),
  u32: uint(0xffffffff),
  u63: (v) => (typeof v === "number" && Number.isInteger(v) && v >= 0) ||
    (typeof v === "bigint" && v >= 0n && v <= U63_MAX),
  bool: (v) => typeof v === "boolean",
  name: (v) => typeof v === "string" && NAME.test(v),
  str: (lo, hi) => (v) => {
    if (typeof v !== "string") return false;
    const n = encoder.encode(v).length;
    return n >= lo && n <= hi;
  },
  bin: (lo, hi = lo) => (v) => v instanceof Uint8Array && v.length >= lo && v.length <= hi,
  nil: (inner) => (v) => v === null || inner(v),
  array: (max, inner) => (v) => Array.isArray(v) && v.length <= max && v.every(inner),
};

// Nested records: [field, check] in wire order, decoded to objects.
const RECORDS = {
  ImageInfo: [["total_size", T.u32], ["sha256", T.bin(32)], ["mime", T.nil(T.str(0, 64))]],
  GroupEvent: [["action", T.u8], ["actor", T.name], ["names", T.array(256, T.name)],
    ["title", T.str(0, 200)]],
  PresenceInfo: [["name", T.name], ["online", T.bool], ["last_seen_ms", T.nil(T.u63)]],
  GroupInfo: [["group_id", T.u63], ["title", T.str(0, 200)], ["role", T.str(0, 16)],
    ["member_count", T.u32]],
  MemberInfo: [["name", T.name], ["role", T.str(0, 16)], ["online", T.bool],
    ["last_seen_ms", T.nil(T.u63)]],
  KeyShare: [["suite", T.u16], ["share", T.bin(32, 2048)]],
  HistoryEntry: [["conv_seq", T.u63], ["sender", T.name], ["to", T.nil(T.name)],
    ["server_time_ms", T.u63], ["content_type", T.u8], ["body", T.bin(0, 65536)],
    ["image", "?ImageInfo"]],
};

const reason = T.str(0, 1024);
const names = T.array(256, T.name);
const password = T.str(1, 1024);

export const MESSAGES = {
  Hello: [1, ["version", T.u16], ["client_random", T.bin(32)], ["client_key", T.bin(32)]],
  ServerKey: [2, ["server_random", T.bin(32)], ["server_key", T.bin(32)],
    ["identity_key", T.bin(32)], ["signature", T.bin(64)]],
  Signin: [3, ["name", T.name], ["password", password], ["device_id", T.bin(16)]],
  Register: [4, ["name", T.name], ["password", password]],
  // 32 bytes in version 1; the suite's share / response length in version 2.
  Ack: [5, ["server_key", T.bin(32, 2048)]],
  Nck: [6, ["code", T.u16], ["reason", reason], ["retry_after_ms", T.u32]],
  AckRegister: [7, ["name", T.name]],
  NckRegister: [8, ["code", T.u16], ["reason", reason], ["retry_after_ms", T.u32]],
  ClientKey: [9, ["client_key", T.bin(32, 2048)]],
  Finished: [10, ["verify_data", T.bin(32)]],
  HelloDone: [11, ["name", T.name], ["session_id", T.bin(16)], ["server_time_ms", T.u63]],
  HelloError: [12, ["code", T.u16], ["reason", reason]],
  Hello2: [13, ["versions", T.array(8, T.u16)], ["client_random", T.bin(32)],
    ["key_shares", "[]KeyShare"]],
  ServerKey2: [14, ["version", T.u16], ["suite", T.u16], ["server_random", T.bin(32)],
    ["server_share", T.bin(32, 2048)], ["identity_key", T.bin(32)], ["signature", T.bin(64)]],
  Error: [32, ["req", T.u32], ["code", T.u16], ["reason", reason], ["names", names]],
  Ok: [33, ["req", T.u32]],
  Create: [34, ["req", T.u32], ["peer", T.name]],
  AckCreate: [35, ["req", T.u32], ["peer", T.name], ["online", T.bool],
    ["last_seen_ms", T.nil(T.u63)]],
  CreateGroup: [36, ["req", T.u32], ["kind", T.u8], ["count", T.u16], ["names", names],
    ["title", T.str(0, 200)]],
  AckCreateGroup: [37, ["req", T.u32], ["group_id", T.u63], ["offline", names]],
  Chat: [38, ["req", T.u32], ["client_msg_id", T.bin(16)], ["group_id", T.u63],
    ["to", T.nil(T.name)], ["sender", T.nil(T.name)], ["content_type", T.u8],
    ["body", T.bin(0, 524288)], ["image", "?ImageInfo"]],
  ImageChunk: [39, ["ref", T.u63], ["index", T.u16], ["data", T.bin(1, 524288)]],
  SendAck: [40, ["req", T.u32], ["client_msg_id", T.bin(16)], ["group_id", T.u63],
    ["conv_seq", T.u63], ["server_time_ms", T.u63]],
  Deliver: [41, ["user_seq", T.u63], ["group_id", T.u63], ["sender", T.name],
    ["to", T.nil(T.name)], ["conv_seq", T.u63], ["server_time_ms", T.u63],
    ["client_msg_id", T.nil(T.bin(16))], ["content_type", T.u8], ["body", T.bin(0, 524288)],
    ["image", "?ImageInfo"]],
  DeliveryAck: [42, ["up_to", T.u63]],
  Read: [43, ["group_id", T.u63], ["peer", T.nil(T.name)], ["up_to", T.u63]],
  Receipt: [44, ["kind", T.u8], ["group_id", T.u63], ["by", T.name], ["conv_seq", T.u63]],
  Typing: [45, ["group_id", T.u63], ["to", T.nil(T.name)], ["active", T.bool]],
  TypingEvent: [46, ["group_id", T.u63], ["sender", T.name], ["active", T.bool]],
  GroupAdd: [47, ["req", T.u32], ["group_id", T.u63], ["names", names]],
  GroupRemove: [48, ["req", T.u32], ["group_id", T.u63], ["names", names]],
  GroupLeave: [49, ["req", T.u32], ["group_id", T.u63]],
  GroupRename: [50, ["req", T.u32], ["group_id", T.u63], ["title", T.str(0, 200)]],
  GroupList: [51, ["req", T.u32]],
  Groups: [52, ["req", T.u32], ["groups", "[]GroupInfo"]],
  GroupMembers: [53, ["req", T.u32], ["group_id", T.u63]],
  Members: [54, ["req", T.u32], ["group_id", T.u63], ["members", "[]MemberInfo"]],
  PresenceQuery: [55, ["req", T.u32]],
  Presence: [56, ["req", T.u32], ["entries", "[]PresenceInfo"]],
  PresenceEvent: [57, ["name", T.name], ["online", T.bool], ["last_seen_ms", T.nil(T.u63)]],
  History: [58, ["req", T.u32], ["group_id", T.u63], ["peer", T.nil(T.name)],
    ["before_seq", T.u63], ["limit", T.u16]],
  HistoryPage: [59, ["req", T.u32], ["group_id", T.u63], ["peer", T.nil(T.name)],
    ["entries", "[]HistoryEntry"], ["has_more", T.bool]],
  Sync: [60, ["req", T.u32], ["cursor", T.nil(T.u63)]],
  SyncDone: [61, ["req", T.u32], ["last_seq", T.u63]],
  Quit: [62, ["req", T.u32]],
  AckQuit: [63, ["req", T.u32]],
  Ping: [64, ["nonce", T.u63]],
  Pong: [65, ["nonce", T.u63]],
  GroupSetRole: [66, ["req", T.u32], ["group_id", T.u63], ["names", names], ["admin", T.bool]],
  KeyUpdate: [67],
};

const BY_NUMBER = new Map(Object.entries(MESSAGES).map(([name, [n]]) => [n, name]));

export class UnknownMessageType extends Error {
  constructor(n) {
    super(`unknown message type ${n}`);
    this.code = 106;
  }
}

/**
 * One field both ways: ``spec`` is a check function, or a record name ("ImageInfo"),
 * optional ("?ImageInfo") or an array of records ("[]GroupInfo"); ``onRecord`` encodes or
 * decodes one record, ``fail`` builds the error.
 */
function convertField(spec, value, where, onRecord, fail) {
  if (typeof spec === "string") {
    const record = spec.replace(/^\?|^\[\]/, "");
    if (spec.startsWith("?") && value === null) return null;
    if (spec.startsWith("[]")) {
      if (!Array.isArray(value) || value.length > 4096) throw fail(`${where}: not an array`);
      return value.map((v) => onRecord(record, v));
    }
    return onRecord(record, value);
  }
  if (!spec(value)) throw fail(`${where}: invalid field`);
  return value;
}

const encodeField = (spec, value, where) =>
  convertField(spec, value, where, encodeRecord, (m) => new TypeError(m));
const decodeField = (spec, value, where) =>
  convertField(spec, value, where, decodeRecord, (m) => new MalformedMessage(m));

export function encodeRecord(name, obj) {
  return RECORDS[name].map(([field, spec]) => encodeField(spec, obj[field], `${name}.${field}`));
}

export function decodeRecord(name, value) {
  const fields = RECORDS[name];
  if (!Array.isArray(value) || value.length !== fields.length) {
    throw new MalformedMessage(`${name}: wrong arity`);
  }
  const out = {};
  fields.forEach(([field, spec], i) => {
    out[field] = decodeField(spec, value[i], `${name}.${field}`);
  });
  return out;
}

/** The layer-2 bytes of ``msg`` (``msg.type`` names the message). */
export function encodeMessage(msg) {
  const [number, ...fields] = MESSAGES[msg.type];
  const arr = [number];
  for (const [field, spec] of fields) arr.push(encodeField(spec, msg[field], `${msg.type}.${field}`));
  return encode(arr);
}

/** Decode one payload into a message object; MalformedMessage or UnknownMessageType. */
export function decodeMessage(bytes) {
  const arr = decode(bytes);
  if (!Array.isArray(arr) || arr.length === 0 || typeof arr[0] !== "number") {
    throw new MalformedMessage("not a message array");
  }
  const type = BY_NUMBER.get(arr[0]);
  if (type === undefined) throw new UnknownMessageType(arr[0]);
  const [, ...fields] = MESSAGES[type];
  if (arr.length !== fields.length + 1) throw new MalformedMessage(`${type}: wrong arity`);
  const msg = { type };
  fields.forEach(([field, spec], i) => {
    msg[field] = decodeField(spec, arr[i + 1], `${type}.${field}`);
  });
  return msg;
}

/**
 * Version 2's padded payload (docs/protocol.rst, "Padding in version 2"): one message, then
 * only zero bytes (else BAD_PADDING, 104). Returns ``[message, the message's own bytes]``.
 */
export function decodePadded(payload) {
  const [, length] = decodePrefix(payload);
  for (let i = length; i < payload.length; i++) {
    if (payload[i] !== 0) throw new PaddingError();
  }
  const body = payload.subarray(0, length);
  return [decodeMessage(body), body];
}

export class PaddingError extends Error {
  constructor() {
    super("a padding byte after the message is not zero");
    this.code = 104;
  }
}

/** Signin and Register are always this long; docs/protocol.rst, "Padding in version 2". */
export const CREDENTIALS_SIZE = 1088;
const MIN_BUCKET = 32;
const LINEAR_STEP = 4096;
const MAX_MESSAGE_BYTES = 1024 * 1024;

/** The padded size of an ``n``-byte message (not Signin or Register). */
export function bucketSize(n) {
  if (n <= MIN_BUCKET) return MIN_BUCKET;
  if (n <= LINEAR_STEP) return 2 ** Math.ceil(Math.log2(n));
  return Math.min(Math.ceil(n / LINEAR_STEP) * LINEAR_STEP, Math.max(n, MAX_MESSAGE_BYTES));
}

/** ``body`` followed by its zero padding (``credentials``: a Signin or Register). */
export function padMessage(body, credentials = false) {
  const size = credentials ? CREDENTIALS_SIZE : bucketSize(body.length);
  if (size <= body.length) return body;
  const out = new Uint8Array(size);
  out.set(body);
  return out;
}

export const encodeGroupEvent = (ev) => encode(encodeRecord("GroupEvent", ev));
export const decodeGroupEvent = (bytes) => decodeRecord("GroupEvent", decode(bytes));

export const CONTENT = { TEXT: 1, IMAGE: 2, EVENT: 3 };
export const RECEIPT = { DELIVERED: 2, READ: 3 };
