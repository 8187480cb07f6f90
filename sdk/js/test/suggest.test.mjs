// Suggestions: denials through a session's proxy_url, then egress.sessionSuggestion,
// vmSuggestion and applySuggestion.
//
// egressd runs with --public-cidrs 127.0.0.0/26; the web server on 127.0.0.12 stands for a
// public one (DESIGN §10). The denied names are under .test and refused by name without a
// lookup (enforce mode: monitor mode would let them through to a resolver, and this egressd
// has no fake one).

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { BadRequestError, Client, NotFoundError } from "egressd";
import { EgressdServer, throughProxy, waitFor } from "./harness.mjs";

const WEB_IP = "127.0.0.12"; // inside --public-cidrs, not an address egressd listens on
let server;
let web;

before(async () => {
  web = createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("hello\n");
  });
  await new Promise((r) => web.listen(0, WEB_IP, r));
  server = await new EgressdServer({ args: ["--public-cidrs", "127.0.0.0/26"] }).start();
});
after(async () => {
  await server?.stop();
  web?.closeAllConnections();
  await new Promise((r) => (web ? web.close(r) : r()));
});

test("suggest, apply, and the old denials are allowed", async () => {
  const c = new Client({ baseUrl: server.url, apiKey: server.adminKey });
  await c.egress.setSession({ allow_https: true, allowed_domains: ["ok.example.test"] });
  for (const host of ["a.svc.example.test", "b.svc.example.test", "c.svc.example.test", "one.test"]) {
    assert.equal((await throughProxy(c.proxyUrl, `http://${host}/`)).status, 403);
  }
  const s = await waitFor(() => c.egress.sessionSuggestion(), (s) => s.decisions >= 4);
  assert.equal(s.scope, "session");
  assert.equal(s.id, c.sessionId);
  assert.equal(s.vm_id, c.vmId);
  assert.equal(s.changed, true);
  assert.deepEqual(s.flags, [{ entry: "allow_http", covers: 4 }]);
  assert.deepEqual(s.allowed_domains, [
    { entry: "*.example.test", covers: 3, names: ["a.svc.example.test", "b.svc.example.test", "c.svc.example.test"] },
    { entry: "one.test", covers: 1 },
  ]);
  assert.deepEqual(s.allowed_tcp, []);
  assert.equal(s.policy.mode, "enforce");
  assert.deepEqual(s.policy.allowed_domains, ["*.example.test", "ok.example.test", "one.test"]);

  const seq = (await c.events.list({ session_id: c.sessionId })).at(-1).seq;
  assert.equal((await c.egress.sessionSuggestion({ since: seq })).decisions, 0);
  assert.equal((await c.egress.sessionSuggestion({ since: new Date(Date.now() + 3600_000) })).decisions, 0);
  await assert.rejects(c.egress.sessionSuggestion({ since: "yesterday" }), BadRequestError);

  const v = await c.egress.vmSuggestion();
  assert.equal(v.scope, "vm");
  assert.equal(v.changed, false);
  assert.deepEqual(v.other_layers, [{ layer: "session", covers: 4 }]);
  assert.equal(await c.egress.applySuggestion(v), null);

  const stored = await c.egress.applySuggestion(s);
  assert.equal(stored.allow_http, true);
  assert.deepEqual(stored.allowed_domains, ["*.example.test", "ok.example.test", "one.test"]);
  const again = await c.egress.sessionSuggestion();
  assert.equal(again.changed, false);
  assert.equal(again.already_allowed, 4);

  // Another tenant sees neither the session nor the VM.
  const key = await c.apiKeys.create({ tenant: "someone-else" });
  const other = new Client({ baseUrl: server.url, apiKey: key.key });
  await assert.rejects(other.egress.sessionSuggestion({ session_id: c.sessionId }), NotFoundError);
  await assert.rejects(other.egress.vmSuggestion({ vm_id: c.vmId }), NotFoundError);
});

test("an IP literal is not allowable", async () => {
  const c = new Client({ baseUrl: server.url, apiKey: server.adminKey });
  await c.egress.setSession({ allowed_domains: ["x.test"] });
  const url = `http://${WEB_IP}:${web.address().port}/`;
  assert.equal((await throughProxy(c.proxyUrl, url)).status, 403); // an IP literal: not allowable
  const s = await waitFor(() => c.egress.sessionSuggestion(), (s) => s.decisions >= 1);
  assert.equal(s.changed, false);
  assert.equal(s.not_allowable[0].reason, "ip_literal");
  assert.match(s.not_allowable[0].explanation, /allowed_cidrs/);
});
