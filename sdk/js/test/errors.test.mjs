// Every API error code becomes its class: provoked from the real egressd where it can be
// (every code but 500 and 503), and the whole table from a loopback stand-in that answers each
// code, so that 500 and 503 (which a healthy egressd never sends on purpose) are covered too.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";
import {
  APIError,
  BadRequestError,
  Client,
  ConflictError,
  ERROR_CLASSES,
  EgressdConnectionError,
  EgressdError,
  ForbiddenError,
  InvalidPolicyError,
  MethodNotAllowedError,
  NoSessionError,
  NoVMError,
  NotFoundError,
  PayloadTooLargeError,
  PolicyNotSetError,
  RateLimitedError,
  ServerError,
  UnauthorizedError,
  UnavailableError,
  UnsupportedMediaTypeError,
  errorFromResponse,
} from "egressd";
import { EgressdServer } from "./harness.mjs";

// The API's codes (docs/api.md, "Errors"), each with its status and class.
const TABLE = [
  ["bad_request", 400, BadRequestError],
  ["invalid_policy", 400, InvalidPolicyError],
  ["unauthorized", 401, UnauthorizedError],
  ["forbidden", 403, ForbiddenError],
  ["not_found", 404, NotFoundError],
  ["policy_not_set", 404, PolicyNotSetError],
  ["method_not_allowed", 405, MethodNotAllowedError],
  ["conflict", 409, ConflictError],
  ["too_large", 413, PayloadTooLargeError],
  ["unsupported_media", 415, UnsupportedMediaTypeError],
  ["rate_limited", 429, RateLimitedError],
  ["internal", 500, ServerError],
  ["unavailable", 503, UnavailableError],
];

let server;
let limited;
const admin = () => new Client({ baseUrl: server.url, apiKey: server.adminKey });

before(async () => {
  [server, limited] = await Promise.all([new EgressdServer().start(), new EgressdServer({ rateLimit: 1 }).start()]);
});
after(async () => {
  await Promise.all([server?.stop(), limited?.stop()]);
});

/** Assert that p rejects with exactly class Cls, and the code and status given; returns the error. */
async function expectError(p, Cls, code, status) {
  let err;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `no error; wanted ${Cls.name}`);
  assert.equal(err.constructor, Cls, `${err.constructor.name} (${err.message}), wanted ${Cls.name}`);
  assert.equal(err.name, Cls.name);
  assert.ok(err instanceof APIError && err instanceof EgressdError && err instanceof Error);
  assert.equal(err.code, code);
  assert.equal(err.status, status);
  assert.ok(err.message.endsWith(`(${status} ${code})`), err.message);
  return err;
}

describe("from the real egressd", () => {
  test("the table covers every class the package exports for a code", () => {
    assert.deepEqual(Object.keys(ERROR_CLASSES).sort(), TABLE.map(([c]) => c).sort());
  });

  test("bad_request, with the field", async () => {
    const c = admin();
    const err = await expectError(c.events.list({ decision: "maybe" }), BadRequestError, "bad_request", 400);
    assert.equal(err.field, "decision");
    assert.ok(err.message.startsWith("decision"), err.message);
    const vm = await c.vms.create();
    const s = await c.sessions.create(vm.vm_id);
    // A field the form does not use is named.
    const e2 = await expectError(c.egress.check({ session_id: s.session_id, url: "https://x.test/", port: 1 }), BadRequestError, "bad_request", 400);
    assert.equal(e2.field, "port");
    await c.vms.delete(vm.vm_id);
  });

  test("invalid_policy names the entry; an unknown field is named too", async () => {
    const c = admin();
    const err = await expectError(c.egress.setSession({ allowed_cidrs: ["198.51.100.0/24", "198.51.100.1/24"] }), InvalidPolicyError, "invalid_policy", 400);
    assert.equal(err.field, "allowed_cidrs[1]");
    assert.match(err.apiMessage, /host bits/);
    assert.ok(err instanceof BadRequestError);
    assert.equal(err.body.error.field, "allowed_cidrs[1]");
    const tcp = await expectError(c.egress.setSession({ allowed_tcp: ["github.com:0"] }), InvalidPolicyError, "invalid_policy", 400);
    assert.equal(tcp.field, "allowed_tcp[0]");
    // A key egressd does not know (a typo, or camelCase) is sent as it is, and refused by name.
    const typo = await expectError(c.egress.setSession({ allowHttps: true }), InvalidPolicyError, "invalid_policy", 400);
    assert.equal(typo.field, "allowHttps");
    await c.endSession({ deleteVm: true });
  });

  test("unauthorized and forbidden", async () => {
    const c = admin();
    await expectError(new Client({ baseUrl: server.url, apiKey: "not-a-key" }).vms.list(), UnauthorizedError, "unauthorized", 401);
    await expectError(new Client({ baseUrl: server.url, apiKey: "" }).vms.list(), UnauthorizedError, "unauthorized", 401);
    const k = await c.apiKeys.create({ tenant: "js-errors" });
    const tenant = new Client({ baseUrl: server.url, apiKey: k.key });
    await expectError(tenant.apiKeys.list(), ForbiddenError, "forbidden", 403);
    await expectError(tenant.nodes.list(), ForbiddenError, "forbidden", 403);
    await c.apiKeys.delete(k.id);
  });

  test("not_found and policy_not_set", async () => {
    const c = admin();
    await expectError(c.vms.get("js-missing"), NotFoundError, "not_found", 404);
    await expectError(c.sessions.get("ses_missing"), NotFoundError, "not_found", 404);
    await expectError(c.secrets.get("missing"), NotFoundError, "not_found", 404);
    const vm = await c.vms.create();
    await expectError(c.egress.getVm({ vm_id: vm.vm_id }), PolicyNotSetError, "policy_not_set", 404);
    const s = await c.sessions.create(vm.vm_id);
    const err = await expectError(c.egress.getSession({ session_id: s.session_id }), PolicyNotSetError, "policy_not_set", 404);
    assert.ok(err instanceof NotFoundError);
    await c.vms.delete(vm.vm_id);
  });

  test("method_not_allowed, conflict, too_large, unsupported_media", async () => {
    const c = admin();
    await expectError(c.request("PUT", "/v1/vms"), MethodNotAllowedError, "method_not_allowed", 405);
    await c.vms.create({ vm_id: "js-dup" });
    const dup = await expectError(c.vms.create({ vm_id: "js-dup" }), ConflictError, "conflict", 409);
    assert.equal(dup.field, "vm_id");
    await c.vms.delete("js-dup");
    const self = (await c.apiKeys.list()).find((k) => k.admin);
    await expectError(c.apiKeys.delete(self.id), ConflictError, "conflict", 409);
    const big = JSON.stringify({ vm_id: "x".repeat(2 << 20) });
    await expectError(c.request("POST", "/v1/vms", { body: big }), PayloadTooLargeError, "too_large", 413);
    await expectError(c.request("POST", "/v1/vms", { body: "{}", contentType: "text/plain" }), UnsupportedMediaTypeError, "unsupported_media", 415);
  });

  test("rate_limited, with retryAfter; served again after it", async () => {
    const c = new Client({ baseUrl: limited.url, apiKey: limited.adminKey });
    let err;
    for (let i = 0; i < 20 && !err; i++) {
      // The burst is 2: far fewer than 20 requests get through.
      await c.vms.list().catch((e) => (err = e));
    }
    assert.ok(err, "20 requests in a row were never rate limited");
    await expectError(Promise.reject(err), RateLimitedError, "rate_limited", 429);
    assert.equal(err.retryAfter, 1);
    await new Promise((r) => setTimeout(r, err.retryAfter * 1000 + 100));
    assert.ok(Array.isArray(await c.vms.list()));
  });

  test("no answer, no session, no VM: not API errors", async () => {
    const c = admin();
    for (const [p, Cls] of [
      [c.egress.getSession(), NoSessionError],
      [c.egress.getVm(), NoVMError],
    ]) {
      const err = await p.catch((e) => e);
      assert.ok(err instanceof Cls && err instanceof EgressdError && !(err instanceof APIError));
      assert.equal(err.status, undefined);
      assert.equal(err.code, undefined);
    }
    const stopped = new EgressdServer();
    await stopped.start();
    const gone = new Client({ baseUrl: stopped.url, apiKey: stopped.adminKey });
    await stopped.stop();
    const err = await gone.vms.list().catch((e) => e);
    assert.ok(err instanceof EgressdConnectionError && !(err instanceof APIError), String(err));
    assert.ok(err.cause, "the network error is kept as cause");
  });
});

describe("from a stand-in that answers each code", () => {
  let fake;
  let answer;
  before(async () => {
    fake = createServer((req, res) => {
      req.resume();
      req.on("end", () => answer(res));
    });
    await new Promise((r) => fake.listen(0, "127.0.0.1", r));
  });
  after(async () => {
    fake.closeAllConnections();
    await new Promise((r) => fake.close(r));
  });
  const url = () => `http://127.0.0.1:${fake.address().port}`;

  test("every code through fetch", async () => {
    const c = new Client({ baseUrl: url(), apiKey: "k" });
    for (const [code, status, Cls] of TABLE) {
      answer = (res) => {
        res.writeHead(status, { "Content-Type": "application/json", ...(status === 429 ? { "Retry-After": "3" } : {}) });
        res.end(JSON.stringify({ error: { code, message: `said ${code}`, field: "f[0]" } }));
      };
      const err = await expectError(c.vms.list(), Cls, code, status);
      assert.equal(err.apiMessage, `said ${code}`);
      assert.equal(err.field, "f[0]");
      assert.equal(err.message, `f[0]: said ${code} (${status} ${code})`);
      if (Cls === RateLimitedError) assert.equal(err.retryAfter, 3);
    }
  });

  test("answers that are not egressd's: by status, the body quoted", async () => {
    const c = new Client({ baseUrl: url(), apiKey: "k" });
    answer = (res) => {
      res.writeHead(502, { "Content-Type": "text/html" });
      res.end("Bad Gateway from the proxy in front\n<html>...");
    };
    let err = await c.vms.list().catch((e) => e);
    assert.equal(err.constructor, ServerError);
    assert.equal(err.status, 502);
    assert.equal(err.apiMessage, "Bad Gateway from the proxy in front");
    answer = (res) => {
      res.writeHead(503, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ status: "unavailable", reason: "store: connection refused" }));
    };
    err = await c.ready().catch((e) => e);
    assert.equal(err.constructor, UnavailableError);
    assert.equal(err.code, "unavailable");
    assert.equal(err.apiMessage, "store: connection refused");
    answer = (res) => {
      res.writeHead(302, { Location: "http://elsewhere.test/" });
      res.end();
    };
    err = await c.vms.list().catch((e) => e);
    assert.ok(err instanceof APIError, String(err));
    assert.match(err.message, /unexpected redirect to http:\/\/elsewhere\.test\//);
    answer = (res) => {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.end("not json");
    };
    err = await c.vms.list().catch((e) => e);
    assert.ok(err instanceof EgressdError && !(err instanceof APIError));
    assert.match(err.message, /is not JSON/);
  });

  test("errorFromResponse: the table, unknown codes, Retry-After", () => {
    for (const [code, status, Cls] of TABLE) {
      assert.equal(errorFromResponse(status, JSON.stringify({ error: { code, message: "m" } })).constructor, Cls);
      // The code wins over the status: a proxy could change the status, not egressd's code.
      assert.equal(errorFromResponse(400, JSON.stringify({ error: { code, message: "m" } })).constructor, Cls);
    }
    assert.equal(errorFromResponse(418, JSON.stringify({ error: { code: "teapot", message: "m" } })).constructor, APIError);
    assert.equal(errorFromResponse(599, "").constructor, ServerError);
    assert.equal(errorFromResponse(404, "").apiMessage, "not found");
    assert.equal(errorFromResponse(429, "", new Headers({ "Retry-After": "soon" })).retryAfter, undefined);
    assert.equal(errorFromResponse(429, "", new Headers({ "Retry-After": "-5" })).retryAfter, 0);
    // A message that names its field already does not name it twice.
    assert.equal(
      errorFromResponse(400, JSON.stringify({ error: { code: "bad_request", message: "tenant must be set", field: "tenant" } })).message,
      "tenant must be set (400 bad_request)",
    );
    // A control character in a body is not quoted.
    assert.equal(errorFromResponse(500, "\u0007bell").apiMessage, "internal server error");
  });
});
