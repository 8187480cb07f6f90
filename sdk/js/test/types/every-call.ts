// Uses every call of the package, typed as a user would, with an AbortSignal on each. It is
// only compiled (`tsc --noEmit`, test/types.test.mjs), never run: the calls run in the other
// tests. It imports "egressd" as a user's code does: through the package's exports and its
// shipped declarations.

import {
  APIError,
  Client,
  DEFAULT_BASE_URL,
  EgressdConnectionError,
  EgressdError,
  InstaVM,
  InvalidPolicyError,
  RateLimitedError,
  errorFromResponse,
  type APIKey,
  type CheckResult,
  type Effective,
  type Event,
  type Node,
  type Policy,
  type PolicyInput,
  type Secret,
  type Session,
  type Status,
  type Suggestion,
  type VM,
} from "egressd";

const signal: AbortSignal = new AbortController().signal;
const client = new Client({
  apiKey: "key",
  baseUrl: DEFAULT_BASE_URL,
  sessionId: undefined,
  vmId: "vm-1",
  timeoutMs: 10_000,
  authHeader: "x-api-key",
  fetch: (input, init) => fetch(input, init),
});
const sid: string | undefined = client.sessionId;
const vid: string | undefined = client.vmId;
const proxy: string | undefined = client.proxyUrl;
const socks: string | undefined = client.socksUrl;
const base: string = client.baseUrl;
const hosted: Client = new InstaVM({ apiKey: "key" });

async function everyCall(): Promise<void> {
  const policy: PolicyInput = {
    allow_package_managers: true,
    allow_http: false,
    allow_https: true,
    allowed_domains: ["api.openai.com", "*.githubusercontent.com"],
    allowed_cidrs: ["198.51.100.0/24"],
    denied_domains: ["bad.example.com"],
    allowed_tcp: ["github.com:22"],
    mode: "monitor",
    http_rules: [{ domain: "api.openai.com", methods: ["GET"], paths: ["/v1/"] }, { domain: "x.example.com" }],
  };
  const set: Policy = await client.egress.setSession({ ...policy, signal });
  const set2: Policy = await client.egress.setSession({ session_id: "ses_1", allow_https: true, signal });
  const got: Policy = await client.egress.getSession({ signal });
  const warnings: string[] | undefined = got.warnings;
  const tcp: string[] = got.allowed_tcp;
  await client.egress.clearSession({ session_id: "ses_1", signal });
  const vmPolicy: Policy = await client.egress.setVm({ vm_id: "vm-1", allowed_cidrs: ["198.51.100.0/24"], signal });
  const gotVm: Policy = await client.egress.getVm({ vm_id: "vm-1", signal });
  await client.egress.clearVm({ signal });
  const eff: Effective = await client.egress.effective({ session_id: "ses_1", signal });
  const effTcp: string[] = eff.allowed_tcp.value;
  const hosts: "any" | "listed" | "none" = eff.allowed_domains.hosts;
  const checks: CheckResult[] = [
    await client.egress.check({ url: "https://pypi.org/", signal }),
    await client.egress.check({ url: "https://api.example.com/v1/", method: "POST", resolve: true, signal }),
    await client.egress.check({ host: "github.com", port: 22, session_id: "ses_1", signal }),
    await client.egress.check({ ip: "198.51.100.7", port: 5432, transport: "tcp", signal }),
    await client.egress.check({ ip: "198.51.100.7", signal }),
    await client.egress.check({ dns_query: "pypi.org", qtype: "AAAA", signal }),
  ];
  const decision: "allow" | "deny" = checks[0]!.decision;
  const managers: Record<string, string[]> = await client.egress.packageManagers({ signal });
  const sug: Suggestion = await client.egress.sessionSuggestion({ session_id: "ses_1", since: 42, signal });
  const vmSug: Suggestion = await client.egress.vmSuggestion({ vm_id: "vm-1", since: new Date(), signal });
  const applied: Policy | null = await client.egress.applySuggestion(sug, { signal });
  const covers: number = sug.allowed_domains[0]?.covers ?? vmSug.not_allowable[0]?.covers ?? 0;

  const events: Event[] = await client.events.list({
    vm_id: "vm-1",
    session_id: "ses_1",
    decision: "deny",
    kind: "request",
    since: new Date(),
    limit: 10,
    signal,
  });
  await client.events.list({ since: 12345 });
  for await (const e of client.events.follow({ session_id: "ses_1", limit: 0, idleTimeoutMs: 1000, giveUpAfterMs: 5000, maxReconnects: 3, healthyAfterMs: 10_000, signal })) {
    const seq: number = e.seq;
    const host: string | undefined = e.host;
    break;
  }

  const vm: VM = await client.vms.create({ vm_id: "vm-2", egress_policy: { allow_https: true }, network: "none", signal });
  await client.vms.create({ network: { mode: "netns", node_selector: { zone: "eu-1" } } });
  await client.vms.create();
  const vms: VM[] = await client.vms.list({ signal });
  const one: VM = await client.vms.get("vm-2", { signal });
  const deleted: VM | undefined = await client.vms.delete("vm-2", { signal });

  const session: Session = await client.sessions.create("vm-1", { signal });
  const socksUrl: string | undefined = session.socks_url;
  const sessions: Session[] = await client.sessions.list({ vm_id: "vm-1", signal });
  await client.sessions.list();
  const s1: Session = await client.sessions.get("ses_1", { signal });
  await client.sessions.delete("ses_1", { signal });

  const secret: Secret = await client.secrets.create({ name: "tok", value: "v", domains: ["api.example.com"], signal });
  const secrets: Secret[] = await client.secrets.list({ signal });
  const s2: Secret = await client.secrets.get("tok", { signal });
  const r: Secret = await client.secrets.rotate("tok", { value: "v2", domains: ["*.example.com"], signal });
  const d: Secret = await client.secrets.setDomains("tok", ["api.example.org"], { signal });
  await client.secrets.delete("tok", { signal });

  const key: APIKey = await client.apiKeys.create({ tenant: "acme", admin: false, signal });
  const keys: APIKey[] = await client.apiKeys.list({ signal });
  await client.apiKeys.delete(key.id, { signal });
  const nodes: Node[] = await client.nodes.list({ signal });

  const status: Status = await client.status({ signal });
  const pem: string = await client.caPem({ signal });
  const health: { status: string } = await client.health({ signal });
  const ready: { status: string } = await client.ready({ signal });
  const raw = await client.request<{ vms: VM[] }>("GET", "/v1/vms", { query: { limit: 1, follow: false }, headers: { "X-Test": "1" }, signal });
  const rawVms: VM[] = raw.vms;
  await client.request("POST", "/v1/vms", { json: {}, signal });
  await client.request("POST", "/v1/vms", { body: "{}", contentType: "application/json" });

  const cur: string = await client.ensureSession({ signal });
  const curVm: string = await client.ensureVm({ signal });
  const fresh: Session = await client.newSession({ signal });
  await client.endSession({ deleteVm: true, signal });

  try {
    await client.egress.setSession({});
  } catch (err) {
    if (err instanceof InvalidPolicyError) {
      const field: string | undefined = err.field;
      const code: string | undefined = err.code;
      const status: number | undefined = err.status;
      const msg: string = err.apiMessage;
    } else if (err instanceof RateLimitedError) {
      const wait: number | undefined = err.retryAfter;
    } else if (err instanceof EgressdConnectionError || err instanceof APIError || err instanceof EgressdError) {
      throw err;
    }
  }
  const mapped: APIError = errorFromResponse(404, '{"error":{"code":"not_found","message":"x"}}', new Headers());
}

export { everyCall, sid, vid, proxy, socks, base, hosted };
