// The web client's page: sign-in, the trust screens, wiring the client's events to the views,
// the composer and the session's lifetime. Protocol work is in client.js; the conversation
// views are in conversations.js, the group panel in groups.js.

import { ChatClient, LoginFailed, MAX_IMAGE, fingerprintFromFragment, serverFromLocation }
  from "./client.js";
import {
  $, addEntry, convKey, conversation, decoder, entryId, hooks, loadHistory, markRead,
  openConversation, refreshActive, renderHeader, renderList, renderMessages, saveMarks, show,
  state, targetOf,
} from "./conversations.js";
import { bindGroupUi, refreshMembers } from "./groups.js";
import { recordReceipt, restoreMarks } from "./marks.js";
import { CONTENT, decodeGroupEvent } from "./messages.js";
import { LocalStore } from "./store.js";
import { sizeLabel } from "./view.js";
import { toHex } from "./bytes.js";

const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
const TYPING_REPEAT = 3000;
const TYPING_IDLE = 4000;
const TYPING_SHOWN = 6000;
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

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
  const c = conversation(r.group_id ? { groupId: r.group_id } : { peer: r.by });
  if (recordReceipt(c, r)) {
    saveMarks();
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
  restoreMarks(await state.store.marks(state.me), conversation);
  state.listLoaded = true;
  const [groups, presence] = await Promise.all([
    client.request({ type: "GroupList" }).catch(() => ({ groups: [] })),
    client.request({ type: "PresenceQuery" }).catch(() => ({ entries: [] })),
  ]);
  for (const g of groups.groups) {
    const c = conversation({ groupId: g.group_id }, g.title || `group ${g.group_id}`);
    c.title = g.title || c.title;
    c.role = g.role;
    c.memberCount = g.member_count;
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
    $("connection-state").title = client.suite
      ? `protocol version 2, key exchange ${client.suite}` : "";
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
  bindGroupUi();
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
  hooks.groupOpened = refreshMembers;
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
