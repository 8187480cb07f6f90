// What `npm pack` ships, and what the package asks of its users: the tarball's file list is the
// one README.md shows, the package has no runtime dependencies, its exports resolve, and the
// lockfile names no registry (npm ci works from whatever registry the machine is set up for).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SDK_DIR, skipOrFail } from "./harness.mjs";

const pkg = JSON.parse(readFileSync(join(SDK_DIR, "package.json"), "utf8"));

let packedFiles;

/** The paths `npm pack` would put in the tarball; undefined when npm does not run. */
function packed() {
  if (packedFiles === undefined) {
    // --ignore-scripts: prepack would rebuild dist/ under the other test files' feet.
    const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: SDK_DIR, encoding: "utf8" });
    if (r.error) return undefined;
    assert.equal(r.status, 0, r.stderr);
    packedFiles = JSON.parse(r.stdout)[0].files.map((f) => f.path).sort();
  }
  return packedFiles;
}

test("npm pack ships exactly the files README.md lists", (t) => {
  const files = packed();
  if (!files) return skipOrFail(t, "npm does not run");
  const readme = readFileSync(join(SDK_DIR, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## What the package holds"));
  const listed = section.slice(section.indexOf("```text\n") + 8, section.indexOf("\n```", section.indexOf("```text"))).split("\n").sort();
  assert.deepEqual(files, listed);
  assert.ok(files.includes("dist/index.d.ts") && files.includes("LICENSE"));
  assert.ok(!files.some((f) => f.startsWith("src/") || f.startsWith("test/")), "sources or tests in the tarball");
});

test("no runtime dependencies; ESM; exports with types", () => {
  assert.equal(pkg.name, "egressd");
  assert.equal(pkg.type, "module");
  for (const field of ["dependencies", "peerDependencies", "optionalDependencies", "bundleDependencies"]) {
    assert.equal(pkg[field], undefined, `package.json has ${field}`);
  }
  assert.deepEqual(Object.keys(pkg.devDependencies), ["typescript"]);
  assert.equal(pkg.exports["."].types, "./dist/index.d.ts");
  assert.equal(pkg.exports["."].default, "./dist/index.js");
  assert.match(pkg.engines.node, />=18/);
});

test("the built code imports nothing outside the package", (t) => {
  const all = packed();
  if (!all) return skipOrFail(t, "npm does not run");
  const files = all.filter((f) => f.endsWith(".js"));
  assert.ok(files.length > 0);
  for (const f of files) {
    // Without comments: a doc comment may show a user importing "egressd".
    const src = readFileSync(join(SDK_DIR, f), "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    for (const m of src.matchAll(/\b(?:import|export)\b[^;]*?\bfrom\s+["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']/g)) {
      const spec = m[1] ?? m[2];
      assert.ok(spec.startsWith("./"), `${f} imports ${spec}: the package must need nothing but the runtime`);
    }
  }
});

test("the lockfile records no registry address", () => {
  const lock = readFileSync(join(SDK_DIR, "package-lock.json"), "utf8");
  assert.ok(!/"resolved"/.test(lock), "package-lock.json has resolved URLs: keep omit-lockfile-registry-resolved=true in .npmrc");
  assert.ok(!/https?:\/\//.test(lock), "package-lock.json names a URL");
  assert.match(readFileSync(join(SDK_DIR, ".npmrc"), "utf8"), /^omit-lockfile-registry-resolved=true$/m);
});
