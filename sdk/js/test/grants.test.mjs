// Grants against a real egressd: client.grants create, list and revoke, errors naming the
// field, tenant isolation, and arguments refused before anything is sent.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { BadRequestError, Client, MAX_GRANT_TTL_SECONDS, NotFoundError } from "egressd";
import { EgressdServer } from "./harness.mjs";

let server;
const admin = () => new Client({ baseUrl: server.url, apiKey: server.adminKey });
async function tenant(name) {
  const key = await admin().apiKeys.create({ tenant: name });
  return new Client({ baseUrl: server.url, apiKey: key.key });
}

before(async () => {
  server = await new EgressdServer().start();
});
after(async () => {
  await server?.stop();
});

describe("grants", () => {
  test("create, list and revoke on a session and a VM", async () => {
    const c = await tenant("js-grants");
    const vm = await c.vms.create({ vm_id: "vm-g" });
    const s = await c.sessions.create(vm.vm_id);
    const g = await c.grants.create({ sessionId: s.session_id, tcp: ["GitHub.com:22"], domains: "Example.COM", ttlSeconds: 600, note: "clone" });
    assert.match(g.id, /^gr_[a-z2-7]{20}$/);
    assert.deepEqual([g.scope, g.scope_id, g.tcp, g.domains, g.cidrs, g.note], ["session", s.session_id, ["github.com:22"], ["example.com"], [], "clone"]);
    assert.equal(Date.parse(g.expires_at) - Date.parse(g.created_at), 600_000);
    assert.ok(g.warnings?.length, "a grant on a session without a policy says what it adds");

    const eff = await c.egress.effective({ session_id: s.session_id });
    assert.deepEqual(eff.layers.flatMap((l) => (l.grants ?? []).map((x) => x.id)), [g.id]);

    const v = await c.grants.create({ vmId: "vm-g", cidrs: ["198.51.100.0/24"], ttlSeconds: MAX_GRANT_TTL_SECONDS });
    assert.deepEqual((await c.grants.list({ sessionId: s.session_id })).map((x) => x.id), [g.id]);
    assert.deepEqual((await c.grants.list({ vmId: "vm-g" })).map((x) => x.id), [v.id]);

    const other = await tenant("js-grants-other");
    await assert.rejects(other.grants.list({ vmId: "vm-g" }), NotFoundError);
    await assert.rejects(other.grants.revoke(v.id, { vmId: "vm-g" }), NotFoundError);
    await assert.rejects(c.grants.revoke(v.id, { sessionId: s.session_id }), NotFoundError);

    await c.grants.revoke(g.id, { sessionId: s.session_id });
    assert.deepEqual(await c.grants.list({ sessionId: s.session_id }), []);
    await assert.rejects(c.grants.revoke(g.id, { sessionId: s.session_id }), NotFoundError);
  });

  test("bad input names the field", async () => {
    const c = await tenant("js-grants-bad");
    await c.vms.create({ vm_id: "vm-b" });
    for (const [params, field] of [
      [{ tcp: ["a.test:1"], ttlSeconds: 0 }, "ttl_seconds"],
      [{ tcp: ["a.test:1"], ttlSeconds: MAX_GRANT_TTL_SECONDS + 1 }, "ttl_seconds"],
      [{ tcp: ["a.test"], ttlSeconds: 60 }, "tcp[0]"],
      [{ domains: ["ok.test", "not a domain"], ttlSeconds: 60 }, "domains[1]"],
      [{ cidrs: ["198.51.100.1/24"], ttlSeconds: 60 }, "cidrs[0]"],
      [{ ttlSeconds: 60 }, undefined],
    ]) {
      await assert.rejects(c.grants.create({ vmId: "vm-b", ...params }), (err) => err instanceof BadRequestError && err.field === field, JSON.stringify(params));
    }
    assert.deepEqual(await c.grants.list({ vmId: "vm-b" }), []);
    await assert.rejects(c.grants.create({ vmId: "nope", tcp: ["a.test:1"], ttlSeconds: 60 }), NotFoundError);
  });

  test("arguments are checked before anything is sent", async () => {
    const c = await tenant("js-grants-args");
    await assert.rejects(c.grants.list({}), TypeError);
    await assert.rejects(c.grants.list({ sessionId: "s", vmId: "v" }), TypeError);
    await assert.rejects(c.grants.create({ vmId: "v", tcp: ["a.test:1"], ttlSeconds: 1.5 }), TypeError);
    await assert.rejects(c.grants.revoke("..", { vmId: "v" }), TypeError);
  });
});
