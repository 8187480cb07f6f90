/**
 * Grants: `client.grants` (DESIGN §2.8). A grant adds entries to one layer, a session's or a
 * VM's, until it expires: `domains` to its `allowed_domains`, `tcp` to its `allowed_tcp`,
 * `cidrs` to its `allowed_cidrs`. Web ports follow the layer's flags (a grant never turns one
 * on), and a grant never loosens another layer: grant on the layer that denied. At expiry
 * egressd cuts what only the grant allowed, as when a policy is tightened.
 */

import { pathFor, type RequestOptions, type Transport } from "./http.js";

/** The longest a grant may live, in seconds (24 hours); the shortest is 1. */
export const MAX_GRANT_TTL_SECONDS = 86400;

/** A grant as egressd answers it. */
export interface Grant {
  /** `gr_` and 20 random characters. */
  id: string;
  scope: "session" | "vm";
  /** The session_id or vm_id. */
  scope_id: string;
  domains: string[];
  tcp: string[];
  cidrs: string[];
  note: string;
  created_at: string;
  expires_at: string;
  /** In the answer to `create` only: when the grant adds less than it seems to. */
  warnings?: string[];
}

/** Which layer a grant call works on: exactly one of the two. */
export type GrantTarget = { sessionId: string; vmId?: undefined } | { vmId: string; sessionId?: undefined };

/** What `grants.create` takes: the target, at least one entry, and `ttlSeconds` (1 to 86400). */
export type CreateGrantParams = GrantTarget &
  RequestOptions & {
    domains?: string[];
    tcp?: string[];
    cidrs?: string[];
    ttlSeconds: number;
    note?: string;
  };

function base(t: GrantTarget): string[] {
  const hasSession = t.sessionId !== undefined;
  if (hasSession === (t.vmId !== undefined)) throw new TypeError("give exactly one of sessionId and vmId");
  return hasSession ? ["/v1/egress/session/", t.sessionId as string, "/grants"] : ["/v1/egress/vm/", t.vmId as string, "/grants"];
}

function entries(name: string, v: unknown): string[] {
  // A lone string would otherwise go out as one entry per character on some paths.
  if (typeof v === "string") return [v];
  if (!Array.isArray(v)) throw new TypeError(`${name} must be a list of strings`);
  return v;
}

/** Grants on sessions and VMs. Reached as `client.grants`. */
export class Grants {
  constructor(private readonly http: Transport) {}

  /**
   * Add a grant (`POST .../grants`), answered once enforced. Bad input throws
   * `BadRequestError` naming the field (`ttl_seconds`, `tcp[0]`...); another tenant's
   * object `NotFoundError`.
   */
  async create(params: CreateGrantParams): Promise<Grant> {
    const path = pathFor(...base(params));
    if (!Number.isInteger(params.ttlSeconds)) throw new TypeError("ttlSeconds must be a whole number of seconds");
    const body: Record<string, unknown> = { ttl_seconds: params.ttlSeconds };
    for (const name of ["domains", "tcp", "cidrs"] as const) {
      if (params[name] !== undefined) body[name] = entries(name, params[name]);
    }
    if (params.note) body["note"] = params.note;
    return this.http.request<Grant>("POST", path, { json: body, signal: params.signal });
  }

  /** The active grants of a session or VM, oldest first. */
  async list(target: GrantTarget & RequestOptions): Promise<Grant[]> {
    const data = await this.http.request<{ grants?: Grant[] }>("GET", pathFor(...base(target)), { signal: target.signal });
    return data?.grants ?? [];
  }

  /** End a grant now (`DELETE .../grants/{grant_id}`): what only it allowed is cut. */
  async revoke(grantId: string, target: GrantTarget & RequestOptions): Promise<void> {
    const [p0, id, p2] = base(target);
    await this.http.request("DELETE", pathFor(p0 as string, id as string, `${p2}/`, grantId), { signal: target.signal });
  }
}
