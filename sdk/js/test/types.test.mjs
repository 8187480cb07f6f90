// The shipped type declarations: `tsc --noEmit` on an example that uses every call must pass,
// and a file of deliberate type errors must fail, on exactly its marked lines with their codes.
// Both import "egressd" through the package's exports, as a user's code does.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SDK_DIR, skipOrFail } from "./harness.mjs";

const TSC = join(SDK_DIR, "node_modules", "typescript", "bin", "tsc");
const TYPES = join(SDK_DIR, "test", "types");

function tsc(t, project) {
  if (!existsSync(TSC)) {
    skipOrFail(t, "typescript is not installed: run `npm ci` in sdk/js");
    return undefined;
  }
  if (!existsSync(join(SDK_DIR, "dist", "index.d.ts"))) {
    skipOrFail(t, "sdk/js/dist has no declarations: run `npm run build` in sdk/js");
    return undefined;
  }
  const r = spawnSync(process.execPath, [TSC, "-p", join(TYPES, project), "--pretty", "false"], { cwd: SDK_DIR, encoding: "utf8" });
  if (r.error) throw r.error;
  return r;
}

test("an example that uses every call compiles", (t) => {
  const r = tsc(t, "tsconfig.json");
  if (!r) return;
  assert.equal(r.status, 0, `tsc failed on every-call.ts:\n${r.stdout}${r.stderr}`);
});

test("the example does use every call of the client", () => {
  // A method added to the client without a use in every-call.ts would go unchecked.
  const src = readFileSync(join(TYPES, "every-call.ts"), "utf8");
  const calls = [
    "egress.setSession", "egress.getSession", "egress.clearSession", "egress.setVm", "egress.getVm",
    "egress.clearVm", "egress.effective", "egress.check", "egress.packageManagers", "egress.sessionSuggestion",
    "egress.vmSuggestion", "egress.applySuggestion", "events.list",
    "events.follow", "vms.create", "vms.list", "vms.get", "vms.delete", "sessions.create",
    "sessions.list", "sessions.get", "sessions.delete", "secrets.create", "secrets.list",
    "secrets.get", "secrets.rotate", "secrets.setDomains", "secrets.delete", "apiKeys.create",
    "apiKeys.list", "apiKeys.delete", "nodes.list", "client.status", "client.caPem", "client.health",
    "client.ready", "client.request", "client.ensureSession", "client.ensureVm", "client.newSession",
    "client.endSession",
  ];
  for (const call of calls) assert.ok(src.includes(call + "("), `every-call.ts does not call ${call}`);
  // ... and the list is every public method there is.
  const dts = (name) => readFileSync(join(SDK_DIR, "dist", name), "utf8");
  const methods = (text, cls) => {
    const body = text.slice(text.indexOf(`class ${cls} `));
    const end = body.indexOf("\n}");
    return [...body.slice(0, end).matchAll(/^ {4}(?!private )([a-zA-Z]+)\(/gm)].map((m) => m[1]).filter((m) => m !== "constructor");
  };
  const have = new Set(calls);
  const owners = [
    ["client.d.ts", "Client", "client"],
    ["egress.d.ts", "Egress", "egress"],
    ["events.d.ts", "Events", "events"],
    ["resources.d.ts", "VMs", "vms"],
    ["resources.d.ts", "Sessions", "sessions"],
    ["resources.d.ts", "Secrets", "secrets"],
    ["resources.d.ts", "APIKeys", "apiKeys"],
    ["resources.d.ts", "Nodes", "nodes"],
  ];
  for (const [file, cls, prefix] of owners) {
    const found = methods(dts(file), cls);
    assert.ok(found.length > 0, `no methods found for ${cls}`);
    for (const m of found) assert.ok(have.has(`${prefix}.${m}`), `${cls}.${m} is not in the every-call list`);
  }
});

test("deliberate type errors fail to compile, each where it is marked", (t) => {
  const r = tsc(t, "tsconfig.errors.json");
  if (!r) return;
  assert.notEqual(r.status, 0, "type-errors.ts compiled: the declarations let every deliberate error through");
  const want = new Map();
  readFileSync(join(TYPES, "type-errors.ts"), "utf8")
    .split("\n")
    .forEach((line, i) => {
      const m = /\/\/ error (TS\d+)/.exec(line);
      if (m) want.set(i + 1, m[1]);
    });
  assert.ok(want.size >= 10);
  const got = new Map();
  for (const m of r.stdout.matchAll(/type-errors\.ts\((\d+),\d+\): error (TS\d+)/g)) got.set(Number(m[1]), m[2]);
  assert.deepEqual(Object.fromEntries(got), Object.fromEntries(want), `tsc said:\n${r.stdout}`);
});
