// DOM helpers. The page is built with createElement and textContent only: host names, rules
// and messages come from sandboxes' traffic, so no string is ever parsed as HTML (the CSP's
// Trusted Types would refuse it anyway).

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === "class") {
      el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    } else if (k === "style" || k.startsWith("on")) {
      // Inline styles and handlers are what the CSP forbids; refuse them here too.
      throw new Error(`attribute ${k} is not allowed`);
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** h("tag", {attr: value, on: {click: fn}}, ...children): an HTML element. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** s("rect", {...}): an SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace el's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  build(el, {}, children);
  return el;
}

/** A time as the reader's local time, with the date when it is not today. */
export function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

/** How long until t, in words ("4 min", "35 s"). */
export function fmtUntil(t) {
  const ms = new Date(t).getTime() - Date.now();
  if (!(ms > 0)) return "expired";
  if (ms < 60_000) return `${Math.ceil(ms / 1000)} s`;
  if (ms < 3_600_000) return `${Math.ceil(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/** A coloured label: a layer, a decision, a state. */
export function badge(text, kind) {
  return h("span", { class: ["badge", kind && `badge-${kind}`] }, text);
}

export function layerBadges(from) {
  if (!from || from.length === 0) return h("span", { class: "muted" }, "none");
  return from.map((l) => badge(l, l));
}

/** A list of strings, or a word when it is empty. */
export function list(values, empty = "none") {
  if (!values || values.length === 0) return h("span", { class: "muted" }, empty);
  return h("ul", { class: "plain" }, values.map((v) => h("li", { class: "mono" }, v)));
}

/** A table; rows are arrays of cells (strings or nodes). */
export function table(head, rows, attrs = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs,
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows),
    ),
  );
}

/** A row of a table, with cells labelled for the narrow layout. */
export function row(head, cells, attrs = {}) {
  return h(
    "tr",
    attrs,
    // One element per cell, so that the phone layout (label, then content) keeps the
    // content's parts together.
    cells.map((c, i) => h("td", { "data-label": head[i] }, h("div", { class: "cell" }, c))),
  );
}

/** An error box with the API's message. */
export function errorBox(err) {
  const msg = err?.message ?? String(err);
  return h("div", { class: "error", role: "alert" }, msg);
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

/** A button that runs fn once per click, disabled while it runs, reporting errors in status. */
export function action(label, fn, attrs = {}) {
  const btn = h("button", { type: "button", ...attrs }, label);
  btn.addEventListener("click", async () => {
    if (btn.disabled) return;
    btn.disabled = true;
    try {
      await fn(btn);
    } finally {
      if (btn.isConnected) btn.disabled = false;
    }
  });
  return btn;
}
