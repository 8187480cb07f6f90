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
export { Client, DEFAULT_BASE_URL } from "./client.js";
/** The hosted product's name of the client: `import { InstaVM } from "egressd"` lets code written for it run with one import changed. */
export { Client as InstaVM } from "./client.js";
export { Egress, } from "./egress.js";
export { Events } from "./events.js";
export { APIKeys, Nodes, Secrets, Sessions, VMs } from "./resources.js";
export { Grants, MAX_GRANT_TTL_SECONDS } from "./grants.js";
export * from "./errors.js";
