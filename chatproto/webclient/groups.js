// The group panel: members with roles and presence, rename, add, remove, roles, leave; and the
// new-group dialog.

import { $, conversation, openConversation, renderHeader, state } from "./conversations.js";
import { el, lastSeenLabel } from "./view.js";

/** A refused request as one line: the reason, and the names it is about. */
function errorText(err) {
  return `${err.reason || err.message}` +
    (err.names && err.names.length ? `: ${err.names.join(", ")}` : "");
}

function names(text) {
  return text.split(/[\s,]+/).map((s) => s.trim().toLowerCase()).filter(Boolean);
}

export async function refreshMembers(c) {
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
    $("group-error").textContent = errorText(err);
  }
}

/** The group dialogs' controls. */
export function bindGroupUi() {
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
      $("new-group-error").textContent = errorText(err);
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
}
