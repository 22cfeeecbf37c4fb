// Every primitive of the protocol through WebCrypto: SHA-256, HMAC-SHA256 (HKDF is built on
// it in schedule.js), AES-256-GCM, X25519 and Ed25519; ML-KEM-768 is in
// suites.js. Small pure functions; the handshake composes them.

import { concat, toBase64 } from "./bytes.js";

const subtle = globalThis.crypto.subtle;

export class CryptoFailure extends Error {
  constructor(message, code) {
    super(message);
    this.name = "CryptoFailure";
    this.code = code;
  }
}

export async function sha256(data) {
  return new Uint8Array(await subtle.digest("SHA-256", data));
}

export async function hmacSha256(key, message) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false,
    ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, message));
}

export async function aesKey(raw) {
  return subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

export async function aesGcmSeal(key, iv, plaintext, aad) {
  const out = await subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad, tagLength: 128 },
    key, plaintext);
  return new Uint8Array(out);
}

/** Decrypt and verify; ``null`` when the tag does not verify. */
export async function aesGcmOpen(key, iv, ciphertext, aad) {
  try {
    const out = await subtle.decrypt(
      { name: "AES-GCM", iv, additionalData: aad, tagLength: 128 }, key, ciphertext);
    return new Uint8Array(out);
  } catch {
    return null;
  }
}

// X25519 -----------------------------------------------------------------------------------

const X25519_PKCS8_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);
const BASE_POINT = Uint8Array.from({ length: 32 }, (_, i) => (i === 0 ? 9 : 0));

/** A fresh X25519 key pair: ``{ privateKey, publicKey }`` (publicKey: raw 32 bytes). */
export async function x25519Generate() {
  const pair = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  const pub = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey: pub };
}

/** A key pair from a raw 32-byte private key (known-answer tests fix the randomness). */
export async function x25519FromPrivate(raw) {
  const privateKey = await subtle.importKey("pkcs8", concat(X25519_PKCS8_PREFIX, raw),
    { name: "X25519" }, false, ["deriveBits"]);
  const publicKey = await x25519(privateKey, BASE_POINT);
  return { privateKey, publicKey };
}

/** X25519(private, peer public); an all-zero result (low-order key) is MALFORMED (105). */
export async function x25519(privateKey, peerPublic) {
  let shared;
  try {
    const peer = await subtle.importKey("raw", peerPublic, { name: "X25519" }, false, []);
    shared = new Uint8Array(
      await subtle.deriveBits({ name: "X25519", public: peer }, privateKey, 256));
  } catch {
    throw new CryptoFailure("X25519 with a low-order or invalid key", 105);
  }
  if (shared.every((b) => b === 0)) {
    throw new CryptoFailure("X25519 with a low-order key", 105);
  }
  return shared;
}

// Ed25519 ----------------------------------------------------------------------------------

export async function ed25519Verify(publicKey, signature, message) {
  try {
    const k = await subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return await subtle.verify({ name: "Ed25519" }, k, signature, message);
  } catch {
    return false;
  }
}

/** ``SHA256:`` + unpadded base64 of SHA-256(identity key), as OpenSSH shows keys. */
export async function fingerprint(identityKey) {
  return "SHA256:" + toBase64(await sha256(identityKey)).replace(/=+$/, "");
}
