// The test command (`npm test`): builds egressd once for every test file, then runs them with
// Node's own test runner. The built SDK (dist/, from `npm run build`) is what the tests import.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT, SDK_DIR, TEST_DIR } from "./harness.mjs";

if (!existsSync(join(SDK_DIR, "dist", "index.js"))) {
  console.error("sdk/js/dist is missing: run `npm ci && npm run build` in sdk/js first");
  process.exit(1);
}

const dir = mkdtempSync(join(tmpdir(), "egressd-js-bin-"));
let code = 1;
try {
  const bin = join(dir, "egressd");
  const build = spawnSync("go", ["build", "-o", bin, "./cmd/egressd"], { cwd: REPO_ROOT, stdio: "inherit" });
  if (build.error || build.status !== 0) {
    throw new Error(`go build ./cmd/egressd failed${build.error ? ": " + build.error.message : ""}`);
  }
  const only = process.argv.slice(2);
  const files = only.length
    ? only
    : readdirSync(TEST_DIR)
        .filter((f) => f.endsWith(".test.mjs"))
        .sort()
        .map((f) => join(TEST_DIR, f));
  const [major, minor] = process.versions.node.split(".").map(Number);
  // Each file runs its own egressd: several files at once keep the run short.
  const concurrency = major > 20 || (major === 20 && minor >= 10) ? ["--test-concurrency=4"] : [];
  const run = spawnSync(process.execPath, ["--test", ...concurrency, ...files], {
    cwd: SDK_DIR,
    stdio: "inherit",
    env: { ...process.env, EGRESSD_TEST_BIN: bin },
  });
  code = run.status ?? 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(code);
