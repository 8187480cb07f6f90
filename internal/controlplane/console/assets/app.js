// The console's shell: sign-in, navigation, and the router that shows one page at a time.
// Pages live in pages/*.js; each is `render(ctx)` and returns a function that stops what it
// started (a live stream, a timer) when the reader leaves the page.

import { Client, UnauthorizedError } from "./sdk/index.js";
import { h, mount, errorBox } from "./ui.js";
import * as vms from "./pages/vms.js";
import * as session from "./pages/session.js";
import * as events from "./pages/events.js";
import * as secrets from "./pages/secrets.js";
import * as nodes from "./pages/nodes.js";

// The key lives in this tab's sessionStorage: it goes when the tab closes, and other tabs
// and sites never see it.
const KEY = "egressd.apiKey";

// The API is the origin that served the console (its path without /ui/, behind a proxy too).
const BASE_URL = new URL("../", document.baseURI).href.replace(/\/$/, "");

const PAGES = [
  { path: "vms", title: "VMs and sessions", page: vms },
  { path: "events", title: "Decisions", page: events },
  { path: "secrets", title: "Secrets", page: secrets },
  { path: "nodes", title: "Nodes", page: nodes },
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let stop = () => {};
let client;

function newClient(apiKey) {
  return new Client({ apiKey, baseUrl: BASE_URL, authHeader: "bearer" });
}

/** The route of the hash: #/session/ses_x?a=b → {path: "session", arg: "ses_x", params}. */
function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [pathPart, query = ""] = raw.split("?", 2);
  const [path = "", ...rest] = pathPart.split("/");
  return { path: path || "vms", arg: rest.map(decodeURIComponent).join("/"), params: new URLSearchParams(query) };
}

function go(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  client = undefined;
  showSignIn(message);
}

/** A failed call: a refused key signs out; anything else is the page's to show. */
function onError(err) {
  if (err instanceof UnauthorizedError) {
    signOut("The API refused the key (it may have been revoked). Sign in again.");
    return true;
  }
  return false;
}

function showSignIn(message) {
  stop();
  stop = () => {};
  document.body.classList.add("signed-out");
  mount(nav);
  mount(who);
  const input = h("input", {
    id: "api-key",
    type: "password",
    name: "api-key",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "egk_…",
  });
  const status = h("p", { id: "signin-status", role: "status" }, message ?? "");
  const form = h(
    "form",
    { id: "signin", class: "card signin", novalidate: true },
    h("h2", {}, "Sign in"),
    h("p", {}, "An API key of egressd (an admin key, or a tenant's). It is kept in this tab only, and sent only to this egressd."),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("button", { type: "submit", id: "signin-button" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) {
      status.textContent = "Enter a key.";
      return;
    }
    status.textContent = "Checking…";
    const c = newClient(key);
    try {
      const st = await c.status();
      sessionStorage.setItem(KEY, key);
      client = c;
      signedIn(st);
    } catch (err) {
      status.textContent =
        err instanceof UnauthorizedError ? "This key was refused: egressd does not know it." : `Cannot sign in: ${err.message}`;
      status.classList.add("error");
    }
  });
  mount(main, form);
  input.focus();
}

function signedIn(st) {
  document.body.classList.remove("signed-out");
  mount(
    who,
    h("span", { class: "muted", id: "tenant" }, st.scope === "all" ? `admin · ${st.tenant}` : `tenant ${st.tenant}`),
    " ",
    h("span", { class: "muted" }, `node ${st.node_id}`),
    " ",
    h("button", { type: "button", id: "signout", class: "link", on: { click: () => signOut("Signed out.") } }, "Sign out"),
  );
  show();
}

function show() {
  if (!client) return;
  stop();
  stop = () => {};
  const r = route();
  mount(
    nav,
    PAGES.map((p) =>
      h("a", { href: `#/${p.path}`, class: r.path === p.path || (r.path === "session" && p.path === "vms") ? "active" : undefined }, p.title),
    ),
  );
  const entry = r.path === "session" ? { page: session, title: "Session" } : PAGES.find((p) => p.path === r.path);
  const view = h("div", { id: `page-${r.path}`, class: "page" });
  mount(main, view);
  if (!entry) {
    mount(view, errorBox(new Error(`No page ${r.path}.`)));
    return;
  }
  document.title = `${entry.title} · egressd`;
  const ctx = { client, view, arg: r.arg, params: r.params, go, onError };
  try {
    stop = entry.page.render(ctx) ?? (() => {});
  } catch (err) {
    mount(view, errorBox(err));
  }
}

window.addEventListener("hashchange", show);

const saved = sessionStorage.getItem(KEY);
if (saved) {
  client = newClient(saved);
  client.status().then(signedIn, (err) => {
    if (!onError(err)) {
      client = undefined;
      showSignIn(`egressd did not answer: ${err.message}`);
    }
  });
} else {
  showSignIn();
}
