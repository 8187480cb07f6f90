// Tests of assets/logic.js (what the console works out without the DOM), run with Node's own
// runner by logic_test.go.

import assert from "node:assert/strict";
import { test } from "node:test";
import { groupDenials, grantFor, policyAddition, perMinute, matches, policyFields, targetOf } from "../assets/logic.js";

const deny = (seq, extra) => ({
  seq, time: new Date(1_700_000_000_000 + seq * 1000).toISOString(), kind: "connect", decision: "deny",
  session_id: "ses_1", vm_id: "vm1", layer: "session", reason: "host_not_allowed", host: "a.example.test", port: 443, ...extra,
});
const allow = (seq, extra) => ({ ...deny(seq, extra), decision: "allow", reason: "allowed_domains", ...extra });

test("denials are grouped by destination, newest first, allowed-since after a later allow", () => {
  const g = groupDenials([
    deny(1), deny(2), deny(3, { host: "b.example.test", port: 80 }), allow(4),
    { ...deny(5), kind: "close" },
    deny(6, { kind: "dns", port: undefined, qtype: "A", reason: "name_not_allowed" }),
  ]);
  assert.deepEqual(g.map((x) => x.key), ["dns a.example.test", "b.example.test:80", "a.example.test:443"]);
  assert.equal(g[2].count, 2);
  assert.ok(g[2].allowedSince, "a later allow marks the group");
  assert.equal(g[1].allowedSince, undefined);
  // A denial after the allow clears the mark again.
  const again = groupDenials([deny(1), allow(2), deny(3)]);
  assert.equal(again[0].allowedSince, undefined);
  assert.equal(again[0].count, 2);
});

test("monitor mode's would-be denials are denials", () => {
  const g = groupDenials([allow(1, { would_deny: true, reason: "host_not_allowed" })]);
  assert.equal(g.length, 1);
  assert.equal(g[0].would, true);
});

test("a grant goes on the layer that denied, with the entry the destination needs", () => {
  const cases = [
    [deny(1), { scope: "session", id: "ses_1", domains: ["a.example.test"] }],
    [deny(1, { layer: "vm" }), { scope: "vm", id: "vm1", domains: ["a.example.test"] }],
    [deny(1, { layer: "default" }), { scope: "session", id: "ses_1", domains: ["a.example.test"] }],
    [deny(1, { port: 22, reason: "port_not_allowed" }), { scope: "session", id: "ses_1", tcp: ["a.example.test:22"] }],
    [deny(1, { host: "", ip: "203.0.113.9", port: 5432, reason: "ip_literal" }), { scope: "session", id: "ses_1", cidrs: ["203.0.113.9/32"] }],
    [deny(1, { host: "", ip: "2001:db8::1", port: 5432, reason: "ip_literal" }), { scope: "session", id: "ses_1", cidrs: ["2001:db8::1/128"] }],
  ];
  for (const [e, want] of cases) {
    const [g] = groupDenials([e]);
    const plan = grantFor(g, 5);
    assert.equal(plan.why, undefined, JSON.stringify(e));
    assert.equal(plan.scope, want.scope);
    assert.equal(plan.id, want.id);
    assert.equal(plan.body.ttl_seconds, 300);
    assert.deepEqual(plan.body.domains, want.domains);
    assert.deepEqual(plan.body.tcp, want.tcp);
    assert.deepEqual(plan.body.cidrs, want.cidrs);
  }
});

test("no grant where a grant cannot help", () => {
  for (const e of [
    deny(1, { layer: "hard", reason: "hard_deny" }),
    deny(1, { reason: "https_off" }),
    deny(1, { reason: "http_off", port: 80 }),
    deny(1, { reason: "denied_domain" }),
    deny(1, { reason: "sni_mismatch" }),
    deny(1, { session_id: undefined }),
  ]) {
    const plan = grantFor(groupDenials([e])[0], 5);
    assert.ok(plan.why && !plan.body, JSON.stringify(e));
  }
});

test("add to policy never narrows a policy that allows any host", () => {
  const [g] = groupDenials([deny(1, { reason: "https_off" })]);
  // allow_http with any host: turning HTTPS on must not restrict HTTP to one host.
  const open = policyAddition({ allow_http: true, allowed_domains: [] }, g);
  assert.deepEqual(open.policy.allowed_domains, []);
  assert.equal(open.policy.allow_https, true);
  // Nothing allowed before: HTTPS on, for that host only.
  const closed = policyAddition({}, g);
  assert.deepEqual(closed.policy.allowed_domains, ["a.example.test"]);
  assert.equal(closed.policy.allow_https, true);
  assert.deepEqual(closed.changes, ["allowed_domains + a.example.test", "allow_https: true"]);
});

test("add to policy: each reason its field", () => {
  const base = { allow_https: true, allow_http: true, allowed_domains: ["x.example.test"], denied_domains: ["*.example.test", "other.test"], mode: "monitor" };
  const cases = [
    [deny(1), "allowed_domains", ["x.example.test", "a.example.test"]],
    [deny(1, { port: 22, reason: "port_not_allowed" }), "allowed_tcp", ["a.example.test:22"]],
    [deny(1, { host: "", ip: "203.0.113.9", reason: "ip_literal" }), "allowed_cidrs", ["203.0.113.9/32"]],
    [deny(1, { reason: "denied_domain" }), "denied_domains", ["other.test"]],
  ];
  for (const [e, field, want] of cases) {
    const r = policyAddition(base, groupDenials([e])[0]);
    assert.deepEqual(r.policy[field], want, field);
    assert.equal(r.policy.mode, "monitor", "the rest of the policy is kept");
  }
  assert.deepEqual(base.allowed_domains, ["x.example.test"], "the base is not changed");
  // Already allowed by a wildcard of the layer: nothing to add.
  const r = policyAddition({ allow_https: true, allowed_domains: ["*.example.test"] }, groupDenials([deny(1)])[0]);
  assert.ok(r.why);
  assert.ok(policyAddition(base, groupDenials([deny(1, { layer: "hard", reason: "hard_deny" })])[0]).why);
  // An entry the layer has already: nothing to add (another layer denied, or it changed since).
  assert.ok(policyAddition({ allowed_tcp: ["a.example.test:22"] }, groupDenials([deny(1, { port: 22, reason: "port_not_allowed" })])[0]).why);
  assert.ok(policyAddition({ allowed_cidrs: ["203.0.113.9/32"] }, groupDenials([deny(1, { host: "", ip: "203.0.113.9", reason: "ip_literal" })])[0]).why);
});

test("policyFields keeps only the policy's fields", () => {
  const p = policyFields({ scope: "session", id: "x", revision: 3, updated_at: "t", warnings: ["w"], allow_https: true });
  assert.deepEqual(Object.keys(p).sort(), [
    "allow_http", "allow_https", "allow_package_managers", "allowed_cidrs", "allowed_domains", "allowed_tcp", "denied_domains", "http_rules", "mode",
  ]);
});

test("per minute: buckets, denials and would-be denials, closes left out", () => {
  const now = Date.UTC(2026, 0, 1, 12, 30, 30);
  const at = (ms, e) => ({ ...e, time: new Date(ms).toISOString() });
  const b = perMinute([
    at(now, allow(1)), at(now - 10_000, deny(2)), at(now, allow(3, { would_deny: true })),
    at(now, { ...allow(4), kind: "close" }), at(now - 60_000, allow(5)), at(now - 3_600_000, deny(6)),
  ], 30, now);
  assert.equal(b.length, 30);
  assert.deepEqual([b[29].allow, b[29].deny], [1, 2]);
  assert.deepEqual([b[28].allow, b[28].deny], [1, 0]);
  assert.equal(b.reduce((n, x) => n + x.allow + x.deny, 0), 4, "the hour-old one is outside");
});

test("filters", () => {
  const e = deny(1, { host: "API.example.test" });
  assert.ok(matches(e, { host: "api" }));
  assert.ok(!matches(e, { host: "other" }));
  assert.ok(matches(e, { decision: "deny" }));
  assert.ok(!matches(e, { decision: "allow" }));
  assert.ok(matches(allow(1, { would_deny: true }), { decision: "deny" }));
  assert.ok(!matches(allow(1, { would_deny: true }), { decision: "allow" }));
  assert.ok(!matches(e, { session_id: "ses_2" }));
  assert.ok(matches(deny(1, { host: "", ip: "203.0.113.9" }), { host: "203.0.113" }));
  assert.equal(targetOf(deny(1, { host: "", ip: "203.0.113.9", port: 22 })).key, "203.0.113.9:22");
});
