// VMs and their open sessions; a session links to its page.

import { h, mount, table, row, badge, fmtTime, errorBox, section } from "../ui.js";

// The list answer has no policies: each VM's is read by itself, a few at a time, for the
// first MAX_DETAILS VMs.
const MAX_DETAILS = 100;
const AT_ONCE = 4;

function policySummary(p) {
  if (!p) return h("span", { class: "muted" }, "no VM policy");
  const parts = [];
  if (p.mode === "monitor") parts.push(badge("monitor", "would"));
  if (p.allow_https) parts.push(badge("https"));
  if (p.allow_http) parts.push(badge("http"));
  if (p.allow_package_managers) parts.push(badge("package managers"));
  const n = (p.allowed_domains?.length ?? 0) + (p.allowed_tcp?.length ?? 0) + (p.allowed_cidrs?.length ?? 0);
  parts.push(h("span", { class: "muted" }, `${n} entr${n === 1 ? "y" : "ies"}, rev ${p.revision}`));
  return parts;
}

export function render({ client, view, onError }) {
  const ctrl = new AbortController();
  mount(view, h("h1", {}, "VMs and sessions"), h("p", { class: "muted" }, "Loading…"));
  (async () => {
    const [list, sessions] = await Promise.all([
      client.vms.list({ signal: ctrl.signal }),
      client.sessions.list({ signal: ctrl.signal }),
    ]);
    const byVm = new Map();
    for (const s of sessions) {
      if (!byVm.has(s.vm_id)) byVm.set(s.vm_id, []);
      byVm.get(s.vm_id).push(s);
    }
    const vmHead = ["VM", "network", "policy", "sessions", "created"];
    const vmRows = list.map((vm) =>
      row(vmHead, [
        [h("span", { class: "mono" }, vm.vm_id), h("div", {}, h("a", { href: `#/events?vm_id=${encodeURIComponent(vm.vm_id)}`, class: "muted" }, "decisions"))],
        [vm.network?.mode ?? "none", vm.network?.state ? [" ", badge(vm.network.state)] : null, vm.network?.address ? h("div", { class: "mono muted" }, vm.network.address) : null],
        h("span", { class: "vm-policy", "data-vm": vm.vm_id }, list.indexOf(vm) < MAX_DETAILS ? h("span", { class: "muted" }, "…") : ""),
        (byVm.get(vm.vm_id) ?? []).length === 0
          ? h("span", { class: "muted" }, "none open")
          : h(
              "ul",
              { class: "plain" },
              (byVm.get(vm.vm_id) ?? []).map((s) =>
                h("li", {}, h("a", { href: `#/session/${encodeURIComponent(s.session_id)}`, class: "mono session-link" }, s.session_id)),
              ),
            ),
        fmtTime(vm.created_at),
      ]),
    );
    mount(
      view,
      h("h1", {}, "VMs and sessions"),
      section(
        `${list.length} VM${list.length === 1 ? "" : "s"}, ${sessions.length} open session${sessions.length === 1 ? "" : "s"}`,
        list.length === 0
          ? h("p", { class: "muted" }, "No VMs yet. Create one with egressctl vm create, or POST /v1/vms.")
          : table(vmHead, vmRows, { class: "cards", id: "vms-table" }),
      ),
    );
    const cells = new Map([...view.querySelectorAll(".vm-policy")].map((el) => [el.getAttribute("data-vm"), el]));
    const queue = list.slice(0, MAX_DETAILS).map((vm) => vm.vm_id);
    const worker = async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
        try {
          const vm = await client.vms.get(id, { signal: ctrl.signal });
          mount(cells.get(id), policySummary(vm.egress_policy));
        } catch (err) {
          if (ctrl.signal.aborted || onError(err)) return;
          mount(cells.get(id), h("span", { class: "error" }, err.message));
        }
      }
    };
    await Promise.all(Array.from({ length: AT_ONCE }, worker));
  })().catch((err) => {
    if (ctrl.signal.aborted || onError(err)) return;
    mount(view, h("h1", {}, "VMs and sessions"), errorBox(err));
  });
  return () => ctrl.abort();
}
