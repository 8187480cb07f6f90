// Every call of the client against a real egressd: the current session, policies, checks,
// VMs, sessions, secrets, API keys, nodes, status, the CA, health, and AbortSignal.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  Client,
  DEFAULT_BASE_URL,
  EgressdConnectionError,
  InstaVM,
  NoSessionError,
  NoVMError,
  NotFoundError,
  PolicyNotSetError,
  UnauthorizedError,
} from "egressd";
import { EgressdServer, SDK_DIR } from "./harness.mjs";

let server;
const client = (opts = {}) => new Client({ baseUrl: server.url, apiKey: server.adminKey, ...opts });

before(async () => {
  server = await new EgressdServer({ args: ["--node-id", "js-node", "--node-label", "tier=test"] }).start();
});
after(async () => {
  await server?.stop();
});

describe("the current session", () => {
  test("a read creates nothing; the first write creates a VM and a session", async () => {
    const c = client();
    assert.equal(c.sessionId, undefined);
    assert.equal(c.vmId, undefined);
    const before = (await c.vms.list()).length;
    for (const read of [
      () => c.egress.getSession(),
      () => c.egress.effective(),
      () => c.egress.check({ url: "https://pypi.org/" }),
      () => c.egress.clearSession(),
    ]) {
      await assert.rejects(read(), (err) => err instanceof NoSessionError && err.status === undefined && /setSession/.test(err.message));
    }
    await assert.rejects(c.egress.getVm(), NoVMError);
    await assert.rejects(c.egress.clearVm(), NoVMError);
    assert.equal((await c.vms.list()).length, before, "a read created a VM");

    const policy = await c.egress.setSession({ allow_https: true, allowed_domains: ["API.GitHub.com"] });
    assert.match(c.sessionId, /^ses_/);
    assert.match(c.vmId, /^vm_/);
    assert.match(c.proxyUrl, new RegExp(`^http://${c.sessionId}:[^@]+@${server.proxyAddr}$`));
    assert.equal(c.socksUrl, undefined, "no --socks-listen: no socks_url");
    assert.deepEqual(policy.allowed_domains, ["api.github.com"]);
    assert.equal(policy.scope, "session");
    assert.equal(policy.id, c.sessionId);
    assert.ok(policy.revision > 0);
    assert.deepEqual(policy.allowed_tcp, []);

    // Later calls use them; nothing more is created.
    const sid = c.sessionId;
    await c.egress.setSession({ allow_http: true });
    assert.equal(c.sessionId, sid);
    assert.equal((await c.egress.getSession()).allow_http, true);
    assert.equal((await c.vms.list()).length, before + 1);

    await c.endSession({ deleteVm: true });
    assert.equal(c.sessionId, undefined);
    assert.equal(c.vmId, undefined);
    assert.equal(c.proxyUrl, undefined);
    assert.equal((await c.vms.list()).length, before);
    await c.endSession({ deleteVm: true }); // nothing to end: no error
  });

  test("writes made at once share one creation", async () => {
    const c = client();
    const [a, b, d] = await Promise.all([
      c.egress.setSession({ allow_https: true }),
      c.egress.setSession({ allow_https: true }),
      c.egress.setSession({ allow_https: true }),
    ]);
    assert.equal(a.id, b.id);
    assert.equal(b.id, d.id);
    assert.equal((await c.sessions.list({ vm_id: c.vmId })).length, 1);
    await c.endSession({ deleteVm: true });
  });

  test("a client given a VM starts its session there; one given a session uses it", async () => {
    const admin = client();
    const vm = await admin.vms.create({ vm_id: "js-given-vm" });
    const onVm = client({ vmId: vm.vm_id });
    await onVm.egress.setSession({ allow_https: true });
    assert.equal(onVm.vmId, "js-given-vm");
    const s2 = await onVm.newSession();
    assert.notEqual(s2.session_id, undefined);
    assert.equal(onVm.sessionId, s2.session_id);

    const bySession = client({ sessionId: s2.session_id });
    assert.equal((await bySession.egress.effective()).session_id, s2.session_id);
    // Its VM is looked up from the session, not created.
    await bySession.egress.setVm({ allowed_cidrs: ["198.51.100.0/24"] });
    assert.equal(bySession.vmId, "js-given-vm");
    assert.deepEqual((await bySession.egress.getVm()).allowed_cidrs, ["198.51.100.0/24"]);
    assert.equal(bySession.proxyUrl, undefined, "the proxy URL is shown only to the creator");
    assert.equal(await admin.vms.delete("js-given-vm"), undefined);
  });
});

describe("policies", () => {
  test("setSession, getSession, clearSession with every field", async () => {
    const c = client();
    const p = await c.egress.setSession({
      allow_package_managers: true,
      allow_http: false,
      allow_https: true,
      allowed_domains: ["*.example.com", "api.openai.com"],
      allowed_cidrs: ["198.51.100.0/24"],
      denied_domains: ["bad.example.com"],
      allowed_tcp: ["github.com:22", "*.db.example.com:5432"],
      mode: "monitor",
      http_rules: [{ domain: "api.openai.com", methods: ["GET"], paths: ["/v1/"] }],
    });
    assert.equal(p.mode, "monitor");
    assert.deepEqual(p.allowed_tcp, ["*.db.example.com:5432", "github.com:22"]);
    assert.deepEqual(p.http_rules, [{ domain: "api.openai.com", methods: ["GET"], paths: ["/v1/"] }]);
    const got = await c.egress.getSession();
    assert.deepEqual(got.allowed_tcp, p.allowed_tcp);
    assert.equal(got.revision, p.revision);
    assert.equal(typeof got.updated_at, "string");
    await c.egress.clearSession();
    await assert.rejects(c.egress.getSession(), (err) => err instanceof PolicyNotSetError && err.code === "policy_not_set");
    // By explicit session_id as well.
    const sid = c.sessionId;
    const other = client();
    await other.egress.setSession({ session_id: sid, allow_http: true });
    assert.equal((await other.egress.getSession({ session_id: sid })).allow_http, true);
    assert.equal(other.sessionId, undefined, "an explicit session_id does not become the current one");
    await other.egress.clearSession({ session_id: sid });
    await c.endSession({ deleteVm: true });
  });

  test("setVm, getVm, clearVm; a missing VM is told how to create", async () => {
    const c = client();
    const p = await c.egress.setVm({ allow_https: true, allowed_domains: ["*.example.com"] });
    assert.equal(p.scope, "vm");
    assert.equal(p.id, c.vmId);
    assert.equal(c.sessionId, undefined, "setVm makes a VM, not a session");
    assert.deepEqual((await c.egress.getVm()).allowed_domains, ["*.example.com"]);
    assert.deepEqual((await c.vms.get(c.vmId)).egress_policy.allowed_domains, ["*.example.com"]);
    await c.egress.clearVm();
    await assert.rejects(c.egress.getVm(), PolicyNotSetError);
    await assert.rejects(c.egress.setVm({ vm_id: "js-no-such-vm" }), (err) => {
      assert.ok(err instanceof NotFoundError && !(err instanceof PolicyNotSetError));
      assert.match(err.message, /client\.vms\.create\(\{vm_id: "js-no-such-vm"\}\)/);
      assert.equal(err.status, 404);
      return true;
    });
    await c.vms.delete(c.vmId);
  });

  test("effective: the layers intersected, allowed_tcp included", async () => {
    const c = client();
    await c.egress.setVm({ allow_https: true, allowed_domains: ["*.example.com"], allowed_tcp: ["github.com:22", "db.example.com:5432"] });
    await c.egress.setSession({ allow_https: true, allow_http: true, allowed_tcp: ["github.com:22"] });
    const e = await c.egress.effective();
    assert.equal(e.session_id, c.sessionId);
    assert.equal(e.vm_id, c.vmId);
    assert.deepEqual(e.allow_http, { value: false, from: ["vm"] });
    assert.equal(e.allowed_domains.hosts, "listed");
    assert.deepEqual(e.allowed_tcp.value, ["github.com:22"]);
    assert.deepEqual(e.layers.map((l) => l.layer).sort(), ["session", "vm"]);
    assert.ok(Array.isArray(e.notes));
    await c.endSession({ deleteVm: true });
  });

  test("check: every form of body", async () => {
    const c = client();
    await c.egress.setSession({
      allow_https: true,
      allowed_domains: ["api.example.com"],
      allowed_cidrs: ["198.51.100.0/24"],
      allowed_tcp: ["git.example.com:22"],
      http_rules: [{ domain: "api.example.com", methods: ["GET"], paths: ["/v1/"] }],
    });
    const url = await c.egress.check({ url: "https://api.example.com/v1/models" });
    assert.equal(url.decision, "allow");
    assert.equal(url.reason, "http_rules");
    assert.equal(url.layer, "session");
    const post = await c.egress.check({ url: "https://api.example.com/v1/models", method: "POST" });
    assert.deepEqual([post.decision, post.reason], ["deny", "method_not_allowed"]);
    const host = await c.egress.check({ host: "api.example.com", port: 443 });
    assert.equal(host.decision, "allow");
    const tcp = await c.egress.check({ host: "git.example.com", port: 22 });
    assert.deepEqual([tcp.decision, tcp.reason], ["allow", "allowed_tcp"]);
    const tcpOther = await c.egress.check({ host: "git.example.com", port: 2222 });
    assert.equal(tcpOther.decision, "deny");
    const ip = await c.egress.check({ ip: "198.51.100.7", port: 5432, transport: "tcp" });
    assert.deepEqual([ip.decision, ip.reason], ["allow", "allowed_cidrs"]);
    const dns = await c.egress.check({ dns_query: "api.example.com", qtype: "A" });
    assert.equal(dns.decision, "allow");
    const no = await c.egress.check({ url: "https://other.test/" });
    assert.equal(no.decision, "deny");
    assert.equal(typeof no.message, "string");
    // resolve: false is not sent (egressd would take it as given); true is.
    const resolved = await c.egress.check({ url: "https://nothing.invalid/", resolve: true });
    assert.equal(resolved.decision, "deny");
    await c.endSession({ deleteVm: true });
  });

  test("packageManagers", async () => {
    const pm = await client().egress.packageManagers();
    assert.ok(Array.isArray(pm.pip) && pm.pip.includes("pypi.org"), JSON.stringify(pm));
  });
});

describe("resources", () => {
  test("vms: create with a policy and a network, list, get, delete", async () => {
    const c = client();
    const vm = await c.vms.create({ vm_id: "js-vm-1", egress_policy: { allow_https: true }, network: "none" });
    assert.equal(vm.vm_id, "js-vm-1");
    assert.equal(vm.network.mode, "none");
    assert.equal(vm.egress_policy.allow_https, true);
    assert.ok((await c.vms.list()).some((v) => v.vm_id === "js-vm-1"));
    const got = await c.vms.get("js-vm-1");
    assert.equal(got.sessions, 0);
    assert.equal(typeof got.created_at, "string");
    const picked = await c.vms.create();
    assert.match(picked.vm_id, /^vm_/);
    await c.vms.delete(picked.vm_id);
    assert.equal(await c.vms.delete("js-vm-1"), undefined);
    await assert.rejects(c.vms.get("js-vm-1"), NotFoundError);
  });

  test("IDs are one escaped path segment", async () => {
    const c = client();
    await assert.rejects(c.vms.get("../api-keys"), NotFoundError);
    await assert.rejects(c.vms.get(".."), TypeError);
    await assert.rejects(c.vms.get(""), TypeError);
  });

  test("sessions: create, list, get, delete", async () => {
    const c = client();
    const vm = await c.vms.create();
    const s = await c.sessions.create(vm.vm_id);
    assert.match(s.proxy_url, /^http:\/\//);
    assert.equal(s.vm_id, vm.vm_id);
    const listed = await c.sessions.list({ vm_id: vm.vm_id });
    assert.deepEqual(listed.map((x) => x.session_id), [s.session_id]);
    assert.ok((await c.sessions.list()).some((x) => x.session_id === s.session_id));
    const got = await c.sessions.get(s.session_id);
    assert.equal(got.proxy_url, undefined);
    await c.sessions.delete(s.session_id);
    await assert.rejects(c.sessions.get(s.session_id), NotFoundError);
    await c.vms.delete(vm.vm_id);
  });

  test("secrets: create, list, get, rotate, setDomains, delete; never a value", async () => {
    const c = client();
    const s = await c.secrets.create({ name: "js-token", value: "sk-js-not-real", domains: ["api.example.com"] });
    assert.match(s.placeholder, /^egressd-secret-js-token-[a-z2-7]{24}$/);
    assert.deepEqual(s.domains, ["api.example.com"]);
    assert.ok(!JSON.stringify(s).includes("sk-js-not-real"));
    assert.deepEqual((await c.secrets.list()).map((x) => x.name), ["js-token"]);
    assert.equal((await c.secrets.get("js-token")).placeholder, s.placeholder);
    const rotated = await c.secrets.rotate("js-token", { value: "sk-js-rotated", domains: ["*.example.com"] });
    assert.equal(rotated.placeholder, s.placeholder);
    assert.deepEqual(rotated.domains, ["*.example.com"]);
    const moved = await c.secrets.setDomains("js-token", ["api.example.org"]);
    assert.deepEqual(moved.domains, ["api.example.org"]);
    await c.secrets.delete("js-token");
    await assert.rejects(c.secrets.get("js-token"), NotFoundError);
  });

  test("apiKeys, nodes, status, caPem, health, ready, request", async () => {
    const c = client();
    const k = await c.apiKeys.create({ tenant: "js-tenant" });
    assert.match(k.key, /.+/);
    assert.equal(k.admin, false);
    assert.ok((await c.apiKeys.list()).some((x) => x.id === k.id && x.key === undefined));
    const tenant = client({ apiKey: k.key });
    assert.equal((await tenant.status()).tenant, "js-tenant");
    await c.apiKeys.delete(k.id);
    await assert.rejects(tenant.vms.list(), UnauthorizedError);

    const nodes = await c.nodes.list();
    const me = nodes.find((n) => n.id === "js-node");
    assert.ok(me, JSON.stringify(nodes));
    assert.deepEqual(me.labels, { tier: "test" });
    assert.equal(me.state, "up");

    const st = await c.status();
    assert.equal(st.node_id, "js-node");
    assert.equal(st.scope, "all");
    assert.equal(st.store, "sqlite");

    assert.match(await c.caPem(), /^-----BEGIN CERTIFICATE-----/);
    const keyless = new Client({ baseUrl: server.url, apiKey: "" });
    assert.deepEqual(await keyless.health(), { status: "ok" });
    assert.equal((await keyless.ready()).status, "ok");
    assert.match(await keyless.caPem(), /BEGIN CERTIFICATE/);

    const raw = await c.request("GET", "/v1/vms", { query: { unused: undefined } });
    assert.ok(Array.isArray(raw.vms));
    assert.equal(await c.request("DELETE", "/v1/vms/js-raw", { query: {} }).catch((e) => e.code), "not_found");
  });
});

describe("configuration", () => {
  test("EGRESSD_URL and EGRESSD_API_KEY in Node; arguments win", async () => {
    const saved = { url: process.env.EGRESSD_URL, key: process.env.EGRESSD_API_KEY };
    try {
      process.env.EGRESSD_URL = server.url + "/";
      process.env.EGRESSD_API_KEY = server.adminKey;
      const c = new Client();
      assert.equal(c.baseUrl, server.url);
      assert.ok(Array.isArray(await c.vms.list()));
      await assert.rejects(new Client({ apiKey: "wrong" }).vms.list(), UnauthorizedError);
      delete process.env.EGRESSD_URL;
      assert.equal(new Client().baseUrl, DEFAULT_BASE_URL);
    } finally {
      for (const [k, v] of [["EGRESSD_URL", saved.url], ["EGRESSD_API_KEY", saved.key]]) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  test("InstaVM, the hosted product's name, is the client", () => {
    assert.equal(InstaVM, Client);
  });

  test("without Node's process (as in a browser): no environment, and calls work", async () => {
    const { spawnSync } = await import("node:child_process");
    const script = `
      const proc = globalThis.process;
      Object.defineProperty(globalThis, "process", { value: undefined, configurable: true, writable: true });
      const { Client, DEFAULT_BASE_URL } = await import("egressd");
      const out = { envless: new Client().baseUrl === DEFAULT_BASE_URL };
      const c = new Client({ baseUrl: ${JSON.stringify(server.url)}, apiKey: ${JSON.stringify(server.adminKey)} });
      await c.egress.setSession({ allow_https: true });
      out.session = /^ses_/.test(c.sessionId);
      out.check = (await c.egress.check({ url: "http://x.test/" })).decision; // HTTP is off
      out.events = Array.isArray(await c.events.list({ session_id: c.sessionId }));
      await c.endSession({ deleteVm: true });
      proc.stdout.write(JSON.stringify(out));
    `;
    // The environment names an egressd that is not there: a client that read it would fail.
    const env = { ...process.env, EGRESSD_URL: "http://127.0.0.1:1", EGRESSD_API_KEY: "wrong" };
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: SDK_DIR, env, encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { envless: true, session: true, check: "deny", events: true });
  });

  test("the key as X-API-Key", async () => {
    const c = client({ authHeader: "x-api-key" });
    assert.ok(Array.isArray(await c.vms.list()));
  });

  test("a bad base URL is refused at once", () => {
    for (const bad of ["127.0.0.1:8470", "ftp://x", "http://u:p@127.0.0.1:1", "http://127.0.0.1:1/?q=1"]) {
      assert.throws(() => new Client({ baseUrl: bad, apiKey: "k" }), TypeError, bad);
    }
  });

  test("a path prefix is kept", async () => {
    const c = new Client({ baseUrl: server.url + "/prefix/", apiKey: server.adminKey });
    assert.equal(c.baseUrl, server.url + "/prefix");
    await assert.rejects(c.vms.list(), NotFoundError); // egressd has no /prefix: the path was sent as given
  });

  test("no answer is an EgressdConnectionError", async () => {
    const { freePort } = await import("./harness.mjs");
    const c = new Client({ baseUrl: `http://127.0.0.1:${await freePort()}`, apiKey: "k" });
    await assert.rejects(c.vms.list(), (err) => err instanceof EgressdConnectionError && err.status === undefined && /ECONNREFUSED/.test(err.message));
  });
});

describe("socks_url", () => {
  test("a session answer's socks_url becomes client.socksUrl, and goes with the session", async () => {
    // egressd answers socks_url only with --socks-listen (issue 13); a stand-in answers it here.
    const { createServer } = await import("node:http");
    const seen = [];
    const fake = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        seen.push(`${req.method} ${req.url} ${body}`);
        const json = (status, v) => {
          res.writeHead(status, { "Content-Type": "application/json" });
          res.end(v === undefined ? "" : JSON.stringify(v));
        };
        if (req.method === "POST" && req.url === "/v1/vms") return json(201, { vm_id: "vm_s", network: { mode: "none" }, sessions: 0, created_at: "2026-01-01T00:00:00Z" });
        if (req.method === "POST" && req.url === "/v1/sessions") {
          return json(201, { session_id: "ses_s", vm_id: "vm_s", proxy_url: "http://ses_s:t@127.0.0.1:8471", socks_url: "socks5://ses_s:t@127.0.0.1:1080", created_at: "2026-01-01T00:00:00Z" });
        }
        if (req.method === "POST" && req.url === "/v1/egress/session/ses_s") return json(200, { ...JSON.parse(body), scope: "session", id: "ses_s" });
        if (req.method === "DELETE") return json(204);
        json(404, { error: { code: "not_found", message: "no" } });
      });
    });
    await new Promise((r) => fake.listen(0, "127.0.0.1", r));
    try {
      const c = new Client({ baseUrl: `http://127.0.0.1:${fake.address().port}`, apiKey: "k" });
      const p = await c.egress.setSession({ allowed_tcp: ["github.com:22"] });
      assert.deepEqual(p.allowed_tcp, ["github.com:22"]);
      assert.equal(c.socksUrl, "socks5://ses_s:t@127.0.0.1:1080");
      assert.equal(c.proxyUrl, "http://ses_s:t@127.0.0.1:8471");
      await c.endSession({ deleteVm: true });
      assert.equal(c.socksUrl, undefined);
      assert.deepEqual(seen, [
        "POST /v1/vms {}",
        'POST /v1/sessions {"vm_id":"vm_s"}',
        'POST /v1/egress/session/ses_s {"allowed_tcp":["github.com:22"]}',
        "DELETE /v1/sessions/ses_s ",
        "DELETE /v1/vms/vm_s ",
      ]);
    } finally {
      fake.closeAllConnections();
      await new Promise((r) => fake.close(r));
    }
  });
});

describe("AbortSignal", () => {
  test("an aborted signal rejects every call with its reason, and sends nothing", async () => {
    const c = client();
    const ctrl = new AbortController();
    ctrl.abort();
    const sid = { session_id: "ses_x" };
    const calls = [
      (signal) => c.egress.setSession({ allow_https: true, signal }),
      (signal) => c.egress.setSession({ ...sid, signal }),
      (signal) => c.egress.getSession({ ...sid, signal }),
      (signal) => c.egress.clearSession({ ...sid, signal }),
      (signal) => c.egress.setVm({ signal }),
      (signal) => c.egress.setVm({ vm_id: "v", signal }),
      (signal) => c.egress.getVm({ vm_id: "v", signal }),
      (signal) => c.egress.clearVm({ vm_id: "v", signal }),
      (signal) => c.egress.effective({ ...sid, signal }),
      (signal) => c.egress.check({ ...sid, url: "https://x.test/", signal }),
      (signal) => c.egress.packageManagers({ signal }),
      (signal) => c.events.list({ signal }),
      (signal) => c.events.follow({ signal }).next(),
      (signal) => c.vms.create({ signal }),
      (signal) => c.vms.list({ signal }),
      (signal) => c.vms.get("v", { signal }),
      (signal) => c.vms.delete("v", { signal }),
      (signal) => c.sessions.create("v", { signal }),
      (signal) => c.sessions.list({ signal }),
      (signal) => c.sessions.get("s", { signal }),
      (signal) => c.sessions.delete("s", { signal }),
      (signal) => c.secrets.create({ name: "n", value: "v", domains: ["a.test"], signal }),
      (signal) => c.secrets.list({ signal }),
      (signal) => c.secrets.get("n", { signal }),
      (signal) => c.secrets.rotate("n", { value: "v", signal }),
      (signal) => c.secrets.setDomains("n", ["a.test"], { signal }),
      (signal) => c.secrets.delete("n", { signal }),
      (signal) => c.apiKeys.create({ tenant: "t", signal }),
      (signal) => c.apiKeys.list({ signal }),
      (signal) => c.apiKeys.delete("k", { signal }),
      (signal) => c.nodes.list({ signal }),
      (signal) => c.status({ signal }),
      (signal) => c.caPem({ signal }),
      (signal) => c.health({ signal }),
      (signal) => c.ready({ signal }),
      (signal) => c.request("GET", "/v1/vms", { signal }),
      (signal) => c.ensureVm({ signal }),
      (signal) => c.ensureSession({ signal }),
      (signal) => c.newSession({ signal }),
      (signal) => client({ sessionId: "ses_x" }).endSession({ deleteVm: true, signal }),
    ];
    const vmsBefore = (await c.vms.list()).length;
    for (const call of calls) {
      await assert.rejects(call(ctrl.signal), (err) => err.name === "AbortError");
    }
    const reason = new Error("mine");
    const mine = new AbortController();
    mine.abort(reason);
    await assert.rejects(c.vms.list({ signal: mine.signal }), (err) => err === reason);
    assert.equal((await c.vms.list()).length, vmsBefore, "an aborted call created something");
    assert.equal(c.sessionId, undefined);
  });

  test("aborting a call in flight, and timeoutMs", async () => {
    const { createServer } = await import("node:http");
    // A server that never answers: the call must end by the signal or by the timeout.
    const sockets = new Set();
    const stall = createServer(() => {});
    stall.on("connection", (s) => sockets.add(s));
    await new Promise((r) => stall.listen(0, "127.0.0.1", r));
    const baseUrl = `http://127.0.0.1:${stall.address().port}`;
    try {
      const ctrl = new AbortController();
      const call = new Client({ baseUrl, apiKey: "k" }).vms.list({ signal: ctrl.signal });
      setTimeout(() => ctrl.abort(), 50);
      await assert.rejects(call, (err) => err.name === "AbortError");
      const slow = new Client({ baseUrl, apiKey: "k", timeoutMs: 100 });
      await assert.rejects(slow.vms.list(), (err) => err instanceof EgressdConnectionError && /timed out/.test(err.message));
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => stall.close(r));
    }
  });
});

describe("fetch", () => {
  test("the global fetch is called as a plain function, as a browser's insists", async () => {
    // A browser's fetch throws "Illegal invocation" when its this is another object.
    const real = globalThis.fetch;
    const strict = function (input, init) {
      if (this !== undefined && this !== globalThis) throw new TypeError("Illegal invocation");
      return real(input, init);
    };
    globalThis.fetch = strict;
    try {
      const c = new Client({ baseUrl: server.url, apiKey: server.adminKey });
      assert.equal((await c.health()).status, "ok");
      assert.ok((await c.status()).node_id);
    } finally {
      globalThis.fetch = real;
    }
    const given = new Client({ baseUrl: server.url, apiKey: server.adminKey, fetch: strict });
    assert.equal((await given.health()).status, "ok");
  });
});
