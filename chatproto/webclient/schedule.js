// The chained key schedule of protocol version 2 (docs/protocol.rst, "Version-2 key
// schedule"), as small pure functions over WebCrypto's HMAC-SHA256:
//
//   handshake_secret = HKDF-Extract(32 zero bytes, shared secret 1)
//   c_hs / s_hs      = Derive-Secret(handshake_secret, "c hs traffic" / "s hs traffic", H1)
//   master_secret    = HKDF-Extract(Derive-Secret(handshake_secret, "derived", H2),
//                                   shared secret 2)
//   c_ap / s_ap      = Derive-Secret(master_secret, "c ap traffic" / "s ap traffic", H2)
//   finished_key     = Derive-Secret(master_secret, "finished", H2)
//   key, iv          = Expand-Label(secret, "key" / "iv", "", 32 / 12)
//   next secret      = Expand-Label(secret, "traffic upd", "", 32)   (KeyUpdate)

import { concat, encoder } from "./bytes.js";
import { hmacSha256 } from "./crypto.js";

const LABEL_PREFIX = "chatproto/2 ";
export const SIGNATURE_CONTEXT_V2 = "chatproto/2 server key signature";
const HASH_LEN = 32;

/** HKDF-Extract with SHA-256 (RFC 5869): HMAC-SHA256(key = salt, IKM). */
export function hkdfExtract(salt, ikm) {
  return hmacSha256(salt, ikm);
}

/** HKDF-Expand with SHA-256 (RFC 5869), ``length`` <= 255 * 32 bytes. */
export async function hkdfExpand(prk, info, length) {
  const out = new Uint8Array(length);
  let block = new Uint8Array(0);
  for (let i = 1, at = 0; at < length; i++) {
    block = await hmacSha256(prk, concat(block, info, Uint8Array.of(i)));
    out.set(block.subarray(0, Math.min(block.length, length - at)), at);
    at += block.length;
  }
  return out;
}

/** HKDF-Expand-Label (RFC 8446 section 7.1) with the label prefix "chatproto/2 ". */
export function expandLabel(secret, label, context, length) {
  const full = encoder.encode(LABEL_PREFIX + label);
  const info = concat(Uint8Array.of(length >> 8, length & 0xff, full.length), full,
    Uint8Array.of(context.length), context);
  return hkdfExpand(secret, info, length);
}

export function deriveSecret(secret, label, context) {
  return expandLabel(secret, label, context, HASH_LEN);
}

const EMPTY = new Uint8Array(0);

/** The AES-256-GCM key and static iv of one direction's traffic secret. */
export async function trafficKeyIv(secret) {
  return [await expandLabel(secret, "key", EMPTY, 32), await expandLabel(secret, "iv", EMPTY, 12)];
}

/** The traffic secret after a KeyUpdate (the caller forgets the old one). */
export function nextTrafficSecret(secret) {
  return expandLabel(secret, "traffic upd", EMPTY, HASH_LEN);
}

/** The first stage: extracted from the first exchange's shared secret alone. */
export function handshakeSecret(sharedSecret1) {
  return hkdfExtract(new Uint8Array(HASH_LEN), sharedSecret1);
}

/** The handshake traffic secrets ``{client, server}`` (Signin .. ClientKey). */
export async function handshakeTraffic(hsSecret, h1) {
  return {
    client: await deriveSecret(hsSecret, "c hs traffic", h1),
    server: await deriveSecret(hsSecret, "s hs traffic", h1),
  };
}

/** The second stage: the first stage's secret chained with the second exchange. */
export async function masterSecret(hsSecret, sharedSecret2, h2) {
  return hkdfExtract(await deriveSecret(hsSecret, "derived", h2), sharedSecret2);
}

/** The session's traffic secrets ``{client, server}`` and the finished key. */
export async function applicationTraffic(master, h2) {
  return {
    client: await deriveSecret(master, "c ap traffic", h2),
    server: await deriveSecret(master, "s ap traffic", h2),
    finishedKey: await deriveSecret(master, "finished", h2),
  };
}
