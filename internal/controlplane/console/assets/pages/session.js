// One session: its effective policy with the layer of each part, its grants, its denied
// hosts (live) with "allow for N minutes" and "add to policy", and the suggestion with apply.

import { h, mount, table, row, badge, layerBadges, list, fmtTime, fmtUntil, errorBox, section, action } from "../ui.js";
import { groupDenials, grantFor, policyAddition, scopeFor, policyFields } from "../logic.js";
import { renderSuggestion } from "./suggestion.js";

const GRANT_MINUTES = [5, 15, 60, 240];

function enc(id) {
  return encodeURIComponent(id);
}

/** The rows of the effective policy: each field, its value, the layers it comes from. */
function effectiveRows(eff) {
  const head = ["field", "value", "from"];
  const bool = (f) => [h("span", { class: "mono" }, f), eff[f].value ? badge("on", "allow") : badge("off"), layerBadges(eff[f].from)];
  const lst = (f, extra) => [h("span", { class: "mono" }, f), [extra, list(eff[f].value)], layerBadges(eff[f].from)];
  const hosts = { any: "any public host", listed: "only the hosts listed", none: "no host" }[eff.allowed_domains.hosts] ?? "";
  const rows = [
    [h("span", { class: "mono" }, "mode"), badge(eff.mode.value, eff.mode.value === "monitor" ? "would" : undefined), layerBadges(eff.mode.from)],
    bool("allow_https"),
    bool("allow_http"),
    bool("allow_package_managers"),
    lst("allowed_domains", h("div", { class: "muted" }, hosts)),
    lst("allowed_tcp"),
    lst("allowed_cidrs"),
    lst("denied_domains"),
    [
      h("span", { class: "mono" }, "http_rules"),
      eff.http_rules.rules.length === 0
        ? h("span", { class: "muted" }, "none")
        : h(
            "ul",
            { class: "plain" },
            eff.http_rules.rules.map((r) =>
              h("li", { class: "mono" }, badge(r.layer, r.layer), `${r.domain} ${r.methods.join(",") || "any method"} ${r.paths.join(",") || "any path"}`),
            ),
          ),
      layerBadges(eff.http_rules.from),
    ],
  ];
  return table(head, rows.map((cells) => row(head, cells)), { class: "cards", id: "effective-table" });
}

function layersBox(eff) {
  const head = ["layer", "revision", "updated", "grants"];
  return table(
    head,
    eff.layers.map((l) => row(head, [badge(l.layer, l.layer), l.revision ?? "", fmtTime(l.updated_at), String(l.grants?.length ?? 0)])),
    { class: "cards" },
  );
}

/** The SDK's name for a layer: {sessionId} or {vmId}. */
function target(scope, id) {
  return scope === "vm" ? { vmId: id } : { sessionId: id };
}

function grantEntries(g) {
  return [...(g.domains ?? []), ...(g.tcp ?? []), ...(g.cidrs ?? [])];
}

export function render({ client, view, arg: sid, onError }) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const st = { eff: undefined, events: [], minutes: 5, open: new Map(), grants: { session: [], vm: [] } };

  const effBox = h("div", { id: "effective" }, h("p", { class: "muted" }, "Loading…"));
  const grantsBox = h("div", { id: "grants" });
  const deniedBox = h("div", { id: "denied" });
  const status = h("p", { id: "session-status", role: "status", class: "muted" });
  const suggestBox = h("div", { id: "suggestion" });
  const minutesSel = h(
    "select",
    { id: "grant-minutes", "aria-label": "Grant length" },
    GRANT_MINUTES.map((m) => h("option", { value: String(m) }, `${m} minutes`)),
  );
  minutesSel.addEventListener("change", () => {
    st.minutes = Number(minutesSel.value);
    drawDenied();
  });

  const fail = (err) => {
    if (signal.aborted || onError(err)) return;
    status.textContent = err.message;
    status.className = "error";
  };
  const say = (text) => {
    status.textContent = text;
    status.className = "ok";
  };

  async function loadEffective() {
    st.eff = await client.egress.effective({ session_id: sid, signal });
    mount(
      effBox,
      effectiveRows(st.eff),
      st.eff.notes?.length ? h("ul", { class: "notes muted" }, st.eff.notes.map((n) => h("li", {}, n))) : null,
      h("h3", {}, "Layers in force"),
      layersBox(st.eff),
    );
    // What "add to policy" would change depends on the layers' policies: redraw with them.
    drawDenied();
  }

  async function loadGrants() {
    const vm = st.eff?.vm_id;
    const [sg, vg] = await Promise.all([
      client.grants.list({ sessionId: sid, signal }),
      vm ? client.grants.list({ vmId: vm, signal }) : [],
    ]);
    st.grants = { session: sg, vm: vg };
    drawGrants();
  }

  function drawGrants() {
    const all = [
      ...st.grants.session.map((g) => ({ ...g, scope: "session", owner: sid })),
      ...st.grants.vm.map((g) => ({ ...g, scope: "vm", owner: st.eff?.vm_id })),
    ];
    if (all.length === 0) {
      mount(grantsBox, h("p", { class: "muted" }, "No active grants on this session or its VM."));
      return;
    }
    const head = ["layer", "allows", "expires", "note", ""];
    mount(
      grantsBox,
      table(
        head,
        all.map((g) =>
          row(head, [
            badge(g.scope, g.scope),
            list(grantEntries(g)),
            [fmtTime(g.expires_at), h("div", { class: "muted" }, `in ${fmtUntil(g.expires_at)}`)],
            g.note ?? "",
            action(
              "Revoke",
              async () => {
                try {
                  await client.grants.revoke(g.id, { ...target(g.scope, g.owner), signal });
                  say(`Revoked ${g.id}.`);
                  await Promise.all([loadGrants(), loadEffective()]);
                } catch (err) {
                  fail(err);
                }
              },
              { class: "danger" },
            ),
          ], { "data-grant": g.id }),
        ),
        { class: "cards", id: "grants-table" },
      ),
    );
  }

  async function grant(g) {
    const plan = grantFor(g, st.minutes);
    if (!plan.body) return;
    const { ttl_seconds: ttlSeconds, ...entries } = plan.body;
    const res = await client.grants.create({ ...target(plan.scope, plan.id), ...entries, ttlSeconds, signal });
    const id = res?.id;
    const warn = (res?.warnings ?? []).join(" ");
    say(`Allowed ${g.key} on the ${plan.scope} layer for ${st.minutes} minutes${id ? ` (${id})` : ""}.${warn ? ` ${warn}` : ""}`);
    await Promise.all([loadGrants(), loadEffective()]);
  }

  async function addToPolicy(plan, where) {
    const fields = policyFields(plan.policy);
    const p =
      where.scope === "vm"
        ? await client.egress.setVm({ vm_id: where.id, ...fields, signal })
        : await client.egress.setSession({ session_id: where.id, ...fields, signal });
    say(`Set the ${where.scope} policy (revision ${p.revision}).`);
    await loadEffective();
  }

  /** The layer's own policy, from the effective answer (for "default", the default policy). */
  function basePolicy(layer) {
    return st.eff?.layers.find((l) => l.layer === layer)?.policy ?? {};
  }

  function deniedActions(g) {
    const plan = grantFor(g, st.minutes);
    const grantBtn =
      plan.body
        ? action(`Allow for ${st.minutes} minutes`, () => grant(g).catch(fail), { class: "grant" })
        : h("button", { type: "button", class: "grant secondary", disabled: true, title: plan.why }, `Allow for ${st.minutes} minutes`);
    const add = policyAddition(basePolicy(g.layer), g);
    const where = scopeFor(g);
    const open = st.open.get(g.key);
    const addBtn = add.policy
      ? h("button", { type: "button", class: "add secondary", on: { click: () => { st.open.set(g.key, !open); drawDenied(); } } }, "Add to policy")
      : h("button", { type: "button", class: "add secondary", disabled: true, title: add.why }, "Add to policy");
    const confirm =
      open && add.policy
        ? h(
            "div",
            { class: "confirm" },
            h("div", {}, `On the ${where.scope} policy${g.layer === "default" ? " (from the default policy)" : ""}:`),
            h("ul", { class: "plain mono" }, add.changes.map((c) => h("li", {}, c))),
            h(
              "div",
              { class: "actions" },
              action("Confirm", async () => {
                try {
                  await addToPolicy(add, where);
                  st.open.delete(g.key);
                  drawDenied();
                } catch (err) {
                  fail(err);
                }
              }, { class: "confirm-add" }),
              h("button", { type: "button", class: "secondary", on: { click: () => { st.open.delete(g.key); drawDenied(); } } }, "Cancel"),
            ),
          )
        : null;
    return [h("div", { class: "actions" }, grantBtn, addBtn), plan.why ? h("div", { class: "muted" }, plan.why) : null, confirm];
  }

  // The last drawn state: a redraw that would change nothing is skipped, so that a button is
  // not replaced under the reader's pointer each time a record arrives.
  let drawn = "";
  function drawDenied(force = false) {
    const groups = groupDenials(st.events);
    const sig = JSON.stringify([
      groups.map((g) => [g.key, g.count, g.layer, g.reason, g.allowedSince, g.would]),
      st.minutes,
      [...st.open.entries()],
      st.eff?.layers.map((l) => [l.layer, l.revision]),
    ]);
    if (!force && sig === drawn) return;
    drawn = sig;
    if (groups.length === 0) {
      mount(deniedBox, h("p", { class: "muted" }, "No denials recorded for this session."));
      return;
    }
    const head = ["destination", "count", "last", "denied by", ""];
    mount(
      deniedBox,
      table(
        head,
        groups.map((g) =>
          row(
            head,
            [
              [
                h("span", { class: "mono" }, g.key),
                g.would ? [" ", badge("would deny", "would")] : null,
                g.allowedSince ? [" ", badge(`allowed since ${fmtTime(g.allowedSince)}`, "allow")] : null,
              ],
              String(g.count),
              fmtTime(g.last),
              [badge(g.layer || "?", g.layer), h("div", { class: "mono muted" }, g.reason), g.rule ? h("div", { class: "mono muted" }, g.rule) : null],
              deniedActions(g),
            ],
            { "data-target": g.key },
          ),
        ),
        { class: "cards", id: "denied-table" },
      ),
    );
  }

  let pending = false;
  function scheduleDenied() {
    if (pending) return;
    pending = true;
    setTimeout(() => {
      pending = false;
      if (!signal.aborted) drawDenied();
    }, 150);
  }

  async function follow() {
    for await (const e of client.events.follow({ session_id: sid, limit: 1000, signal })) {
      st.events.push(e);
      if (st.events.length > 5000) st.events.splice(0, st.events.length - 5000);
      scheduleDenied();
    }
  }

  mount(
    view,
    h("h1", {}, "Session ", h("span", { class: "mono", id: "session-id" }, sid)),
    h("p", { id: "session-vm" }, h("a", { href: `#/events?session_id=${enc(sid)}` }, "Live decisions of this session")),
    status,
    h(
      "div",
      { class: "grid2" },
      section("Effective policy", effBox),
      h("div", {}, section("Grants", grantsBox), section("Suggestion", suggestBox)),
    ),
    section(
      "Denied hosts",
      h("div", { class: "filters" }, h("label", {}, "Allow for", minutesSel)),
      deniedBox,
    ),
  );
  drawDenied();

  (async () => {
    await loadEffective();
    document.getElementById("session-vm")?.prepend(
      "VM ",
      h("span", { class: "mono" }, st.eff.vm_id),
      " · ",
    );
    renderSuggestion({ client, box: suggestBox, sid, vmId: st.eff.vm_id, signal, fail, say, after: loadEffective, onError });
    await loadGrants();
    drawDenied();
  })().catch((err) => {
    if (signal.aborted || onError(err)) return;
    mount(effBox, errorBox(err));
  });
  follow().catch(fail);
  // Grants count down; redraw them each minute (cheap, no request).
  const timer = setInterval(() => drawGrants(), 30_000);
  return () => {
    ctrl.abort();
    clearInterval(timer);
  };
}
