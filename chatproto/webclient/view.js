// DOM building blocks. Text from the network only ever goes through textContent (never
// innerHTML); links are made from text by creating <a> elements with checked http(s) URLs.

const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** Text with http(s) links as <a> elements, everything else as text nodes. */
export function linkified(text) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    if (m.index > last) frag.append(text.slice(last, m.index));
    let href = null;
    try {
      const u = new URL(m[0]);
      if (u.protocol === "http:" || u.protocol === "https:") href = u.href;
    } catch { /* not a URL after all */ }
    if (href) {
      frag.append(el("a", { href, target: "_blank", rel: "noopener noreferrer nofollow",
        text: m[0] }));
    } else {
      frag.append(m[0]);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) frag.append(text.slice(last));
  return frag;
}

export function timeLabel(ms) {
  const d = new Date(ms);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function lastSeenLabel(p) {
  if (!p) return "";
  if (p.online) return "online";
  if (p.last_seen_ms) return `last seen ${timeLabel(Number(p.last_seen_ms))}`;
  return "offline";
}

export function sizeLabel(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
