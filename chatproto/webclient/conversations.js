// The conversation list and the open conversation: state, and the DOM drawn from it. Text from
// the network goes through view.js (textContent only).

import { markFor, marksToSave } from "./marks.js";
import { CONTENT, decodeGroupEvent } from "./messages.js";
import { el, lastSeenLabel, linkified, sizeLabel, timeLabel } from "./view.js";

/** What other modules plug in: called when a group conversation is opened. */
export const hooks = { groupOpened: () => {} };

export const $ = (id) => document.getElementById(id);
export const decoder = new TextDecoder();

export const state = {
  client: null,
  me: null,
  convs: new Map(),
  presence: new Map(),
  active: null,
  typingSent: 0,
  typingTimer: null,
};

export function show(screen) {
  for (const id of ["signin-screen", "trust-screen", "changed-screen", "chat-screen"]) {
    $(id).hidden = id !== screen;
  }
}

// --- conversations -------------------------------------------------------------------------

export function convKey(target) {
  return target.groupId ? `g:${target.groupId}` : `u:${target.peer}`;
}

export function conversation(target, title) {
  const key = convKey(target);
  let c = state.convs.get(key);
  if (!c) {
    c = {
      key, groupId: target.groupId || 0, peer: target.groupId ? null : target.peer,
      title: title ?? (target.groupId ? `group ${target.groupId}` : target.peer),
      role: null, members: [], entries: new Map(), unread: 0, lastTime: 0, lastText: "",
      hasMore: true, oldest: 0, loaded: false, typing: new Map(), memberCount: 0,
    };
    state.convs.set(key, c);
    if (c.peer && !state.presence.has(c.peer)) refreshPresence();
  }
  return c;
}

/** Ask for everyone's presence again (a new direct conversation shares presence). */
export function refreshPresence() {
  if (state.presenceTimer || !state.client) return;
  state.presenceTimer = setTimeout(async () => {
    state.presenceTimer = null;
    try {
      const presence = await state.client.request({ type: "PresenceQuery" });
      for (const p of presence.entries) state.presence.set(p.name, p);
      renderList();
      renderHeader();
    } catch { /* offline: the next sign-in asks again */ }
  }, 300);
}

export function targetOf(c) {
  return c.groupId ? { groupId: c.groupId } : { peer: c.peer };
}

/** Keep the list across page loads: messages already received are not delivered again. */
function saveList() {
  if (state.saveTimer || !state.listLoaded) return;
  state.saveTimer = setTimeout(() => {
    state.saveTimer = null;
    const list = [...state.convs.values()].map((c) => ({
      groupId: c.groupId, peer: c.peer, title: c.title, lastTime: c.lastTime,
      lastText: c.lastText, unread: c.unread,
    }));
    state.store.saveConversations(state.me, list);
  }, 200);
}

export function renderList() {
  saveList();
  const list = $("conversation-list");
  const items = [...state.convs.values()].sort((a, b) => b.lastTime - a.lastTime);
  list.replaceChildren(...items.map((c) => {
    const p = c.peer ? state.presence.get(c.peer) : null;
    const dot = c.peer
      ? el("span", { class: `dot ${p && p.online ? "online" : ""}`,
        title: lastSeenLabel(p) || "offline" })
      : el("span", { class: "dot group", "aria-hidden": "true", text: "#" });
    const unread = c.unread ? el("span", { class: "badge", text: String(c.unread),
      "aria-label": `${c.unread} unread` }) : null;
    const label = `${c.title}${c.unread ? `, ${c.unread} unread` : ""}` +
      (p ? `, ${lastSeenLabel(p)}` : "");
    return el("li", {},
      el("button", {
        type: "button", class: `conv ${c.key === state.active ? "active" : ""}`,
        "data-key": c.key, "aria-label": label,
        "aria-current": c.key === state.active ? "true" : null,
        onclick: () => openConversation(c.key),
      }, dot,
      el("span", { class: "conv-text" },
        el("span", { class: "conv-title", text: c.title }),
        el("span", { class: "conv-last muted small", text: c.lastText || lastSeenLabel(p) })),
      unread));
  }));
}

export function renderHeader() {
  const c = state.convs.get(state.active);
  $("composer").hidden = !c || c.left;
  $("group-button").hidden = !c || !c.groupId || c.left;
  if (!c) return;
  $("conversation-title").textContent = c.title;
  if (c.left) {
    $("conversation-status").textContent = "You are no longer a member of this group.";
  } else if (c.peer) {
    $("conversation-status").textContent = lastSeenLabel(state.presence.get(c.peer));
  } else {
    $("conversation-status").textContent = c.members.length
      ? c.members.map((m) => m.name).join(", ") : "group";
  }
  const typing = [...c.typing.keys()];
  $("typing").textContent = typing.length
    ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : "";
}

export async function openConversation(key) {
  state.active = key;
  const c = state.convs.get(key);
  document.body.classList.add("in-conversation");
  c.unread = 0;
  renderList();
  renderHeader();
  renderMessages(true);
  if (!c.loaded) {
    c.loaded = true;
    await loadHistory(c);
  }
  if (c.groupId) hooks.groupOpened(c);
  markRead(c);
  $("composer-text").focus();
}

export async function loadHistory(c) {
  if (c.loadingHistory || !c.hasMore) return;
  c.loadingHistory = true;
  try {
    const before = c.oldest || 0;
    const page = await state.client.history(targetOf(c), before, 30);
    for (const h of page.entries) {
      addEntry(c, {
        convSeq: h.conv_seq, sender: h.sender, time: Number(h.server_time_ms),
        contentType: h.content_type, body: h.body, image: h.image, fromHistory: true,
      }, false);
    }
    c.hasMore = page.has_more;
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    if (c.key === state.active) {
      renderMessages(false);
      box.scrollTop = before === 0 ? box.scrollHeight : box.scrollHeight - fromBottom;
    }
  } catch (err) {
    c.hasMore = false;
    console.warn("history", err);
  } finally {
    c.loadingHistory = false;
  }
}

export function markRead(c) {
  if (document.hidden || c.key !== state.active) return;
  let upTo = 0;
  for (const e of c.entries.values()) {
    if (e.convSeq && e.sender !== state.me && e.convSeq > upTo) upTo = e.convSeq;
  }
  if (upTo > (c.sentRead || 0)) {
    c.sentRead = upTo;
    state.client.read(targetOf(c), upTo);
  }
}

// --- messages ------------------------------------------------------------------------------

export function entryId(e) {
  return e.convSeq ? `s${e.convSeq}` : `o${e.outboxId}`;
}

/** Add or update a message; returns true if it is new. */
export function addEntry(c, e, live = true) {
  if (e.convSeq && c.entries.has(`s${e.convSeq}`)) {
    const old = c.entries.get(`s${e.convSeq}`);
    if (e.imageBytes && !old.imageBytes) {
      old.imageBytes = e.imageBytes;
      return true;
    }
    return false;
  }
  if (e.clientMsgId) {
    const pending = c.entries.get(`o${e.clientMsgId}`);
    if (pending) {
      c.entries.delete(`o${e.clientMsgId}`);
      Object.assign(pending, e);
      c.entries.set(entryId(pending), pending);
      return false;
    }
  }
  c.entries.set(entryId(e), e);
  if (e.convSeq && (!c.oldest || e.convSeq < c.oldest)) c.oldest = e.convSeq;
  if (live || e.time > c.lastTime) {
    c.lastTime = Math.max(c.lastTime, e.time || Date.now());
    c.lastText = summary(e);
  }
  return true;
}

function summary(e) {
  const who = e.sender && e.sender !== state.me ? `${e.sender}: ` : "";
  if (e.contentType === CONTENT.IMAGE) return `${who}[image]`;
  if (e.contentType === CONTENT.EVENT) return eventText(e);
  return who + decoder.decode(e.body).slice(0, 80);
}

export function eventText(e) {
  try {
    const ev = decodeGroupEvent(e.body);
    const who = ev.names.join(", ");
    const wording = {
      1: () => `${ev.actor} created “${ev.title || "the group"}” with ${who}`,
      2: () => `${ev.actor} added ${who}`,
      3: () => `${ev.actor} removed ${who}`,
      4: () => `${ev.actor} left`,
      5: () => `${ev.actor} renamed the group to “${ev.title}”`,
      6: () => `${ev.actor} made ${who} admin`,
      7: () => `${ev.actor} made ${who} member`,
    }[ev.action];
    return wording ? wording() : `${ev.actor} changed the group`;
  } catch {
    return "group event";
  }
}

/** Keep the receipts across page loads (History has none). */
export function saveMarks() {
  if (state.marksTimer || !state.listLoaded) return;
  state.marksTimer = setTimeout(() => {
    state.marksTimer = null;
    state.store.saveMarks(state.me, marksToSave(state.convs.values()));
  }, 200);
}

function mark(c, e) {
  if (e.sender !== state.me || e.contentType === CONTENT.EVENT) return null;
  let m = { text: "…", label: "sending", state: "sending" };
  if (e.failed) {
    m = { text: "✗", label: `not sent: ${e.failed}`, state: "failed" };
  } else if (e.convSeq) {
    // Other members: from the member list when it was loaded, else from the group list.
    const members = c.members.length || c.memberCount;
    m = markFor(c, e.convSeq, members ? members - 1 : 0);
  }
  return el("span", { class: `mark ${m.state}`, title: m.label, "aria-label": m.label,
    text: m.text });
}

function renderEntry(c, e) {
  const mine = e.sender === state.me;
  if (e.contentType === CONTENT.EVENT) {
    return el("div", { class: "event", role: "note", text: eventText(e) });
  }
  let content;
  if (e.contentType === CONTENT.IMAGE) {
    if (e.imageBytes || e.localBytes) {
      if (!e.url) {
        const bytes = e.imageBytes || e.localBytes;
        const mime = (e.image && e.image.mime) || "image/png";
        e.url = URL.createObjectURL(new Blob([bytes], { type: mime }));
      }
      content = el("img", { src: e.url, class: "picture",
        alt: `image from ${e.sender} (${sizeLabel((e.imageBytes || e.localBytes).length)})` });
    } else {
      // History carries an image's description, never its bytes (docs/protocol.rst,
      // HistoryEntry): only images this page received or sent can be shown.
      content = el("span", { class: "muted image-missing",
        title: "History does not carry images; this browser did not receive this one " +
          "since the page was loaded",
        text: `image (${sizeLabel(e.image ? e.image.total_size : 0)}, not on this device)` });
    }
  } else {
    content = el("span", { class: "text" }, linkified(decoder.decode(e.body)));
  }
  return el("div", { class: `message ${mine ? "mine" : "theirs"}`, "data-seq": e.convSeq || "" },
    c.groupId && !mine ? el("span", { class: "sender", text: e.sender }) : null,
    content,
    el("span", { class: "meta" },
      el("time", { text: e.time ? timeLabel(e.time) : "" }), mark(c, e)));
}

export function renderMessages(scrollToEnd) {
  const box = $("messages");
  const c = state.convs.get(state.active);
  if (!c) {
    box.replaceChildren(el("p", { class: "empty muted", text: "Choose or start a conversation." }));
    return;
  }
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  const entries = [...c.entries.values()].sort((a, b) =>
    (a.convSeq || Infinity) - (b.convSeq || Infinity) || (a.queued || 0) - (b.queued || 0));
  box.replaceChildren(...entries.map((e) => renderEntry(c, e)));
  if (scrollToEnd || atEnd) box.scrollTop = box.scrollHeight;
}

export function refreshActive(c) {
  renderList();
  if (c && c.key === state.active) {
    renderHeader();
    renderMessages(false);
    markRead(c);
  }
}
