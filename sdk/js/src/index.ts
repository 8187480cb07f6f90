/**
 * egressd: the JavaScript/TypeScript client of egressd, an egress firewall for code sandboxes.
 *
 * ```js
 * import { Client } from "egressd";
 * const client = new Client(); // EGRESSD_URL and EGRESSD_API_KEY in Node
 * await client.egress.setSession({ allow_https: true, allowed_domains: ["api.github.com"] });
 * ```
 *
 * ESM, no runtime dependencies, Node 18+ and browsers (`fetch`).
 */

export { Client, DEFAULT_BASE_URL, type ClientOptions } from "./client.js";
/** The hosted product's name of the client: `import { InstaVM } from "egressd"` lets code written for it run with one import changed. */
export { Client as InstaVM } from "./client.js";
export {
  Egress,
  type CheckParams,
  type SessionParams,
  type SetSessionParams,
  type SetVMParams,
  type SuggestionSince,
  type VMParams,
} from "./egress.js";
export { Events, type EventFilters, type FollowOptions } from "./events.js";
export { APIKeys, Nodes, Secrets, Sessions, VMs, type CreateVMParams } from "./resources.js";
export { Grants, MAX_GRANT_TTL_SECONDS, type CreateGrantParams, type Grant, type GrantTarget } from "./grants.js";
export type { AuthHeader, FetchLike, QueryValue, RequestOptions } from "./http.js";
export * from "./errors.js";
export type * from "./types.js";
