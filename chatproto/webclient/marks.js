// Delivery marks of one's own messages, from the server's receipts: per conversation, per
// member, the highest conv_seq each one acknowledged (DELIVERED) and read (READ). They are kept
// in IndexedDB, so a reload still shows ✓✓ / read on messages that come back from History
// (History carries no receipts). In a group a mark says how many of the other members got
// or read a message; the title names them.

import { RECEIPT } from "./messages.js";

/** The receipts of conversation ``c``: name -> { delivered, read } (created on first use). */
function receiptsOf(c) {
  if (!c.receipts) c.receipts = new Map();
  return c.receipts;
}

/** Apply one Receipt to ``c``; true if it moved a mark forward. */
export function recordReceipt(c, receipt) {
  const all = receiptsOf(c);
  const r = all.get(receipt.by) || { delivered: 0, read: 0 };
  const before = `${r.delivered}/${r.read}`;
  // A read message was delivered too.
  r.delivered = Math.max(r.delivered, receipt.conv_seq);
  if (receipt.kind === RECEIPT.READ) r.read = Math.max(r.read, receipt.conv_seq);
  all.set(receipt.by, r);
  return `${r.delivered}/${r.read}` !== before;
}

/** What the store keeps: one row per conversation with receipts. */
export function marksToSave(convs) {
  const rows = [];
  for (const c of convs) {
    if (!c.receipts || !c.receipts.size) continue;
    rows.push({ groupId: c.groupId, peer: c.peer,
      by: Object.fromEntries([...c.receipts].map(([n, r]) => [n, [r.delivered, r.read]])) });
  }
  return rows;
}

/** Restore saved rows; ``conversationOf(target)`` finds or creates the conversation. */
export function restoreMarks(rows, conversationOf) {
  for (const row of rows) {
    const c = conversationOf(row.groupId ? { groupId: row.groupId } : { peer: row.peer });
    for (const [by, [delivered, read]] of Object.entries(row.by)) {
      recordReceipt(c, { by, kind: RECEIPT.DELIVERED, conv_seq: delivered });
      recordReceipt(c, { by, kind: RECEIPT.READ, conv_seq: read });
    }
  }
}

/**
 * The mark of one's own stored message ``seq`` in ``c``: { text, label, state }. ``others``
 * is the number of other group members when known (0 if not).
 */
export function markFor(c, seq, others = 0) {
  const all = c.receipts || new Map();
  if (c.peer) {
    const r = all.get(c.peer);
    if (r && r.read >= seq) return { text: "✓✓ read", label: "read", state: "read" };
    if (r && r.delivered >= seq) return { text: "✓✓", label: "delivered", state: "delivered" };
    return { text: "✓", label: "stored", state: "stored" };
  }
  const readers = [...all].filter(([, r]) => r.read >= seq).map(([n]) => n).sort();
  const got = [...all].filter(([, r]) => r.delivered >= seq).map(([n]) => n).sort();
  const of = others ? ` of ${others}` : "";
  if (readers.length) {
    const everyone = others && readers.length >= others;
    return { text: everyone ? "✓✓ read by all" : `✓✓ read by ${readers.length}${of}`,
      label: `read by ${readers.join(", ")}`, state: "read" };
  }
  if (got.length) {
    const everyone = others && got.length >= others;
    return { text: everyone ? "✓✓" : `✓✓ ${got.length}${of}`,
      label: `delivered to ${got.join(", ")}`, state: "delivered" };
  }
  return { text: "✓", label: "stored", state: "stored" };
}
