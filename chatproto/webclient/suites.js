// The key-exchange suites of protocol version 2 (docs/protocol.rst, "Suites"). Both
// exchanges of a login are KEM-shaped: one side sends a *share* (a fresh public key), the
// other answers with a *response*, and both obtain the shared secret. Exchange 1: Hello2's
// share, ServerKey2's response; exchange 2: Ack's share (the server's), ClientKey's response.
//
// X25519 (0x001D) through WebCrypto. X25519MLKEM768 (0x11EC, the TLS layout): share =
// ML-KEM-768 encapsulation key (1184) || X25519 public key (32); response = ML-KEM-768
// ciphertext (1088) || X25519 public key (32); secret = ML-KEM secret || X25519 secret. ML-KEM
// is @noble/post-quantum's, vendored in vendor/ (see vendor/README.txt).
//
// Keys come from crypto.getRandomValues, or, in known-answer tests, from a ``seed(n)``
// function (X25519 private key: seed(32); ML-KEM key generation: seed(64) = d || z), called
// in the same order as the Python reference (chatproto/wire/suites.py).

import { concat } from "./bytes.js";
import { CryptoFailure, x25519, x25519FromPrivate, x25519Generate } from "./crypto.js";
import { ml_kem768 } from "./vendor/noble-post-quantum/ml-kem.js";

export const X25519_ID = 0x001d;
export const X25519MLKEM768_ID = 0x11ec;
const X25519_LEN = 32;
const MLKEM768_EK_LEN = 1184;
const MLKEM768_CT_LEN = 1088;

const malformed = (what) => new CryptoFailure(what, 105);

function x25519Key(seed) {
  return seed ? x25519FromPrivate(seed(32)) : x25519Generate();
}

/** X25519 with a peer key of the right length (else MALFORMED, 105). */
function x25519Exchange(privateKey, peerPublic) {
  if (peerPublic.length !== X25519_LEN) throw malformed("invalid X25519 public key");
  return x25519(privateKey, peerPublic);
}

/** A key pair whose private half is used once: ``decapsulate`` forgets it. */
class KeyPair {
  constructor(share, decapsulate) {
    this.share = share;
    this._decapsulate = decapsulate;
  }

  async decapsulate(response) {
    const f = this._decapsulate;
    this._decapsulate = null;
    if (f === null) throw new Error("key pair already used");
    return f(response);
  }
}

export const X25519 = {
  id: X25519_ID,
  name: "X25519",
  shareLength: X25519_LEN,
  responseLength: X25519_LEN,

  async generate(seed) {
    const key = await x25519Key(seed);
    return new KeyPair(key.publicKey, (response) => x25519Exchange(key.privateKey, response));
  },

  /** Answer a peer's share: ``{ secret, response }``. */
  async encapsulate(share, seed) {
    const key = await x25519Key(seed);
    return { secret: await x25519Exchange(key.privateKey, share), response: key.publicKey };
  },
};

export const X25519MLKEM768 = {
  id: X25519MLKEM768_ID,
  name: "X25519MLKEM768",
  shareLength: MLKEM768_EK_LEN + X25519_LEN,
  responseLength: MLKEM768_CT_LEN + X25519_LEN,

  async generate(seed) {
    const mlkem = ml_kem768.keygen(seed ? seed(64) : undefined);
    const key = await x25519Key(seed);
    return new KeyPair(concat(mlkem.publicKey, key.publicKey), async (response) => {
      try {
        if (response.length !== MLKEM768_CT_LEN + X25519_LEN) {
          throw malformed("bad X25519MLKEM768 response");
        }
        const mlkemSecret = ml_kem768.decapsulate(response.subarray(0, MLKEM768_CT_LEN),
          mlkem.secretKey);
        return concat(mlkemSecret,
          await x25519Exchange(key.privateKey, response.subarray(MLKEM768_CT_LEN)));
      } finally {
        mlkem.secretKey.fill(0);
      }
    });
  },

  async encapsulate(share, seed) {
    if (share.length !== MLKEM768_EK_LEN + X25519_LEN) throw malformed("bad X25519MLKEM768 share");
    let mlkem;
    try {
      // noble checks the encapsulation key (FIPS 203 modulus check) and throws if invalid.
      mlkem = ml_kem768.encapsulate(share.subarray(0, MLKEM768_EK_LEN));
    } catch {
      throw malformed("bad ML-KEM-768 encapsulation key");
    }
    const key = await x25519Key(seed);
    const x = await x25519Exchange(key.privateKey, share.subarray(MLKEM768_EK_LEN));
    return { secret: concat(mlkem.sharedSecret, x), response: concat(mlkem.cipherText, key.publicKey) };
  },
};

/** Every suite this client knows, by id. */
export const SUITES = new Map([[X25519MLKEM768.id, X25519MLKEM768], [X25519.id, X25519]]);

/** What the page offers, best first: the hybrid, then X25519 (as the Python client). */
export const DEFAULT_SUITES = [X25519MLKEM768_ID, X25519_ID];
