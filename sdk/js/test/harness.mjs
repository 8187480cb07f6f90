// Runs the real egressd binary for the SDK's tests, as sdk/python/tests/egressd_harness.py does.
//
// The binary is $EGRESSD_TEST_BIN when set (test/run.mjs builds it once for every test file),
// else built here with `go build ./cmd/egressd` from the repository root. A server starts on
// free loopback ports with a throwaway data directory, is waited for on /healthz, and its
// <data-dir>/admin.key is read. Only 127.0.0.1 is used. Under CI=true a missing tool fails the
// test instead of skipping it.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const TEST_DIR = dirname(fileURLToPath(import.meta.url));
export const SDK_DIR = resolve(TEST_DIR, "..");
export const REPO_ROOT = resolve(SDK_DIR, "..", "..");
export const IN_CI = ["1", "true", "yes"].includes((process.env.CI ?? "").toLowerCase());

/** Skip the test with reason, or fail it under CI. */
export function skipOrFail(t, reason) {
  if (IN_CI) throw new Error(`${reason} (CI=true: failing instead of skipping)`);
  t.skip(reason);
}


let built;

/** The egressd binary: $EGRESSD_TEST_BIN, or ./cmd/egressd built once per process. */
export function egressdBinary() {
  if (process.env.EGRESSD_TEST_BIN) return process.env.EGRESSD_TEST_BIN;
  if (built) return built;
  const dir = mkdtempSync(join(tmpdir(), "egressd-js-bin-"));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, "egressd");
  const r = spawnSync("go", ["build", "-o", out, "./cmd/egressd"], { cwd: REPO_ROOT, encoding: "utf8" });
  if (r.error) throw new Error(`go build ./cmd/egressd: ${r.error.message} (the Go toolchain builds egressd for these tests)`);
  if (r.status !== 0) throw new Error(`go build ./cmd/egressd failed:\n${r.stdout}${r.stderr}`);
  built = out;
  return out;
}

/** A loopback TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function cleanEnv() {
  // EGRESSD_* variables of the developer's shell would change flags; proxies must not apply.
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("EGRESSD_") || ["http_proxy", "https_proxy", "all_proxy"].includes(k.toLowerCase())) continue;
    env[k] = v;
  }
  return env;
}

/** One running egressd: `url`, `proxyAddr`, `adminKey`, `dataDir`. */
export class EgressdServer {
  constructor({ args = [], rateLimit = 0 } = {}) {
    this.tmp = mkdtempSync(join(tmpdir(), "egressd-js-test-"));
    this.dataDir = join(this.tmp, "data");
    this.extra = args;
    this.rateLimit = rateLimit;
    this.proc = undefined;
    this.log = "";
    this.adminKey = "";
  }

  get url() {
    return `http://${this.apiAddr}`;
  }

  args() {
    return [
      "--api-listen", this.apiAddr,
      "--proxy-listen", this.proxyAddr,
      "--data-dir", this.dataDir,
      "--api-rate-limit", String(this.rateLimit),
      ...this.extra,
    ];
  }

  /**
   * Start egressd on new free ports and wait (15 s at most) for /healthz. A port taken between
   * freePort and egressd's bind is retried on new ports, five times at most.
   */
  async start() {
    for (let attempt = 0; attempt < 5; attempt++) {
      this.apiAddr = `127.0.0.1:${await freePort()}`;
      this.proxyAddr = `127.0.0.1:${await freePort()}`;
      if (await this.startOnce()) return this;
    }
    throw new Error(`egressd could not bind free ports in 5 attempts:\n${this.log}`);
  }

  /** Stop egressd and start it again on the same ports and data directory. */
  async restart() {
    await this.kill();
    for (let attempt = 0; attempt < 50; attempt++) {
      if (await this.startOnce()) return this;
      await sleep(100); // the old process's ports may linger a moment
    }
    throw new Error(`egressd did not start again on its ports:\n${this.log}`);
  }

  /** One start; false when a port was taken. */
  async startOnce() {
    this.log = "";
    const proc = spawn(egressdBinary(), this.args(), { cwd: this.tmp, env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    let exited = false;
    proc.on("exit", () => (exited = true));
    proc.stdout.on("data", (d) => (this.log += d));
    proc.stderr.on("data", (d) => (this.log += d));
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (exited) {
        this.proc = undefined;
        if (this.log.includes("address already in use")) return false;
        throw new Error(`egressd exited with ${proc.exitCode} at start:\n${this.log}`);
      }
      try {
        const r = await fetch(this.url + "/healthz", { signal: AbortSignal.timeout(2000) });
        if (r.status === 200) {
          this.adminKey = readFileSync(join(this.dataDir, "admin.key"), "utf8").trim();
          return true;
        }
      } catch {
        // not listening yet
      }
      await sleep(20);
    }
    await this.kill();
    throw new Error(`egressd did not answer /healthz in 15 s:\n${this.log}`);
  }

  /** Stop the process (SIGTERM, SIGKILL after 10 s); keep the data directory. */
  async kill() {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await gone;
    clearTimeout(timer);
  }

  /** Stop egressd and remove its temporary directory. */
  async stop() {
    await this.kill();
    if (existsSync(this.tmp)) rmSync(this.tmp, { recursive: true, force: true });
  }
}

/**
 * GET url through a session's proxy URL, as a sandbox's HTTP client would; resolves to the
 * status and headers. Only loopback: the proxy is egressd's.
 */
export async function throughProxy(proxyUrl, url) {
  const { request } = await import("node:http");
  const p = new URL(proxyUrl);
  const auth = Buffer.from(`${decodeURIComponent(p.username)}:${decodeURIComponent(p.password)}`).toString("base64");
  return new Promise((res, rej) => {
    const req = request(
      { host: p.hostname, port: p.port, method: "GET", path: url, headers: { Host: new URL(url).host, "Proxy-Authorization": `Basic ${auth}` }, timeout: 10_000 },
      (resp) => {
        resp.resume();
        resp.on("end", () => res({ status: resp.statusCode, headers: resp.headers }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", rej);
    req.end();
  });
}

/** Poll fn until ok says yes, 5 s at most (records are written as traffic is decided). */
export async function waitFor(fn, ok, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > deadline) return v;
    await sleep(50);
  }
}
