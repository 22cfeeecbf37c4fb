// Key-exchange suites. A suite supplies the ephemeral key shares of the handshake and the
// strings bound into its key schedule; the handshake (handshake.js) is the same for every
// suite. Protocol version 1 has one suite, "classical" (two X25519 exchanges). A second suite
// (e.g. the protocol-v2 hybrid X25519 + ML-KEM-768) is added by registering an object with the
// same methods under its version.

import { x25519, x25519FromPrivate, x25519Generate } from "./crypto.js";

export const classical = {
  name: "classical",
  version: 1,
  signatureContext: "chatproto/1 server key signature",
  handshakeInfo: "chatproto/1 handshake keys",
  sessionInfo: "chatproto/1 session keys",

  /** A fresh (or, in known-answer tests, a fixed) key share for Hello or ClientKey. */
  async keyShare(fixedPrivate) {
    return fixedPrivate ? x25519FromPrivate(fixedPrivate) : x25519Generate();
  },

  /** The shared secret of our share and the server's public share. */
  async sharedSecret(share, serverPublic) {
    return x25519(share.privateKey, serverPublic);
  },
};

/** The suites this client offers, by protocol version. */
export const SUITES = new Map([[classical.version, classical]]);
