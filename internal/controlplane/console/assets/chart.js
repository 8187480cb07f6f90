// A bar chart of allowed and denied decisions per minute, drawn as SVG by hand (no library).

import { s, h } from "./ui.js";

const W = 900;
const H = 170;
const PAD_L = 28;
const PAD_B = 18;

/** An SVG of buckets [{start, allow, deny}]: denied stacked on allowed, one bar per minute. */
export function chart(buckets) {
  const max = Math.max(1, ...buckets.map((b) => b.allow + b.deny));
  const plotW = W - PAD_L;
  const plotH = H - PAD_B - 4;
  const bw = plotW / buckets.length;
  const y = (n) => (n / max) * plotH;
  const bars = buckets.map((b, i) => {
    const x = PAD_L + i * bw + 1;
    const w = Math.max(1, bw - 2);
    const ha = y(b.allow);
    const hd = y(b.deny);
    const when = new Date(b.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return s(
      "g",
      { class: "minute", "data-allow": b.allow, "data-deny": b.deny },
      s("title", {}, `${when}: ${b.allow} allowed, ${b.deny} denied`),
      b.allow ? s("rect", { class: "bar-allow", x, width: w, y: 4 + plotH - ha, height: ha }) : null,
      b.deny ? s("rect", { class: "bar-deny", x, width: w, y: 4 + plotH - ha - hd, height: hd }) : null,
    );
  });
  const ticks = [];
  for (let i = 0; i < buckets.length; i += Math.max(1, Math.round(buckets.length / 6))) {
    const when = new Date(buckets[i].start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    ticks.push(s("text", { x: PAD_L + i * bw, y: H - 4 }, when));
  }
  return h(
    "div",
    { class: "chart" },
    s(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Allowed and denied decisions per minute", id: "chart" },
      s("line", { class: "axis", x1: PAD_L, y1: 4 + plotH, x2: W, y2: 4 + plotH }),
      s("text", { x: 0, y: 12 }, String(max)),
      s("text", { x: 0, y: 4 + plotH }, "0"),
      bars,
      ticks,
    ),
    h(
      "div",
      { class: "legend" },
      h("span", {}, h("span", { class: "sw sw-allow" }), "allowed"),
      h("span", {}, h("span", { class: "sw sw-deny" }), "denied (and would-be denied)"),
    ),
  );
}
