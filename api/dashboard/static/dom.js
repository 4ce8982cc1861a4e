// Building DOM from data. Every piece of user or server text goes in through text
// nodes (never innerHTML), so label names like `<img onerror=...>` stay plain text.

/**
 * Create an element. `attrs`: `class`, `on<event>` handlers, `dataset`, boolean or string
 * attributes; children: nodes, strings or numbers (made into text nodes), arrays, or null.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all children of `el`. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A `#/...` link; path segments are URI-encoded. */
export function link(path, ...children) {
  return h("a", { href: "#" + path }, ...children);
}

export function encodePath(...segments) {
  return segments.map((s) => encodeURIComponent(String(s))).join("/");
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

/** A progress bar; `fraction` in [0, 1]. The width is set through the CSSOM (allowed by the CSP). */
export function progressBar(fraction, label) {
  const fill = h("span", { class: "progress-fill" });
  fill.style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
  return h(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": Math.round(fraction * 100) },
    h("span", { class: "progress-track" }, fill),
    label ? h("span", { class: "progress-label" }, label) : null,
  );
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", { class: "card-title" }, title) : null, ...children);
}

export function stat(label, value, extraClass) {
  return h("div", { class: "stat " + (extraClass || "") }, h("div", { class: "stat-label" }, label),
    h("div", { class: "stat-value" }, value));
}

export function notice(kind, ...children) {
  return h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, ...children);
}

/** A key/value list (dl). `rows`: [[label, value-node-or-text], ...]. */
export function definitionList(rows) {
  return h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}
