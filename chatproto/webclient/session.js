// The session after HelloDone: session keys both ways, one message per frame.

import { decodeMessage, encodeMessage } from "./messages.js";

export class Session {
  constructor(keys) {
    this.sendKey = keys.sendKey;
    this.receiveKey = keys.receiveKey;
    this.reader = keys.reader;
  }

  /** The frame of ``msg`` (the counter advances now; write frames in call order). */
  seal(msg) {
    return this.sendKey.seal(encodeMessage(msg));
  }

  /** Decrypt and decode every complete frame received so far. */
  async receive(data) {
    if (data && data.length) this.reader.append(data);
    const out = [];
    for (;;) {
      const body = await this.reader.nextEncrypted(this.receiveKey);
      if (body === null) return out;
      out.push(decodeMessage(body));
    }
  }
}
