// The fleet's egressd nodes (admin keys only).

import { ForbiddenError } from "../sdk/index.js";
import { h, mount, table, row, badge, fmtTime, errorBox, section } from "../ui.js";

export function render({ client, view, onError }) {
  const ctrl = new AbortController();
  mount(view, h("h1", {}, "Nodes"), h("p", { class: "muted" }, "Loading…"));
  client.nodes.list({ signal: ctrl.signal }).then(
    (nodes) => {
      const head = ["node", "state", "roles", "address", "VMs", "revision", "last heartbeat"];
      mount(
        view,
        h("h1", {}, "Nodes"),
        section(
          `${nodes.length} node${nodes.length === 1 ? "" : "s"}`,
          table(
            head,
            nodes.map((n) =>
              row(head, [
                h("span", { class: "mono" }, n.id),
                badge(n.state, n.state === "up" ? "allow" : "deny"),
                n.roles.map((r) => badge(r)),
                [h("span", { class: "mono" }, n.address ?? ""), n.sandbox_cidr ? h("div", { class: "mono muted" }, n.sandbox_cidr) : null],
                String(n.vm_count),
                String(n.revision),
                fmtTime(n.last_heartbeat),
              ]),
            ),
            { class: "cards", id: "nodes-table" },
          ),
        ),
      );
    },
    (err) => {
      if (ctrl.signal.aborted || onError(err)) return;
      const msg = err instanceof ForbiddenError ? "The nodes of the fleet are shown to admin keys only." : undefined;
      mount(view, h("h1", {}, "Nodes"), msg ? h("p", { class: "muted" }, msg) : errorBox(err));
    },
  );
  return () => ctrl.abort();
}
