// The web client's page: screens, conversation list, messages, composer and group panel.
// Protocol work is in client.js; this module only turns its events into DOM and back.

import { ChatClient, LoginFailed, MAX_IMAGE, fingerprintFromFragment, serverFromLocation }
  from "./client.js";
import { CONTENT, RECEIPT, decodeGroupEvent } from "./messages.js";
import { LocalStore } from "./store.js";
import { el, lastSeenLabel, linkified, sizeLabel, timeLabel } from "./view.js";
import { toHex } from "./bytes.js";

const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
const TYPING_REPEAT = 3000;
const TYPING_IDLE = 4000;
const TYPING_SHOWN = 6000;
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

const $ = (id) => document.getElementById(id);
const decoder = new TextDecoder();

const state = {
  client: null,
  me: null,
  convs: new Map(),
  presence: new Map(),
  active: null,
  typingSent: 0,
  typingTimer: null,
};

function show(screen) {
  for (const id of ["signin-screen", "trust-screen", "changed-screen", "chat-screen"]) {
    $(id).hidden = id !== screen;
  }
}

// --- conversations -------------------------------------------------------------------------

function convKey(target) {
  return target.groupId ? `g:${target.groupId}` : `u:${target.peer}`;
}

function conversation(target, title) {
  const key = convKey(target);
  let c = state.convs.get(key);
  if (!c) {
    c = {
      key, groupId: target.groupId || 0, peer: target.groupId ? null : target.peer,
      title: title ?? (target.groupId ? `group ${target.groupId}` : target.peer),
      role: null, members: [], entries: new Map(), unread: 0, lastTime: 0, lastText: "",
      hasMore: true, oldest: 0, loaded: false, delivered: 0, read: 0, typing: new Map(),
    };
    state.convs.set(key, c);
    if (c.peer && !state.presence.has(c.peer)) refreshPresence();
  }
  return c;
}

/** Ask for everyone's presence again (a new direct conversation shares presence). */
function refreshPresence() {
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

function targetOf(c) {
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

function renderList() {
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

function renderHeader() {
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

async function openConversation(key) {
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
  if (c.groupId) refreshMembers(c);
  markRead(c);
  $("composer-text").focus();
}

async function loadHistory(c) {
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

function markRead(c) {
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

function entryId(e) {
  return e.convSeq ? `s${e.convSeq}` : `o${e.outboxId}`;
}

/** Add or update a message; returns true if it is new. */
function addEntry(c, e, live = true) {
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

function eventText(e) {
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

function mark(c, e) {
  if (e.sender !== state.me || e.contentType === CONTENT.EVENT) return null;
  let text = "…";
  let label = "sending";
  if (e.failed) {
    text = "✗";
    label = `not sent: ${e.failed}`;
  } else if (e.convSeq) {
    text = "✓";
    label = "stored";
    if (c.read >= e.convSeq) {
      text = "✓✓ read";
      label = "read";
    } else if (c.delivered >= e.convSeq) {
      text = "✓✓";
      label = "delivered";
    }
  }
  return el("span", { class: `mark ${label.split(":")[0]}`, title: label, "aria-label": label,
    text });
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
      content = el("span", { class: "muted",
        text: `[image, ${sizeLabel(e.image ? e.image.total_size : 0)} not on this device]` });
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

function renderMessages(scrollToEnd) {
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

function refreshActive(c) {
  renderList();
  if (c && c.key === state.active) {
    renderHeader();
    renderMessages(false);
    markRead(c);
  }
}

function onMessage(msg) {
  const mine = msg.sender === state.me;
  const target = msg.group_id ? { groupId: msg.group_id } : { peer: mine ? msg.to : msg.sender };
  const c = conversation(target);
  const e = {
    convSeq: msg.conv_seq, sender: msg.sender, time: Number(msg.server_time_ms),
    contentType: msg.content_type, body: msg.body, image: msg.image,
    imageBytes: msg.imageBytes, clientMsgId: msg.client_msg_id ? toHex(msg.client_msg_id) : null,
  };
  const fresh = addEntry(c, e);
  if (msg.content_type === CONTENT.EVENT) groupEvent(c, msg);
  if (fresh && !mine) {
    c.typing.delete(msg.sender);
    if (c.key !== state.active || document.hidden) c.unread += 1;
    notify(c, e);
  }
  refreshActive(c);
}

function groupEvent(c, msg) {
  try {
    const ev = decodeGroupEvent(msg.body);
    c.title = ev.title || c.title;
    if ((ev.action === 3 && ev.names.includes(state.me)) ||
        (ev.action === 4 && ev.actor === state.me)) {
      c.left = true;
    }
    if (c.key === state.active) refreshMembers(c);
  } catch { /* shown as "group event" */ }
}

function notify(c, e) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") {
    return;
  }
  const body = e.contentType === CONTENT.TEXT ? decoder.decode(e.body).slice(0, 120) : "[image]";
  const n = new Notification(c.groupId ? `${e.sender} in ${c.title}` : e.sender,
    { body, tag: c.key });
  n.onclick = () => {
    window.focus();
    openConversation(c.key);
  };
}

// --- sending -------------------------------------------------------------------------------

async function sendText() {
  const c = state.convs.get(state.active);
  const box = $("composer-text");
  const text = box.value.replace(/\s+$/, "");
  if (!c || !text.trim()) return;
  if (new TextEncoder().encode(text).length > 65536) {
    $("composer-error").textContent = "The message is longer than 64 KB.";
    return;
  }
  $("composer-error").textContent = "";
  box.value = "";
  autosize();
  stopTyping(c);
  await state.client.sendText(targetOf(c), text);
}

async function sendFile(file) {
  const c = state.convs.get(state.active);
  if (!c || !file) return;
  if (!IMAGE_TYPES.includes(file.type)) {
    $("composer-error").textContent = "Only PNG, JPEG, GIF and WebP images can be sent.";
    return;
  }
  if (file.size > MAX_IMAGE) {
    $("composer-error").textContent = `The image is larger than ${sizeLabel(MAX_IMAGE)}.`;
    return;
  }
  $("composer-error").textContent = "";
  const bytes = new Uint8Array(await file.arrayBuffer());
  await state.client.sendImage(targetOf(c), bytes);
}

function onQueued(item) {
  const target = item.groupId ? { groupId: item.groupId } : { peer: item.to };
  const c = conversation(target);
  if (c.entries.has(`o${item.id}`)) return;
  for (const e of c.entries.values()) if (e.clientMsgId === item.id) return;
  addEntry(c, {
    outboxId: item.id, clientMsgId: item.id, sender: state.me, time: item.queued,
    queued: item.queued, contentType: item.contentType, body: item.body,
    localBytes: item.contentType === CONTENT.IMAGE ? item.body : null,
    image: item.contentType === CONTENT.IMAGE ? { total_size: item.body.length } : null,
  });
  refreshActive(c);
}

function onSent({ item, convSeq, serverTimeMs }) {
  const c = conversation(item.groupId ? { groupId: item.groupId } : { peer: item.to });
  const e = c.entries.get(`o${item.id}`);
  if (e) {
    c.entries.delete(`o${item.id}`);
    if (!c.entries.has(`s${convSeq}`)) {
      e.convSeq = convSeq;
      e.time = Number(serverTimeMs);
      c.entries.set(entryId(e), e);
    }
  }
  refreshActive(c);
}

function onSendFailed({ item, reason }) {
  const c = conversation(item.groupId ? { groupId: item.groupId } : { peer: item.to });
  const e = c.entries.get(`o${item.id}`);
  if (e) e.failed = reason;
  refreshActive(c);
}

function onReceipt(r) {
  for (const c of state.convs.values()) {
    const direct = r.group_id === 0 && c.peer === r.by;
    if (!(direct || (r.group_id && c.groupId === r.group_id))) continue;
    if (r.kind === RECEIPT.READ) c.read = Math.max(c.read, r.conv_seq);
    c.delivered = Math.max(c.delivered, r.conv_seq);
    refreshActive(c);
  }
}

function onTyping(t) {
  const c = conversation(t.group_id ? { groupId: t.group_id } : { peer: t.sender });
  clearTimeout(c.typing.get(t.sender));
  if (t.active) {
    c.typing.set(t.sender, setTimeout(() => {
      c.typing.delete(t.sender);
      if (c.key === state.active) renderHeader();
    }, TYPING_SHOWN));
  } else {
    c.typing.delete(t.sender);
  }
  if (c.key === state.active) renderHeader();
}

function typed() {
  const c = state.convs.get(state.active);
  if (!c) return;
  const now = Date.now();
  if (now - state.typingSent > TYPING_REPEAT) {
    state.typingSent = now;
    state.client.typing(targetOf(c), true);
  }
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(() => stopTyping(c), TYPING_IDLE);
}

function stopTyping(c) {
  clearTimeout(state.typingTimer);
  if (state.typingSent) {
    state.typingSent = 0;
    state.client.typing(targetOf(c), false);
  }
}

function autosize() {
  const box = $("composer-text");
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight, 160)}px`;
}

// --- groups --------------------------------------------------------------------------------

function names(text) {
  return text.split(/[\s,]+/).map((s) => s.trim().toLowerCase()).filter(Boolean);
}

async function refreshMembers(c) {
  if (c.left) return;
  try {
    const m = await state.client.request({ type: "GroupMembers", group_id: c.groupId });
    c.members = m.members;
    const mine = m.members.find((x) => x.name === state.me);
    c.role = mine ? mine.role : null;
    for (const x of m.members) {
      if (x.name !== state.me) {
        state.presence.set(x.name, { online: x.online, last_seen_ms: x.last_seen_ms });
      }
    }
    if (c.key === state.active) renderHeader();
    if ($("group-dialog").open) renderGroupDialog(c);
  } catch (err) {
    if (err.code === 302) c.left = true;
  }
}

function renderGroupDialog(c) {
  const manage = c.role === "owner" || c.role === "admin";
  $("group-dialog-title").textContent = c.title;
  $("group-title").value = c.title;
  $("group-title").disabled = !manage;
  $("group-rename").disabled = !manage;
  $("group-add").disabled = !manage;
  $("group-add-name").disabled = !manage;
  $("group-members").replaceChildren(...c.members.map((m) => {
    const p = m.name === state.me ? { online: true } : state.presence.get(m.name);
    const actions = [];
    if (m.name !== state.me && m.role !== "owner") {
      if (c.role === "owner") {
        const admin = m.role === "admin";
        actions.push(el("button", { type: "button", class: "small",
          "aria-label": `${admin ? "Make member" : "Make admin"}: ${m.name}`,
          text: admin ? "Make member" : "Make admin",
          onclick: () => groupAction(c, { type: "GroupSetRole", group_id: c.groupId,
            names: [m.name], admin: !admin }) }));
      }
      if (c.role === "owner" || (c.role === "admin" && m.role === "member")) {
        actions.push(el("button", { type: "button", class: "small danger",
          "aria-label": `Remove ${m.name}`, text: "Remove",
          onclick: () => groupAction(c, { type: "GroupRemove", group_id: c.groupId,
            names: [m.name] }) }));
      }
    }
    return el("li", { class: "member" },
      el("span", { class: `dot ${p && p.online ? "online" : ""}`, title: lastSeenLabel(p) }),
      el("span", { class: "member-name", text: m.name }),
      el("span", { class: "role muted small", text: m.role }), ...actions);
  }));
}

async function groupAction(c, msg) {
  $("group-error").textContent = "";
  try {
    await state.client.request(msg);
    await refreshMembers(c);
  } catch (err) {
    $("group-error").textContent = `${err.reason || err.message}` +
      (err.names && err.names.length ? `: ${err.names.join(", ")}` : "");
  }
}

// --- session lifetime ----------------------------------------------------------------------

async function afterLogin() {
  const client = state.client;
  show("chat-screen");
  $("me").textContent = state.me;
  for (const saved of await state.store.conversations(state.me)) {
    const c = conversation(saved.groupId ? { groupId: saved.groupId } : { peer: saved.peer },
      saved.title);
    if (saved.lastTime > c.lastTime) {
      c.lastTime = saved.lastTime;
      c.lastText = saved.lastText;
    }
    c.unread = Math.max(c.unread, saved.unread || 0);
  }
  state.listLoaded = true;
  const [groups, presence] = await Promise.all([
    client.request({ type: "GroupList" }).catch(() => ({ groups: [] })),
    client.request({ type: "PresenceQuery" }).catch(() => ({ entries: [] })),
  ]);
  for (const g of groups.groups) {
    const c = conversation({ groupId: g.group_id }, g.title || `group ${g.group_id}`);
    c.title = g.title || c.title;
    c.role = g.role;
  }
  for (const p of presence.entries) state.presence.set(p.name, p);
  renderList();
  if (!state.active) renderMessages(false);
}

function connectionLabel(s) {
  return { connecting: "connecting…", connected: "online", resumed: "online",
    reconnecting: "reconnecting…", offline: "offline" }[s] || s;
}

function wireClient(client) {
  client.addEventListener("message", (e) => onMessage(e.detail));
  client.addEventListener("queued", (e) => onQueued(e.detail));
  client.addEventListener("sent", (e) => onSent(e.detail));
  client.addEventListener("send-failed", (e) => onSendFailed(e.detail));
  client.addEventListener("receipt", (e) => onReceipt(e.detail));
  client.addEventListener("typing", (e) => onTyping(e.detail));
  client.addEventListener("presence", (e) => {
    state.presence.set(e.detail.name, e.detail);
    renderList();
    renderHeader();
  });
  client.addEventListener("state", (e) => {
    $("connection-state").textContent = connectionLabel(e.detail);
    $("connection-state").dataset.state = e.detail;
    if (e.detail === "resumed") afterLogin();
  });
  client.addEventListener("fatal", (e) => loginFailed(e.detail));
}

function loginFailed(err) {
  if (err instanceof LoginFailed && err.kind === "key-changed") {
    $("changed-pinned-label").textContent = err.fromLink
      ? "Fingerprint in the link you opened" : "Pinned fingerprint";
    $("changed-pinned").textContent = err.pinned;
    $("changed-received").textContent = err.received;
    show("changed-screen");
    return;
  }
  show("signin-screen");
  const text = {
    auth: "Wrong name or password.",
    untrusted: "The server was not trusted; nothing was sent.",
  }[err.kind] || err.reason || err.message;
  const retry = err.retryAfterMs ? ` Try again in ${Math.ceil(err.retryAfterMs / 1000)} s.` : "";
  $("signin-error").textContent = text + retry;
}

function confirmServer(fp) {
  return new Promise((resolve) => {
    $("trust-fingerprint").textContent = fp;
    show("trust-screen");
    $("trust-accept").focus();
    const done = (ok) => {
      $("trust-accept").onclick = null;
      $("trust-reject").onclick = null;
      show("signin-screen");
      resolve(ok);
    };
    $("trust-accept").onclick = () => done(true);
    $("trust-reject").onclick = () => done(false);
  });
}

async function submitLogin(register) {
  const name = $("signin-name").value.trim().toLowerCase();
  const password = $("signin-password").value;
  $("signin-error").textContent = "";
  if (!NAME_RE.test(name)) {
    $("signin-error").textContent =
      "Names are 1 to 32 lower-case letters, digits, _ . or -, starting with a letter or digit.";
    $("signin-name").focus();
    return;
  }
  if (!password || (register && [...password].length < 8)) {
    $("signin-error").textContent = register
      ? "Choose a password of at least 8 characters." : "Enter your password.";
    $("signin-password").focus();
    return;
  }
  for (const b of document.querySelectorAll("#signin-form button")) b.disabled = true;
  $("signin-error").textContent = register ? "Creating the account…" : "Signing in…";
  const client = new ChatClient({
    server: state.server, store: state.store, confirmServer,
    expectedFingerprint: fingerprintFromFragment(),
  });
  wireClient(client);
  state.client = client;
  state.me = name;
  try {
    await client.login(name, password, { register });
    $("signin-password").value = "";
    $("signin-error").textContent = "";
    await afterLogin();
  } catch (err) {
    client.quit();
    loginFailed(err);
  } finally {
    for (const b of document.querySelectorAll("#signin-form button")) b.disabled = false;
  }
}

function bindUi() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitLogin(false);
  });
  $("register-button").addEventListener("click", () => submitLogin(true));
  $("signout-button").addEventListener("click", () => {
    state.client.quit();
    window.location.reload();
  });
  $("notify-button").addEventListener("click", async () => {
    if ("Notification" in window) await Notification.requestPermission();
    $("notify-button").hidden = Notification.permission === "granted";
  });
  $("new-chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const peer = $("new-chat-name").value.trim().toLowerCase();
    if (!NAME_RE.test(peer)) return;
    try {
      const ack = await state.client.request({ type: "Create", peer });
      state.presence.set(peer, { online: ack.online, last_seen_ms: ack.last_seen_ms });
      $("new-chat-name").value = "";
      conversation({ peer });
      openConversation(convKey({ peer }));
    } catch (err) {
      $("new-chat-name").setCustomValidity(err.reason || err.message);
      $("new-chat-name").reportValidity();
      setTimeout(() => $("new-chat-name").setCustomValidity(""), 3000);
    }
  });
  $("new-group-button").addEventListener("click", () => {
    $("new-group-error").textContent = "";
    $("new-group-dialog").showModal();
  });
  $("new-group-create").addEventListener("click", async () => {
    const members = names($("new-group-members").value).filter((n) => n !== state.me);
    const title = $("new-group-name").value.trim();
    try {
      const ack = await state.client.request({ type: "CreateGroup", kind: 2,
        count: members.length, names: members, title });
      const c = conversation({ groupId: ack.group_id }, title || `group ${ack.group_id}`);
      c.role = "owner";
      $("new-group-dialog").close();
      $("new-group-name").value = "";
      $("new-group-members").value = "";
      openConversation(c.key);
    } catch (err) {
      $("new-group-error").textContent = `${err.reason || err.message}` +
        (err.names && err.names.length ? `: ${err.names.join(", ")}` : "");
    }
  });
  $("group-button").addEventListener("click", async () => {
    const c = state.convs.get(state.active);
    renderGroupDialog(c);
    $("group-error").textContent = "";
    $("group-dialog").showModal();
    refreshMembers(c);
  });
  $("group-rename").addEventListener("click", () => {
    const c = state.convs.get(state.active);
    groupAction(c, { type: "GroupRename", group_id: c.groupId, title: $("group-title").value });
  });
  $("group-add").addEventListener("click", () => {
    const c = state.convs.get(state.active);
    const list = names($("group-add-name").value);
    if (!list.length) return;
    $("group-add-name").value = "";
    groupAction(c, { type: "GroupAdd", group_id: c.groupId, names: list });
  });
  $("group-leave").addEventListener("click", async () => {
    const c = state.convs.get(state.active);
    await groupAction(c, { type: "GroupLeave", group_id: c.groupId });
    c.left = true;
    $("group-dialog").close();
  });
  const box = $("composer-text");
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendText();
    }
  });
  box.addEventListener("input", () => {
    autosize();
    if (box.value) typed();
  });
  box.addEventListener("paste", (e) => {
    const file = [...e.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) {
      e.preventDefault();
      sendFile(file);
    }
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    sendText();
  });
  $("composer-file").addEventListener("change", (e) => {
    sendFile(e.target.files[0]);
    e.target.value = "";
  });
  const pane = $("conversation");
  pane.addEventListener("dragover", (e) => {
    if (state.active) {
      e.preventDefault();
      pane.classList.add("dropping");
    }
  });
  pane.addEventListener("dragleave", () => pane.classList.remove("dropping"));
  pane.addEventListener("drop", (e) => {
    e.preventDefault();
    pane.classList.remove("dropping");
    sendFile(e.dataTransfer.files[0]);
  });
  $("messages").addEventListener("scroll", () => {
    const c = state.convs.get(state.active);
    if (c && $("messages").scrollTop < 40) loadHistory(c);
  });
  $("back-button").addEventListener("click", () => {
    document.body.classList.remove("in-conversation");
    state.active = null;
    renderList();
    const first = document.querySelector("#conversation-list button");
    if (first) first.focus();
  });
  document.addEventListener("visibilitychange", () => {
    const c = state.convs.get(state.active);
    if (c && !document.hidden) {
      c.unread = 0;
      markRead(c);
      renderList();
    }
  });
}

async function main() {
  state.server = serverFromLocation();
  state.store = await LocalStore.open();
  for (const node of document.querySelectorAll(".trust-host, #server-host")) {
    node.textContent = state.server.pinName;
  }
  if ("Notification" in window && Notification.permission === "granted") {
    $("notify-button").hidden = true;
  }
  bindUi();
  renderMessages(false);
  show("signin-screen");
  $("signin-name").focus();
  document.body.dataset.ready = "true";
}

main();
