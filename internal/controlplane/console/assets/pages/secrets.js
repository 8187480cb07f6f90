// The tenant's secrets: names, domains and placeholders. The API never answers a value, and
// this page has no way to show one.

import { h, mount, table, row, list, fmtTime, errorBox, section } from "../ui.js";

export function render({ client, view, onError }) {
  const ctrl = new AbortController();
  mount(view, h("h1", {}, "Secrets"), h("p", { class: "muted" }, "Loading…"));
  client.secrets.list({ signal: ctrl.signal }).then(
    (secrets) => {
      const head = ["name", "domains", "placeholder", "updated"];
      mount(
        view,
        h("h1", {}, "Secrets"),
        section(
          `${secrets.length} secret${secrets.length === 1 ? "" : "s"}`,
          h("p", { class: "muted" }, "Values are write-only: the sandbox uses the placeholder, and the gateway puts the value in its place on requests to the secret's domains. Set them with egressctl secret."),
          secrets.length === 0
            ? h("p", { class: "muted" }, "No secrets.")
            : table(
                head,
                secrets.map((s) => row(head, [h("span", { class: "mono" }, s.name), list(s.domains), h("span", { class: "mono" }, s.placeholder), fmtTime(s.updated_at)])),
                { class: "cards", id: "secrets-table" },
              ),
        ),
      );
    },
    (err) => {
      if (ctrl.signal.aborted || onError(err)) return;
      mount(view, h("h1", {}, "Secrets"), errorBox(err));
    },
  );
  return () => ctrl.abort();
}
