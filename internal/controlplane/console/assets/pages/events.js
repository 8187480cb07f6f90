// The live decision stream with filters (VM, session, decision, host) and a chart of allowed
// and denied decisions per minute. VM and session are filtered by egressd (a new stream);
// decision and host here, as records arrive.

import { h, mount, badge, fmtTime, errorBox, section } from "../ui.js";
import { matches, perMinute, isDenial } from "../logic.js";
import { chart } from "../chart.js";

const MAX_ROWS = 300;
const MAX_KEPT = 5000;
const CHART_MINUTES = 30;
const HEAD = ["time", "decision", "destination", "reason", "layer", "session"];

function dest(e) {
  const name = e.host || e.ip || "";
  if (e.kind === "dns") return `${name} (DNS ${e.qtype ?? ""})`;
  return e.port ? `${name}:${e.port}` : name;
}

function eventRow(e) {
  const decision =
    e.kind === "close"
      ? badge("closed")
      : e.decision === "deny"
        ? badge("deny", "deny")
        : e.would_deny
          ? badge("would deny", "would")
          : badge("allow", "allow");
  const cells = [
    fmtTime(e.time),
    decision,
    [h("span", { class: "mono" }, dest(e)), e.method ? h("div", { class: "mono muted" }, `${e.method} ${e.path ?? ""}`) : null],
    [h("span", { class: "mono" }, e.reason ?? ""), e.rule ? h("div", { class: "mono muted" }, e.rule) : null],
    e.layer ? badge(e.layer, e.layer) : "",
    e.session_id
      ? [h("a", { class: "mono", href: `#/session/${encodeURIComponent(e.session_id)}` }, e.session_id), h("div", { class: "mono muted" }, e.vm_id ?? "")]
      : h("span", { class: "mono muted" }, e.vm_id ?? ""),
  ];
  return h(
    "tr",
    { "data-seq": e.seq, "data-decision": isDenial(e) ? "deny" : "allow", "data-host": e.host ?? "" },
    cells.map((c, i) => h("td", { "data-label": HEAD[i] }, h("div", { class: "cell" }, c))),
  );
}

export function render({ client, view, params, onError }) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const f = {
    vm_id: params.get("vm_id") ?? "",
    session_id: params.get("session_id") ?? "",
    decision: params.get("decision") ?? "",
    host: params.get("host") ?? "",
  };
  const events = [];

  const setHash = (replace) => {
    const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v));
    const hash = `#/events${q.toString() ? `?${q}` : ""}`;
    if (replace) history.replaceState(null, "", hash);
    else location.hash = hash; // a new stream: the router renders the page again
  };

  const vmSel = h("select", { id: "f-vm" }, h("option", { value: "" }, "any VM"));
  if (f.vm_id) vmSel.append(h("option", { value: f.vm_id, selected: true }, f.vm_id));
  const sessIn = h("input", { id: "f-session", type: "search", value: f.session_id, placeholder: "ses_…", spellcheck: "false" });
  const decSel = h(
    "select",
    { id: "f-decision" },
    h("option", { value: "" }, "any"),
    h("option", { value: "allow", selected: f.decision === "allow" }, "allowed"),
    h("option", { value: "deny", selected: f.decision === "deny" }, "denied"),
  );
  const hostIn = h("input", { id: "f-host", type: "search", value: f.host, placeholder: "part of a host", spellcheck: "false" });
  vmSel.addEventListener("change", () => {
    f.vm_id = vmSel.value;
    setHash(false);
  });
  sessIn.addEventListener("change", () => {
    f.session_id = sessIn.value.trim();
    setHash(false);
  });
  decSel.addEventListener("change", () => {
    f.decision = decSel.value;
    setHash(true);
    redraw();
  });
  hostIn.addEventListener("input", () => {
    f.host = hostIn.value.trim();
    setHash(true);
    redraw();
  });

  const live = h("span", { class: "live", id: "live" }, h("span", { class: "dot" }), "connecting…");
  const setLive = (state, text) => mount(live, h("span", { class: ["dot", state] }), text);
  const tbody = h("tbody", { id: "stream-body" });
  const streamTable = h(
    "div",
    { class: "table-wrap stream" },
    h("table", { class: "cards", id: "stream" }, h("thead", {}, h("tr", {}, HEAD.map((c) => h("th", { scope: "col" }, c)))), tbody),
  );
  const chartBox = h("div", { id: "chart-box" });
  const count = h("span", { class: "muted", id: "stream-count" });

  function redraw() {
    const shown = [];
    for (let i = events.length - 1; i >= 0 && shown.length < MAX_ROWS; i--) {
      if (matches(events[i], f)) shown.push(eventRow(events[i]));
    }
    mount(tbody, shown);
    count.textContent = `${shown.length} shown of ${events.length} received`;
    drawChart();
  }

  function drawChart() {
    mount(chartBox, chart(perMinute(events.filter((e) => matches(e, { ...f, decision: "" })), CHART_MINUTES)));
  }

  function add(e) {
    events.push(e);
    if (events.length > MAX_KEPT) events.splice(0, events.length - MAX_KEPT);
    if (!matches(e, f)) return;
    const tr = eventRow(e);
    tr.classList.add("new");
    tbody.prepend(tr);
    while (tbody.children.length > MAX_ROWS) tbody.lastChild.remove();
    count.textContent = `${tbody.children.length} shown of ${events.length} received`;
    scheduleChart();
  }

  let chartPending = false;
  function scheduleChart() {
    if (chartPending) return;
    chartPending = true;
    setTimeout(() => {
      chartPending = false;
      if (!signal.aborted) drawChart();
    }, 500);
  }

  mount(
    view,
    h("h1", {}, "Decisions"),
    section(`Per minute, last ${CHART_MINUTES} minutes`, chartBox),
    section(
      "Live stream",
      h(
        "div",
        { class: "filters" },
        h("label", {}, "VM", vmSel),
        h("label", {}, "Session", sessIn),
        h("label", {}, "Decision", decSel),
        h("label", {}, "Host", hostIn),
        live,
        count,
      ),
      streamTable,
    ),
  );
  redraw();

  client.vms.list({ signal }).then(
    (vms) => {
      for (const vm of vms) if (vm.vm_id !== f.vm_id) vmSel.append(h("option", { value: vm.vm_id }, vm.vm_id));
    },
    () => {},
  );

  (async () => {
    setLive("on", "live");
    for await (const e of client.events.follow({ vm_id: f.vm_id || undefined, session_id: f.session_id || undefined, limit: 2000, signal })) {
      add(e);
    }
  })().catch((err) => {
    if (signal.aborted || onError(err)) return;
    setLive("off", "stream stopped");
    view.append(errorBox(err));
  });
  // The chart's minutes move on even when nothing happens.
  const timer = setInterval(drawChart, 30_000);
  return () => {
    ctrl.abort();
    clearInterval(timer);
  };
}
