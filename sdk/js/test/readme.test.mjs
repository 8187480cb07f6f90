// Every ```js block of sdk/js/README.md runs as written against a real egressd, and every ```ts
// block compiles.
//
// Each js block runs alone in a fresh `node`, as a user pasting it into a .mjs file would, from
// a temporary directory whose node_modules/egressd is this package (so `import ... from
// "egressd"` resolves as it would after `npm install`), with EGRESSD_URL and EGRESSD_API_KEY
// set to the test server's.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { EgressdServer, SDK_DIR, skipOrFail } from "./harness.mjs";

const README = join(SDK_DIR, "README.md");
let server;
let dir;

before(async () => {
  server = await new EgressdServer().start();
  dir = mkdtempSync(join(tmpdir(), "egressd-js-readme-"));
  mkdirSync(join(dir, "node_modules"));
  symlinkSync(SDK_DIR, join(dir, "node_modules", "egressd"), "dir");
});
after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The fenced blocks of a language in a Markdown text, each with the heading it sits under. */
export function blocks(text, lang) {
  const out = [];
  let heading = "(top)";
  let lines;
  for (const line of text.split("\n")) {
    if (lines) {
      if (line.trim() === "```") {
        out.push({ heading, code: lines.join("\n") + "\n" });
        lines = undefined;
      } else {
        lines.push(line);
      }
    } else if (new RegExp("^```" + lang + "\\s*$").test(line)) {
      lines = [];
    } else if (/^```/.test(line)) {
      lines = null; // another language's block: skip to its end
    } else if (line.startsWith("#")) {
      heading = line.replace(/^#+/, "").trim();
    }
    if (lines === null) lines = undefined;
  }
  assert.equal(lines, undefined, `README.md: the block under ${heading} is not closed`);
  return out;
}

const text = () => readFileSync(README, "utf8");

test("the hosted product's three patterns are there", () => {
  const headings = blocks(text(), "js").map((b) => b.heading);
  for (const name of ["AI agent sandbox", "Fully isolated", "Internal network only"]) {
    assert.ok(headings.includes(name), `no js example under "${name}"`);
  }
});

/** Run a .mjs file with node; resolves to its exit status and output. */
function runNode(file, env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, out });
    });
  });
}

test("every js block runs", async () => {
  const all = blocks(text(), "js");
  assert.ok(all.length >= 8, `only ${all.length} js blocks`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("EGRESSD_")));
  Object.assign(env, { EGRESSD_URL: server.url, EGRESSD_API_KEY: server.adminKey });
  // Each block makes its own VM and session (and the one secret has its own name), so they
  // run a few at a time; a failure names its block.
  const failures = [];
  let next = 0;
  const worker = async () => {
    while (next < all.length) {
      const i = next++;
      const { heading, code } = all[i];
      const file = join(dir, `block-${i}.mjs`);
      writeFileSync(file, code);
      const r = await runNode(file, env);
      if (r.status !== 0) failures.push(`the README block under "${heading}" failed:\n${code}\n--- output:\n${r.out}`);
      if (process.env.EGRESSD_SDK_SHOW_README_OUTPUT) console.error(`--- ${heading}:\n${r.out}`);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  assert.deepEqual(failures, []);
});

test("every ts block compiles", (t) => {
  const tsc = join(SDK_DIR, "node_modules", "typescript", "bin", "tsc");
  if (!existsSync(tsc)) return skipOrFail(t, "typescript is not installed: run `npm ci` in sdk/js");
  const all = blocks(text(), "ts");
  assert.ok(all.length >= 1);
  const files = all.map(({ code }, i) => {
    const file = join(dir, `block-${i}.mts`);
    writeFileSync(file, code + "\nexport {};\n");
    return file;
  });
  const config = {
    compilerOptions: { strict: true, noEmit: true, target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", lib: ["ES2022", "DOM"], types: [], skipLibCheck: true },
    files,
  };
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(config));
  const r = spawnSync(process.execPath, [tsc, "-p", join(dir, "tsconfig.json"), "--pretty", "false"], { cwd: dir, encoding: "utf8" });
  assert.equal(r.status, 0, `tsc on the README's ts blocks:\n${r.stdout}${r.stderr}`);
});
