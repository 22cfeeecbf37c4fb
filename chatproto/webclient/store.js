// What the browser keeps in IndexedDB: pinned server fingerprints, the device id, per-account
// delivery cursors, conversation lists, delivery marks (receipts) and the outbox of
// unacknowledged messages. Never passwords or keys.

const DB_NAME = "chatproto";
const DB_VERSION = 1;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export class LocalStore {
  static async open(name = DB_NAME) {
    const req = indexedDB.open(name, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("pins");
      db.createObjectStore("meta");
      db.createObjectStore("cursors");
      const outbox = db.createObjectStore("outbox", { keyPath: "id" });
      outbox.createIndex("account", "account");
    };
    return new LocalStore(await request(req));
  }

  constructor(db) {
    this.db = db;
  }

  async _op(store, mode, fn) {
    const tx = this.db.transaction(store, mode);
    const result = await request(fn(tx.objectStore(store)));
    if (mode === "readwrite") {
      await new Promise((resolve, reject) => {
        tx.oncomplete = resolve;
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
    }
    return result;
  }

  get(store, key) { return this._op(store, "readonly", (s) => s.get(key)); }
  put(store, key, value) { return this._op(store, "readwrite", (s) => s.put(value, key)); }

  pinnedFingerprint(server) { return this.get("pins", server); }
  pin(server, fp) { return this.put("pins", server, fp); }

  async deviceId() {
    let id = await this.get("meta", "device_id");
    if (!id) {
      id = crypto.getRandomValues(new Uint8Array(16));
      await this.put("meta", "device_id", id);
    }
    return id;
  }

  async cursor(account) { return (await this.get("cursors", account)) ?? null; }
  setCursor(account, seq) { return this.put("cursors", account, seq); }

  /** The account's conversation list (titles and last lines; messages come from History). */
  async conversations(account) { return (await this.get("meta", `convs:${account}`)) || []; }
  saveConversations(account, list) { return this.put("meta", `convs:${account}`, list); }

  /** The account's delivery marks: receipts per conversation and member (marks.js). */
  async marks(account) { return (await this.get("meta", `marks:${account}`)) || []; }
  saveMarks(account, rows) { return this.put("meta", `marks:${account}`, rows); }

  /** The account's unacknowledged messages, oldest first. */
  async outbox(account) {
    const items = await this._op("outbox", "readonly",
      (s) => s.index("account").getAll(account));
    return items.sort((a, b) => a.queued - b.queued);
  }
  addToOutbox(item) { return this._op("outbox", "readwrite", (s) => s.put(item)); }
  removeFromOutbox(id) { return this._op("outbox", "readwrite", (s) => s.delete(id)); }
}
