// The suggestion (DESIGN §2.9) of a session or its VM: what to add to that layer's policy so
// that the recorded denials would have been allowed, and a button that sets it.

import { h, mount, table, row, badge, errorBox, action } from "../ui.js";

/** What the suggestion adds, in words, from its entries (flags, domains, TCP endpoints). */
export function additions(s) {
  const out = [];
  for (const f of s?.flags ?? []) out.push({ text: `${f.entry}: true`, covers: f.covers, names: f.names });
  for (const d of s?.allowed_domains ?? []) out.push({ text: `allowed_domains + ${d.entry}`, covers: d.covers, names: d.names });
  for (const d of s?.allowed_tcp ?? []) out.push({ text: `allowed_tcp + ${d.entry}`, covers: d.covers, names: d.names });
  return out;
}

function notAllowable(items) {
  const head = ["destination", "reason", "layer", "covers", "why"];
  return table(
    head,
    items.map((n) =>
      row(head, [
        h("span", { class: "mono" }, [n.host || n.ip || "", n.port ? `:${n.port}` : ""].join("")),
        h("span", { class: "mono" }, n.reason ?? ""),
        n.layer ? badge(n.layer, n.layer) : "",
        String(n.covers ?? ""),
        n.explanation ?? "",
      ]),
    ),
    { class: "cards", id: "suggestion-not-allowable" },
  );
}

export function renderSuggestion({ client, box, sid, vmId, signal, fail, say, after, onError }) {
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

  async function load() {
    mount(body, h("p", { class: "muted" }, "Loading…"));
    let s;
    try {
      s =
        scope === "vm"
          ? await client.egress.vmSuggestion({ vm_id: vmId, signal })
          : await client.egress.sessionSuggestion({ session_id: sid, signal });
    } catch (err) {
      if (onError(err)) return;
      mount(body, errorBox(err));
      return;
    }
    const adds = additions(s);
    const apply =
      s.changed && s.policy
        ? action("Apply", async () => {
            try {
              const p = await client.egress.applySuggestion(s, { signal });
              say(`Applied the suggestion to the ${scope} policy (revision ${p.revision}).`);
              await after();
              await load();
            } catch (err) {
              fail(err);
            }
          }, { id: "suggestion-apply" })
        : null;
    const others = (s.other_layers ?? []).filter((o) => o.covers > 0);
    mount(
      body,
      h(
        "p",
        { class: "muted" },
        `From ${s.decisions ?? 0} recorded denial${s.decisions === 1 ? "" : "s"}${s.truncated ? " (more were recorded: not all read)" : ""}; ` +
          (s.policy_set ? `the ${scope} policy at revision ${s.revision}.` : `the ${scope} has no policy of its own: the suggestion starts from the default.`),
      ),
      adds.length > 0
        ? [
            h("p", {}, `Applying sets the ${scope} policy to its current one plus:`),
            h(
              "ul",
              { class: "plain mono", id: "suggestion-changes" },
              adds.map((a) =>
                h("li", {}, a.text, " ", h("span", { class: "muted" }, `(${a.covers} decision${a.covers === 1 ? "" : "s"}${a.names?.length ? `: ${a.names.join(", ")}` : ""})`)),
              ),
            ),
          ]
        : h("p", { class: "muted", id: "suggestion-none" }, "Nothing to add: the recorded denials need no change to this layer."),
      apply,
      (s.notes ?? []).length ? h("ul", { class: "notes muted" }, s.notes.map((n) => h("li", {}, n))) : null,
      s.already_allowed ? h("p", { class: "muted" }, `${s.already_allowed} denial(s) are allowed by the policy now.`) : null,
      others.length ? h("p", { class: "muted" }, `Denied by other layers (see their suggestion): ${others.map((o) => `${o.layer} ${o.covers}`).join(", ")}.`) : null,
      (s.not_allowable ?? []).length ? [h("h3", {}, "Not allowable by a policy entry"), notAllowable(s.not_allowable)] : null,
    );
  }

  mount(
    box,
    h("div", { class: "actions" }, pick, action("Refresh", () => load().catch(fail), { class: "secondary", id: "suggestion-refresh" })),
    body,
  );
  load().catch(fail);
}
