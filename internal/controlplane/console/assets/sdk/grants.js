/**
 * Grants: `client.grants` (DESIGN §2.8). A grant adds entries to one layer, a session's or a
 * VM's, until it expires: `domains` to its `allowed_domains`, `tcp` to its `allowed_tcp`,
 * `cidrs` to its `allowed_cidrs`. Web ports follow the layer's flags (a grant never turns one
 * on), and a grant never loosens another layer: grant on the layer that denied. At expiry
 * egressd cuts what only the grant allowed, as when a policy is tightened.
 */
import { pathFor } from "./http.js";
/** The longest a grant may live, in seconds (24 hours); the shortest is 1. */
export const MAX_GRANT_TTL_SECONDS = 86400;
function base(t) {
    const hasSession = t.sessionId !== undefined;
    if (hasSession === (t.vmId !== undefined))
        throw new TypeError("give exactly one of sessionId and vmId");
    return hasSession ? ["/v1/egress/session/", t.sessionId, "/grants"] : ["/v1/egress/vm/", t.vmId, "/grants"];
}
function entries(name, v) {
    // A lone string would otherwise go out as one entry per character on some paths.
    if (typeof v === "string")
        return [v];
    if (!Array.isArray(v))
        throw new TypeError(`${name} must be a list of strings`);
    return v;
}
/** Grants on sessions and VMs. Reached as `client.grants`. */
export class Grants {
    http;
    constructor(http) {
        this.http = http;
    }
    /**
     * Add a grant (`POST .../grants`), answered once enforced. Bad input throws
     * `BadRequestError` naming the field (`ttl_seconds`, `tcp[0]`...); another tenant's
     * object `NotFoundError`.
     */
    async create(params) {
        const path = pathFor(...base(params));
        if (!Number.isInteger(params.ttlSeconds))
            throw new TypeError("ttlSeconds must be a whole number of seconds");
        const body = { ttl_seconds: params.ttlSeconds };
        for (const name of ["domains", "tcp", "cidrs"]) {
            if (params[name] !== undefined)
                body[name] = entries(name, params[name]);
        }
        if (params.note)
            body["note"] = params.note;
        return this.http.request("POST", path, { json: body, signal: params.signal });
    }
    /** The active grants of a session or VM, oldest first. */
    async list(target) {
        const data = await this.http.request("GET", pathFor(...base(target)), { signal: target.signal });
        return data?.grants ?? [];
    }
    /** End a grant now (`DELETE .../grants/{grant_id}`): what only it allowed is cut. */
    async revoke(grantId, target) {
        const [p0, id, p2] = base(target);
        await this.http.request("DELETE", pathFor(p0, id, `${p2}/`, grantId), { signal: target.signal });
    }
}
