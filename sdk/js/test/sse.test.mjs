// The Server-Sent Events parser (internal: dist/sse.js): the EventSource rules the API relies
// on, and the same events whatever the chunks a network hands it.

import assert from "node:assert/strict";
import { test } from "node:test";
import { SSEParser } from "../dist/sse.js";

const parse = (...chunks) => {
  const p = new SSEParser();
  return chunks.flatMap((c) => p.push(c));
};

test("the rules, one case each", () => {
  const cases = [
    ["a record", "id: 7\nevent: decision\ndata: {}\n\n", [{ id: "7", event: "decision", data: "{}" }]],
    ["no event: message", "data: x\n\n", [{ id: undefined, event: "message", data: "x" }]],
    ["data lines joined", "data: a\ndata: b\n\n", [{ id: undefined, event: "message", data: "a\nb" }]],
    ["one space after the colon is dropped, not two", "data:  x\n\n", [{ id: undefined, event: "message", data: " x" }]],
    ["no space", "data:x\n\n", [{ id: undefined, event: "message", data: "x" }]],
    ["comments skipped", ": heartbeat\n\n: dropped 3 records\ndata: y\n\n", [{ id: undefined, event: "message", data: "y" }]],
    ["no data: not dispatched", "id: 1\nevent: decision\n\n", []],
    ["cut off by the end: not dispatched", "id: 1\ndata: {}\n", []],
    ["CR line ends", "id: 2\rdata: z\r\r", [{ id: "2", event: "message", data: "z" }]],
    ["CRLF line ends", "id: 3\r\ndata: z\r\n\r\n", [{ id: "3", event: "message", data: "z" }]],
    ["an id with NUL is ignored", "id: a\0b\ndata: z\n\n", [{ id: undefined, event: "message", data: "z" }]],
    ["unknown fields and retry ignored", "retry: 10\nfoo: bar\ndata: z\n\n", [{ id: undefined, event: "message", data: "z" }]],
    ["a field without a colon", "data\n\n", [{ id: undefined, event: "message", data: "" }]],
    ["fields reset after each event", "id: 1\nevent: e\ndata: a\n\ndata: b\n\n", [{ id: "1", event: "e", data: "a" }, { id: undefined, event: "message", data: "b" }]],
  ];
  for (const [name, input, want] of cases) assert.deepEqual(parse(input), want, name);
});

test("any split into chunks gives the same events (random splits, fixed seed)", () => {
  const stream =
    ": hello\r\n\r\n" +
    Array.from({ length: 20 }, (_, i) => `id: ${i}\r\nevent: decision\r\ndata: {"seq":${i},"host":"h${i}.test"}\r\n\r\n`).join("") +
    "id: 99\rdata: cr\r\r" +
    "data: lf\n\n";
  const want = parse(stream);
  assert.equal(want.length, 22);
  let seed = 12345; // xorshift32: exact in 32-bit integers
  const rand = (n) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  for (let round = 0; round < 500; round++) {
    const chunks = [];
    for (let at = 0; at < stream.length; ) {
      const n = 1 + rand(12);
      chunks.push(stream.slice(at, at + n));
      if (rand(5) === 0) chunks.push(""); // a decoder may hand over nothing
      at += n;
    }
    assert.deepEqual(parse(...chunks), want, `round ${round}: ${JSON.stringify(chunks)}`);
  }
});
