// Decision records: traffic through a session's proxy_url, then events.list and events.follow,
// including a follow that rides out a restart of egressd.
//
// egressd runs with --public-cidrs 127.0.0.0/26, so that a test HTTP server on 127.0.0.10 can
// stand for a public one (DESIGN §10): nothing leaves the machine. Denied requests name hosts
// under .test, which egressd refuses by name without looking them up.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";
import { BadRequestError, Client, EgressdConnectionError, EgressdError } from "egressd";
import { EgressdServer, throughProxy, waitFor } from "./harness.mjs";

const WEB_IP = "127.0.0.10"; // inside --public-cidrs, and not an address egressd listens on
let server;
let web;

before(async () => {
  web = createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("hello from the fake internet\n");
  });
  await new Promise((r) => web.listen(0, WEB_IP, r));
  server = await new EgressdServer({ args: ["--public-cidrs", "127.0.0.0/26"] }).start();
});
after(async () => {
  await server?.stop();
  web?.closeAllConnections();
  await new Promise((r) => (web ? web.close(r) : r()));
});

const newClient = () => new Client({ baseUrl: server.url, apiKey: server.adminKey });

/** A client with a session of its own, so that its records do not mix with the others'. */
async function ownSession(policy = { allow_https: true }) {
  const c = newClient();
  await c.egress.setSession(policy);
  return c;
}

/** Take the next record of a follow, failing after ms. */
async function next(it, ms = 15_000) {
  let timer;
  const r = await Promise.race([
    it.next(),
    new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`no record in ${ms} ms`)), ms))),
  ]);
  clearTimeout(timer);
  assert.equal(r.done, false);
  return r.value;
}

describe("list", () => {
  let c;
  let started;
  let webUrl;
  before(async () => {
    c = await ownSession({ allowed_cidrs: [`${WEB_IP}/32`] });
    webUrl = `http://${WEB_IP}:${web.address().port}/`;
    started = new Date(Date.now() - 1000);
    assert.equal((await throughProxy(c.proxyUrl, webUrl)).status, 200);
    const denied = await throughProxy(c.proxyUrl, "http://denied.example.test/");
    assert.equal(denied.status, 403);
    assert.equal(denied.headers["x-egress-decision"], "deny");
    await waitFor(() => c.events.list({ session_id: c.sessionId }), (evs) => evs.some((e) => e.kind === "close") && evs.some((e) => e.decision === "deny"));
  });

  test("allowed and denied records", async () => {
    const events = await c.events.list({ session_id: c.sessionId });
    const deny = events.filter((e) => e.decision === "deny");
    assert.equal(deny.length, 1, JSON.stringify(events));
    const d = deny[0];
    assert.deepEqual([d.host, d.port, d.kind, d.transport], ["denied.example.test", 80, "request", "tcp"]);
    assert.deepEqual([d.session_id, d.vm_id, d.tenant, d.layer, d.mode], [c.sessionId, c.vmId, "default", "session", "enforce"]);
    assert.ok(d.reason && d.rule && d.seq > 0 && !Number.isNaN(Date.parse(d.time)));
    const allowed = events.filter((e) => e.decision === "allow" && e.kind === "connect");
    assert.equal(allowed.length, 1);
    assert.deepEqual([allowed[0].ip, allowed[0].port, allowed[0].reason], [WEB_IP, web.address().port, "allowed_cidrs"]);
    const closes = events.filter((e) => e.kind === "close");
    assert.equal(closes.length, 1);
    assert.ok(closes[0].bytes_down > 0 && closes[0].close_reason);
    assert.deepEqual(events.map((e) => e.seq), [...events.map((e) => e.seq)].sort((a, b) => a - b), "oldest first");
  });

  test("filters: decision, kind, vm_id, since (seq and Date), limit", async () => {
    const all = await c.events.list({ session_id: c.sessionId });
    const seqs = (evs) => evs.map((e) => e.seq);
    assert.deepEqual(new Set((await c.events.list({ session_id: c.sessionId, decision: "deny" })).map((e) => e.decision)), new Set(["deny"]));
    assert.deepEqual(new Set((await c.events.list({ session_id: c.sessionId, decision: "allow" })).map((e) => e.decision)), new Set(["allow"]));
    assert.deepEqual(new Set((await c.events.list({ session_id: c.sessionId, kind: "connect" })).map((e) => e.kind)), new Set(["connect"]));
    assert.deepEqual(seqs(await c.events.list({ vm_id: c.vmId })), seqs(all));
    assert.deepEqual(await c.events.list({ session_id: "ses_nobody" }), []);
    assert.deepEqual(seqs(await c.events.list({ session_id: c.sessionId, limit: 1 })), [all.at(-1).seq]);
    assert.deepEqual(seqs(await c.events.list({ session_id: c.sessionId, since: all[0].seq })), seqs(all.slice(1)));
    assert.deepEqual(seqs(await c.events.list({ session_id: c.sessionId, since: all[0].seq, limit: 1 })), [all[1].seq]);
    assert.deepEqual(seqs(await c.events.list({ session_id: c.sessionId, since: started })), seqs(all));
    assert.deepEqual(await c.events.list({ session_id: c.sessionId, since: new Date(Date.now() + 3600_000) }), []);
  });
});

describe("follow", () => {
  test("buffered records, then live ones; leaving the loop closes the stream", async () => {
    const c = await ownSession();
    assert.equal((await throughProxy(c.proxyUrl, "http://buffered.example.test/")).status, 403);
    await waitFor(() => c.events.list({ session_id: c.sessionId }), (evs) => evs.length > 0);
    const got = [];
    for await (const e of c.events.follow({ session_id: c.sessionId, decision: "deny", idleTimeoutMs: 10_000, maxReconnects: 0 })) {
      got.push(e);
      if (got.length === 1) {
        assert.equal(e.host, "buffered.example.test");
        assert.equal((await throughProxy(c.proxyUrl, "http://live.example.test/")).status, 403);
      } else {
        break;
      }
    }
    assert.deepEqual(got.map((e) => e.host), ["buffered.example.test", "live.example.test"]);
    assert.ok(got[1].seq > got[0].seq);
  });

  test("limit 0: only new records", async () => {
    const c = await ownSession();
    assert.equal((await throughProxy(c.proxyUrl, "http://old.example.test/")).status, 403);
    await waitFor(() => c.events.list({ session_id: c.sessionId }), (evs) => evs.length > 0);
    const it = c.events.follow({ session_id: c.sessionId, kind: "request", limit: 0, idleTimeoutMs: 10_000, maxReconnects: 0 });
    const first = it.next();
    // The stream may open after a request: send more, bounded, until the reader has one.
    let done = false;
    first.then(() => (done = true));
    for (let i = 0; i < 20 && !done; i++) {
      await throughProxy(c.proxyUrl, `http://new-${i}.example.test/`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const r = await first;
    assert.match(r.value.host, /^new-\d+\.example\.test$/);
    await it.return();
  });

  test("a bad filter throws at once, not retried", async () => {
    const c = newClient();
    const err = await c.events.follow({ kind: "everything" }).next().catch((e) => e);
    assert.ok(err instanceof BadRequestError, String(err));
    assert.equal(err.field, "kind");
  });

  test("the signal ends a follow that waits for records", async () => {
    const c = await ownSession();
    const ctrl = new AbortController();
    const it = c.events.follow({ session_id: c.sessionId, signal: ctrl.signal });
    const pending = it.next();
    setTimeout(() => ctrl.abort(), 200);
    await assert.rejects(pending, (err) => err.name === "AbortError");
    assert.deepEqual(await it.next(), { done: true, value: undefined });
  });

  test("rides out a restart of egressd, resuming after the last record", async () => {
    const c = await ownSession();
    const proxyUrl = c.proxyUrl;
    assert.equal((await throughProxy(proxyUrl, "http://before-restart.example.test/")).status, 403);
    const it = c.events.follow({ session_id: c.sessionId, decision: "deny", idleTimeoutMs: 10_000, giveUpAfterMs: 30_000 });
    const first = await next(it);
    assert.equal(first.host, "before-restart.example.test");

    const waiting = next(it, 30_000); // the stream breaks under it
    await server.restart();
    // The session, its token and its policy are in the store: the same proxy URL works.
    assert.equal((await throughProxy(proxyUrl, "http://after-restart.example.test/")).status, 403);
    const second = await waiting;
    assert.equal(second.host, "after-restart.example.test");
    assert.ok(second.seq > first.seq, `seq ${second.seq} after ${first.seq}`);
    // Nothing twice: the next one is new too.
    assert.equal((await throughProxy(proxyUrl, "http://third.example.test/")).status, 403);
    assert.equal((await next(it)).host, "third.example.test");
    await it.return();
  });
});

describe("follow against a stand-in stream", () => {
  // A loopback server speaking SSE as egressd does, to break streams in ways egressd will not.
  let fake;
  let handler;
  before(async () => {
    fake = createServer((req, res) => handler(req, res));
    await new Promise((r) => fake.listen(0, "127.0.0.1", r));
  });
  after(async () => {
    fake.closeAllConnections();
    await new Promise((r) => fake.close(r));
  });
  const client = () => new Client({ baseUrl: `http://127.0.0.1:${fake.address().port}`, apiKey: "k" });
  const record = (seq, host) => `id: ${seq}\r\nevent: decision\r\ndata: ${JSON.stringify({ seq, host, decision: "deny", kind: "request" })}\r\n\r\n`;

  test("reconnects with Last-Event-ID after silence, skips a repeat, ignores comments and other events", async () => {
    const seen = [];
    handler = (req, res) => {
      seen.push(req.headers["last-event-id"]);
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      if (seen.length === 1) {
        res.write(": hello\n\n");
        res.write("event: other\ndata: {}\n\n");
        const two = record(1, "a.test") + record(2, "b.test");
        // Split inside a CRLF: the parser must not see an extra blank line.
        const cut = two.indexOf("\r\n") + 1;
        res.write(two.slice(0, cut));
        setTimeout(() => res.write(two.slice(cut)), 20);
        // ... then silence: the idle timeout reopens the stream.
      } else {
        res.end(record(2, "b.test") + record(3, "c.test")); // 2 again, as a careless server might
      }
    };
    const got = [];
    for await (const e of client().events.follow({ idleTimeoutMs: 300, maxReconnects: 3 })) {
      got.push(e.host);
      if (got.length === 3) break;
    }
    assert.deepEqual(got, ["a.test", "b.test", "c.test"]);
    assert.deepEqual(seen.slice(0, 2), [undefined, "2"]);
  });

  test("a resumed stream sends Last-Event-ID instead of since and limit", async () => {
    const urls = [];
    handler = (req, res) => {
      urls.push({ url: req.url, last: req.headers["last-event-id"] });
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.end(record(urls.length, `h${urls.length}.test`));
    };
    const got = [];
    for await (const e of client().events.follow({ since: 5, limit: 0, session_id: "ses_1", maxReconnects: 2 })) {
      got.push(e.seq);
      if (got.length === 2) break;
    }
    assert.deepEqual(got, [1, 2]);
    const q = urls.map(({ url, last }) => [Object.fromEntries(new URL(url, "http://x").searchParams), last]);
    assert.deepEqual(q, [
      [{ session_id: "ses_1", since: "5", limit: "0", follow: "true" }, undefined],
      [{ session_id: "ses_1", follow: "true" }, "1"],
    ]);
  });

  test("once open, a 503 or 429 on reopening is waited out; a 400 is not", async () => {
    let n = 0;
    const errorAnswer = (res, status, code) => {
      res.writeHead(status, { "Content-Type": "application/json", "Retry-After": "1" });
      res.end(JSON.stringify({ error: { code, message: code } }));
    };
    handler = (req, res) => {
      n++;
      if (n === 2) return errorAnswer(res, 503, "unavailable");
      if (n === 3) return errorAnswer(res, 429, "rate_limited");
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.end(record(n, `h${n}.test`));
    };
    const got = [];
    for await (const e of client().events.follow({ maxReconnects: 5 })) {
      got.push(e.host);
      if (got.length === 2) break;
    }
    assert.deepEqual(got, ["h1.test", "h4.test"]);

    // A 503 before any stream was open is an answer, not a passing state.
    n = 1;
    const first = await client().events.follow({ maxReconnects: 5 }).next().catch((e) => e);
    assert.equal(first.code, "unavailable");
    // A 400 on reopening is thrown at once.
    n = 0;
    handler = (req, res) => {
      n++;
      if (n === 1) {
        res.writeHead(200, { "Content-Type": "text/event-stream" });
        return res.end(record(1, "a.test"));
      }
      errorAnswer(res, 400, "bad_request");
    };
    const it = client().events.follow({ maxReconnects: 5 });
    assert.equal((await it.next()).value.host, "a.test");
    const err = await it.next().catch((e) => e);
    assert.equal(err.code, "bad_request");
    assert.equal(n, 2);
  });

  test("a quiet stream that stayed open is a new loss when it breaks, not an old one", async () => {
    // Each stream stays open 200 ms with nothing to say, then ends: with healthyAfterMs 100
    // each loss starts afresh, so giveUpAfterMs (400) never runs out; the sixth stream has a record.
    let n = 0;
    handler = (req, res) => {
      n++;
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.write(": heartbeat\n\n");
      if (n === 6) return res.end(record(1, "late.test"));
      setTimeout(() => res.end(), 200);
    };
    const it = client().events.follow({ giveUpAfterMs: 400, healthyAfterMs: 100, idleTimeoutMs: 5000 });
    const r = await it.next();
    assert.equal(r.value.host, "late.test");
    assert.equal(n, 6);
    await it.return();
    // Without the healthy rule the same streams are one long loss: given up on.
    n = 0;
    const err = await client().events.follow({ giveUpAfterMs: 400, healthyAfterMs: 60_000, idleTimeoutMs: 5000 }).next().catch((e) => e);
    assert.ok(err instanceof EgressdConnectionError, String(err));
    assert.ok(n < 6);
  });

  test("gives up after maxReconnects, with the last connection error", async () => {
    let opened = 0;
    handler = (req, res) => {
      opened++;
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.end();
    };
    const err = await client().events.follow({ maxReconnects: 2 }).next().catch((e) => e);
    assert.ok(err instanceof EgressdConnectionError, String(err));
    assert.match(err.message, /ended the event stream/);
    assert.equal(opened, 3);
  });

  test("a record that is not JSON is an error, not retried", async () => {
    let n = 0;
    handler = (req, res) => {
      n++;
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.end("id: 1\nevent: decision\ndata: {not json\n\n");
    };
    const err = await client().events.follow({ maxReconnects: 3 }).next().catch((e) => e);
    assert.ok(err instanceof EgressdError && !(err instanceof EgressdConnectionError), String(err));
    assert.match(err.message, /not JSON/);
    assert.equal(n, 1);
  });

  test("an answer that is not an event stream is an error at once", async () => {
    handler = (req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end("{}");
    };
    const err = await client().events.follow().next().catch((e) => e);
    assert.ok(err instanceof EgressdError && !(err instanceof EgressdConnectionError), String(err));
    assert.match(err.message, /not an event stream/);
  });
});
