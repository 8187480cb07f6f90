/**
 * The API's JSON objects, as TypeScript types.
 *
 * Answers are handed back as the API sent them: plain objects with snake_case keys, times as
 * RFC 3339 strings. A field that a newer egressd adds is there at run time even though these
 * types do not name it yet.
 */

import type { Grant } from "./grants.js";

/** `"enforce"`, or `"monitor"` to record would-be denials and block nothing. */
export type Mode = "enforce" | "monitor";

/** A layer of the effective policy; `"hard"` is the built-in denials that no policy lifts. */
export type Layer = "session" | "vm" | "default" | "hard";

/** One entry of `http_rules`: the requests allowed to the hosts `domain` matches. */
export interface HTTPRule {
  /** A host name or `*.parent` wildcard. */
  domain: string;
  /** Upper-case HTTP methods; empty or left out means any method. */
  methods?: string[];
  /** Path prefixes starting with `/`; empty or left out means any path. */
  paths?: string[];
}

/**
 * The policy fields of DESIGN §2.1, as a write takes them. Every field is optional: a field left
 * out takes its default (off, empty, `"enforce"`), so `{}` denies everything.
 */
export interface PolicyInput {
  /** Allow the package registries of the preset, on 80 and 443. */
  allow_package_managers?: boolean;
  /** Allow outbound HTTP (TCP 80). */
  allow_http?: boolean;
  /** Allow outbound HTTPS (TCP 443). */
  allow_https?: boolean;
  /** When non-empty, web traffic only to these hosts; `*.example.com` matches every name under it. */
  allowed_domains?: string[];
  /** Ranges allowed on every port and protocol, e.g. `["10.0.0.0/8"]`. */
  allowed_cidrs?: string[];
  /** Hosts never allowed, whatever else allows them. */
  denied_domains?: string[];
  /** TCP endpoints that are not web, as `name:port` (`"github.com:22"`, `"*.example.com:5432"`). */
  allowed_tcp?: string[];
  /** `"enforce"` (the default) or `"monitor"`. */
  mode?: Mode;
  /** Method and path rules per domain; a domain named here is intercepted. */
  http_rules?: HTTPRule[];
}

/** The policy fields as egressd stores and answers them: every field present, normalised. */
export interface PolicyFields {
  allow_package_managers: boolean;
  allow_http: boolean;
  allow_https: boolean;
  allowed_domains: string[];
  allowed_cidrs: string[];
  denied_domains: string[];
  allowed_tcp: string[];
  mode: Mode;
  http_rules: Array<Required<HTTPRule>>;
}

/** A stored policy, as `POST`/`GET /v1/egress/{session,vm}/{id}` answer it. */
export interface Policy extends PolicyFields {
  /** `"session"` or `"vm"`. */
  scope: "session" | "vm";
  /** The session's or VM's ID. */
  id: string;
  /** The store-wide revision of this change (larger is newer). */
  revision: number;
  /** When it was set (RFC 3339). */
  updated_at: string;
  /** Sentences about a policy that was accepted but probably not meant as it is. */
  warnings?: string[];
}

/** How a VM is attached: `"none"` (the explicit proxy only) or `"netns"` (transparent). */
export interface Network {
  mode: "none" | "netns";
  node?: string;
  node_selector?: Record<string, string>;
  /** `"ready"`, `"pending"`, `"failed"`, `"deleting"` or `"node_down"`; absent for mode `"none"`. */
  state?: string;
  error?: string;
  netns?: string;
  path?: string;
  address?: string;
  gateway?: string;
}

/** One sandbox. */
export interface VM {
  vm_id: string;
  network: Network;
  /** Its VM policy, when one is set. */
  egress_policy?: Policy;
  /** Its number of open sessions. */
  sessions: number;
  created_at: string;
}

/** One use of a VM. */
export interface Session {
  session_id: string;
  vm_id: string;
  /**
   * `http://<session_id>:<token>@host:port`, for the sandbox's `HTTP_PROXY`/`HTTPS_PROXY`. Only
   * in the answer that creates the session: keep it.
   */
  proxy_url?: string;
  /**
   * `socks5://<session_id>:<token>@host:port`, when egressd runs a SOCKS5 listener
   * (`--socks-listen`). Only in the answer that creates the session.
   */
  socks_url?: string;
  created_at: string;
}

/** The decision for one resolved address of a check with `resolve: true`. */
export interface AddressResult {
  ip: string;
  decision: "allow" | "deny";
  reason: string;
  message?: string;
  rule: string;
  layer: Layer | "";
  would_deny: boolean;
}

/** The decision the gateway would take. */
export interface CheckResult {
  /** `"allow"` or `"deny"`; in monitor mode `"allow"`, with `would_deny` saying what enforcing would do. */
  decision: "allow" | "deny";
  /** A code of docs/reasons.md. */
  reason: string;
  /** The reason's sentence. */
  message?: string;
  /** The rule that decided. */
  rule: string;
  layer: Layer | "";
  would_deny: boolean;
  /** With `resolve: true`, the decision for each address the name resolved to. */
  addresses?: AddressResult[];
}

/** The check fields, each form naming the others as `never` so that a body mixing forms does not compile. */
interface CheckFields {
  url: string;
  method: string;
  host: string;
  ip: string;
  port: number;
  transport: "tcp" | "udp";
  dns_query: string;
  qtype: string;
}

type CheckForm<Required extends keyof CheckFields, Optional extends keyof CheckFields = never> = {
  [K in Required]: CheckFields[K];
} & { [K in Optional]?: CheckFields[K] } & { [K in Exclude<keyof CheckFields, Required | Optional>]?: never };

/**
 * The body of a check, one of: a URL (and `method`, upper case, `GET` when left out); a host
 * and port; an address (`port`, `transport`); a DNS query (`qtype`).
 */
export type CheckInput =
  | CheckForm<"url", "method">
  | CheckForm<"host" | "port">
  | CheckForm<"ip", "port" | "transport">
  | CheckForm<"dns_query", "qtype">;

/** An effective flag and the layers it comes from. */
export interface EffectiveBool {
  value: boolean;
  from: Layer[];
}

/** The effective mode and the layers it comes from. */
export interface EffectiveMode {
  value: Mode;
  from: Layer[];
}

/** An effective list and the layers it comes from. */
export interface EffectiveList {
  value: string[];
  from: Layer[];
}

/** The effective `allowed_domains`: `hosts` is `"any"`, `"listed"` or `"none"`. */
export interface EffectiveDomains extends EffectiveList {
  hosts: "any" | "listed" | "none";
}

/** One layer that is set, with its whole policy. */
export interface EffectiveLayer {
  layer: Layer;
  revision?: number;
  updated_at?: string;
  policy: PolicyFields;
  /** The layer's active grants; the effective values include them. */
  grants?: Grant[];
}

/** An `http_rules` entry of one layer, with its index in that layer's list. */
export interface EffectiveHTTPRule extends Required<HTTPRule> {
  layer: Layer;
  index: number;
}

/** The `http_rules` of the layers, not merged; `intercepted` lists the domains they name. */
export interface EffectiveHTTPRules {
  intercepted: string[];
  rules: EffectiveHTTPRule[];
  from: Layer[];
}

/** What applies to a session's traffic: its policy AND its VM's, or the default. */
export interface Effective {
  session_id: string;
  vm_id: string;
  layers: EffectiveLayer[];
  mode: EffectiveMode;
  allow_package_managers: EffectiveBool;
  allow_http: EffectiveBool;
  allow_https: EffectiveBool;
  allowed_domains: EffectiveDomains;
  allowed_cidrs: EffectiveList;
  denied_domains: EffectiveList;
  /** Per port, the names every layer's `allowed_tcp` allows. */
  allowed_tcp: EffectiveList;
  http_rules: EffectiveHTTPRules;
  package_managers?: string[];
  /** What the values alone do not say, in words. */
  notes: string[];
}

/** One decision record of the gateway (or, `kind: "close"`, one closed connection). */
export interface Event {
  /** Increases from one record to the next; pass it as `since` to page forward. */
  seq: number;
  time: string;
  kind: "connect" | "request" | "dns" | "close";
  tenant: string;
  vm_id?: string;
  session_id?: string;
  decision: "allow" | "deny";
  would_deny?: boolean;
  /** A code of docs/reasons.md, and its sentence. */
  reason?: string;
  message?: string;
  rule?: string;
  layer?: Layer;
  mode?: Mode;
  transport?: "tcp" | "udp" | "icmp";
  host?: string;
  ip?: string;
  port?: number;
  qtype?: string;
  dial_ms?: number;
  bytes_up?: number;
  bytes_down?: number;
  duration_ms?: number;
  close_reason?: string;
  /** A request inside an intercepted connection. */
  method?: string;
  path?: string;
  status?: number;
  /** The names of the secrets applied (never a value). */
  secrets?: string[];
  /** "fast_path": the kernel forwards the connection after the gateway verified its ClientHello. */
  via?: string;
}

/** An API key; `key`, the secret, is there only in the answer that creates it. */
export interface APIKey {
  id: string;
  tenant: string;
  admin: boolean;
  key?: string;
  created_at: string;
}

/** One egressd process of the fleet. */
export interface Node {
  id: string;
  roles: string[];
  address?: string;
  labels?: Record<string, string>;
  sandbox_cidr?: string;
  last_heartbeat: string;
  revision: number;
  vm_count: number;
  state: "up" | "down";
}

/** A secret as egressd answers it: never with its value. */
export interface Secret {
  name: string;
  domains: string[];
  /** What the sandbox uses where it would use the value. */
  placeholder: string;
  created_at: string;
  updated_at: string;
}

/** `GET /v1/status`: which egressd answered and what the key's tenant (or, admin, everyone) holds. */
export interface Status {
  version: string;
  commit?: string;
  modified?: boolean;
  go_version: string;
  node_id: string;
  /** Admin keys only. */
  roles?: string[];
  /** Admin keys only. */
  store?: string;
  scope: "tenant" | "all";
  tenant: string;
  vms: number;
  sessions: number;
  open_connections?: number;
}

/**
 * One thing a suggestion adds: a flag name (`"allow_https"`), an `allowed_domains` entry or
 * an `allowed_tcp` entry, with how many recorded decisions it covers. `names` lists, for a
 * wildcard that collapses siblings (`"*.example.com"`), the names denied under it.
 */
export interface SuggestedEntry {
  entry: string;
  covers: number;
  names?: string[];
}

/** A group of denials that no entry lifts, with why and what a person could do instead. */
export interface NotAllowable {
  /** A code of docs/reasons.md. */
  reason: string;
  layer?: Layer;
  kind: "connect" | "request" | "dns";
  host?: string;
  ip?: string;
  port?: number;
  transport?: "tcp" | "udp" | "icmp";
  rule?: string;
  covers: number;
  explanation: string;
}

/**
 * The answer of `GET /v1/egress/{session,vm}/{id}/suggestion` (DESIGN §2.9): the smallest
 * change to that layer's policy that would have allowed the denials it caused. Set `policy`
 * (`applySuggestion`) when `changed` is true.
 */
export interface Suggestion {
  scope: "session" | "vm";
  id: string;
  /** A session's VM (absent for a VM's suggestion). */
  vm_id?: string;
  /** Whether the layer has a policy, and its revision (0 when none). */
  policy_set: boolean;
  revision: number;
  /** Denials and would-be denials read; `truncated` when there were more. */
  decisions: number;
  truncated: boolean;
  flags: SuggestedEntry[];
  allowed_domains: SuggestedEntry[];
  allowed_tcp: SuggestedEntry[];
  not_allowable: NotAllowable[];
  /** Denials that another layer caused: its own suggestion fixes them. */
  other_layers: { layer: Layer; covers: number }[];
  /** Denials that the policy as it is now allows. */
  already_allowed: number;
  notes: string[];
  changed: boolean;
  /** The merged policy; null when nothing can be suggested for this layer. */
  policy: PolicyFields | null;
}
