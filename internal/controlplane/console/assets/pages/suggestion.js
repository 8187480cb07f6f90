// The suggestion (DESIGN §2.9) of a session or its VM: what to add to that layer's policy so
// that the recorded denials would have been allowed, and a button that sets it.

import { NotFoundError, MethodNotAllowedError } from "../sdk/index.js";
import { h, mount, table, row, errorBox, action } from "../ui.js";
import { policyFields, POLICY_FIELDS } from "../logic.js";

/** The merged policy of a suggestion answer, whichever name it has. */
export function mergedOf(s) {
  return s?.policy ?? s?.merged_policy ?? s?.merged ?? undefined;
}

/** What setting `next` instead of `cur` changes, in words. */
export function diff(cur, next) {
  const a = policyFields(cur);
  const b = policyFields(next);
  const out = [];
  for (const k of POLICY_FIELDS) {
    if (Array.isArray(b[k])) {
      const key = (x) => (typeof x === "object" ? JSON.stringify(x) : x);
      const before = new Set(a[k].map(key));
      const after = new Set(b[k].map(key));
      for (const x of after) if (!before.has(x)) out.push(`${k} + ${x}`);
      for (const x of before) if (!after.has(x)) out.push(`${k} − ${x}`);
    } else if (a[k] !== b[k]) {
      out.push(`${k}: ${b[k]}`);
    }
  }
  return out;
}

function cell(v) {
  if (v === undefined || v === null) return "";
  if (typeof v === "object") return h("span", { class: "mono" }, JSON.stringify(v));
  return String(v);
}

/** A list of objects as a table whose columns are their keys. */
function objects(items, id) {
  const keys = [...new Set(items.flatMap((i) => (typeof i === "object" && i ? Object.keys(i) : ["value"])))];
  return table(
    keys,
    items.map((i) => row(keys, keys.map((k) => cell(typeof i === "object" && i ? i[k] : i)))),
    { class: "cards", id },
  );
}

/** The parts of a suggestion answer other than the merged policy, as tables and values. */
function parts(s) {
  const out = [];
  for (const [k, v] of Object.entries(s ?? {})) {
    if (v === mergedOf(s) || v === undefined || v === null) continue;
    if (Array.isArray(v)) {
      if (v.length === 0) continue;
      out.push(h("h3", {}, k.replaceAll("_", " ")), objects(v, `suggestion-${k}`));
    } else if (typeof v === "object") {
      out.push(h("h3", {}, k.replaceAll("_", " ")), h("pre", {}, JSON.stringify(v, null, 2)));
    } else if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") {
      out.push(h("div", {}, h("span", { class: "muted" }, `${k.replaceAll("_", " ")}: `), String(v)));
    }
  }
  return out;
}

export function renderSuggestion({ client, box, sid, vmId, signal, fail, say, current, after, onError }) {
  let scope = "session";
  const body = h("div", { id: "suggestion-body" });
  const pick = h(
    "select",
    { id: "suggest-scope", "aria-label": "Layer" },
    h("option", { value: "session" }, "for the session"),
    h("option", { value: "vm" }, "for the VM"),
  );
  pick.addEventListener("change", () => {
    scope = pick.value;
    load().catch(fail);
  });

  const path = () =>
    scope === "vm"
      ? `/v1/egress/vm/${encodeURIComponent(vmId)}/suggestion`
      : `/v1/egress/session/${encodeURIComponent(sid)}/suggestion`;

  async function load() {
    mount(body, h("p", { class: "muted" }, "Loading…"));
    let s;
    try {
      s = await client.request("GET", path(), { signal });
    } catch (err) {
      if (onError(err)) return;
      if ((err instanceof NotFoundError && err.code === "not_found" && /endpoint/.test(err.message)) || err instanceof MethodNotAllowedError) {
        mount(body, h("p", { class: "muted" }, "This egressd has no suggestion API."));
        return;
      }
      mount(body, errorBox(err));
      return;
    }
    const merged = mergedOf(s);
    const changes = merged ? diff(current(scope), merged) : [];
    const apply =
      merged && changes.length > 0
        ? action("Apply", async () => {
            try {
              const fields = policyFields(merged);
              const p =
                scope === "vm"
                  ? await client.egress.setVm({ vm_id: vmId, ...fields, signal })
                  : await client.egress.setSession({ session_id: sid, ...fields, signal });
              say(`Applied the suggestion to the ${scope} policy (revision ${p.revision}).`);
              await after();
              await load();
            } catch (err) {
              fail(err);
            }
          }, { id: "suggestion-apply" })
        : null;
    mount(
      body,
      changes.length > 0
        ? [h("p", {}, `Applying sets the ${scope} policy to the current one plus:`), h("ul", { class: "plain mono", id: "suggestion-changes" }, changes.map((c) => h("li", {}, c)))]
        : h("p", { class: "muted", id: "suggestion-none" }, "Nothing to add: the recorded decisions need no change to this layer."),
      apply,
      h("details", {}, h("summary", {}, "Details"), parts(s)),
    );
  }

  mount(
    box,
    h("div", { class: "actions" }, pick, action("Refresh", () => load().catch(fail), { class: "secondary", id: "suggestion-refresh" })),
    body,
  );
  load().catch(fail);
}
