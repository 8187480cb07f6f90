/**
 * VMs, sessions, secrets, API keys and nodes: `client.vms`, `client.sessions`,
 * `client.secrets`, `client.apiKeys`, `client.nodes`.
 */
import { pathFor } from "./http.js";
/** Sandboxes (`/v1/vms`). Reached as `client.vms`. */
export class VMs {
    http;
    constructor(http) {
        this.http = http;
    }
    /**
     * Create a VM (`POST /v1/vms`). A taken `vm_id` throws `ConflictError`. A netns VM is
     * answered once its node made its network, or after 10 s with `network.state` `"pending"`.
     */
    async create(params = {}) {
        const { signal, network, ...rest } = params;
        const body = { ...rest };
        if (network !== undefined)
            body["network"] = typeof network === "string" ? { mode: network } : network;
        return this.http.request("POST", "/v1/vms", { json: body, signal });
    }
    /** Every VM of this key's tenant, oldest first, each with its number of open sessions. */
    async list(opts = {}) {
        const data = await this.http.request("GET", "/v1/vms", opts);
        return data?.vms ?? [];
    }
    /** One VM, with its `egress_policy` when one is set; `NotFoundError` when there is none. */
    async get(vmId, opts = {}) {
        return this.http.request("GET", pathFor("/v1/vms/", vmId), opts);
    }
    /**
     * Delete a VM: its sessions end and its and their policies go. Resolves to `undefined` once
     * it is gone, or to the VM (`network.state` `"deleting"`) while its node still removes it.
     */
    async delete(vmId, opts = {}) {
        return this.http.request("DELETE", pathFor("/v1/vms/", vmId), opts);
    }
}
/** Sessions (`/v1/sessions`). Reached as `client.sessions`. */
export class Sessions {
    http;
    constructor(http) {
        this.http = http;
    }
    /**
     * Start a session on a VM. The answer's `proxy_url` (and `socks_url`, when egressd runs a
     * SOCKS5 listener) is shown only now: keep it.
     */
    async create(vmId, opts = {}) {
        return this.http.request("POST", "/v1/sessions", { json: { vm_id: vmId }, signal: opts.signal });
    }
    /** The open sessions of one VM, or of the whole tenant when `vm_id` is left out. */
    async list(params = {}) {
        const data = await this.http.request("GET", "/v1/sessions", {
            query: { vm_id: params.vm_id },
            signal: params.signal,
        });
        return data?.sessions ?? [];
    }
    /** One session (without `proxy_url`). */
    async get(sessionId, opts = {}) {
        return this.http.request("GET", pathFor("/v1/sessions/", sessionId), opts);
    }
    /** End a session; its policy goes with it. */
    async delete(sessionId, opts = {}) {
        await this.http.request("DELETE", pathFor("/v1/sessions/", sessionId), opts);
    }
}
function domainList(domains) {
    // A lone string is one domain, not a list of characters.
    return typeof domains === "string" ? [domains] : [...domains];
}
/**
 * The tenant's secrets (`/v1/secrets`, DESIGN §2.7). Reached as `client.secrets`. A value goes
 * in and never comes out: the sandbox gets the `placeholder`, and the gateway puts the value in
 * its place on intercepted requests to the secret's domains.
 */
export class Secrets {
    http;
    constructor(http) {
        this.http = http;
    }
    /** Store a secret and return it with its placeholder; a name in use throws `ConflictError`. */
    async create(params) {
        const { signal, name, value, domains } = params;
        return this.http.request("POST", "/v1/secrets", {
            json: { name, value, domains: domainList(domains) },
            signal,
        });
    }
    /** Every secret of the tenant, by name, without values. */
    async list(opts = {}) {
        const data = await this.http.request("GET", "/v1/secrets", opts);
        return data?.secrets ?? [];
    }
    /** One secret, without its value; `NotFoundError` when there is none. */
    async get(name, opts = {}) {
        return this.http.request("GET", pathFor("/v1/secrets/", name), opts);
    }
    /**
     * A new value (`PUT /v1/secrets/{name}`), and with `domains` new domains too. The placeholder
     * stays, so sandboxes need no change.
     */
    async rotate(name, params) {
        const body = { value: params.value };
        if (params.domains !== undefined)
            body["domains"] = domainList(params.domains);
        return this.http.request("PUT", pathFor("/v1/secrets/", name), { json: body, signal: params.signal });
    }
    /** Replace a secret's domains and keep its value and placeholder. */
    async setDomains(name, domains, opts = {}) {
        return this.http.request("PUT", pathFor("/v1/secrets/", name), {
            json: { domains: domainList(domains) },
            signal: opts.signal,
        });
    }
    /** Delete a secret: a request that still carries its placeholder is refused from then on. */
    async delete(name, opts = {}) {
        await this.http.request("DELETE", pathFor("/v1/secrets/", name), opts);
    }
}
/** API keys (`/v1/api-keys`), admin keys only: a tenant key gets `ForbiddenError`. Reached as `client.apiKeys`. */
export class APIKeys {
    http;
    constructor(http) {
        this.http = http;
    }
    /** Create a key for a tenant; the answer's `key` is the secret, shown this once. */
    async create(params) {
        const body = { tenant: params.tenant };
        if (params.admin)
            body["admin"] = true;
        return this.http.request("POST", "/v1/api-keys", { json: body, signal: params.signal });
    }
    /** Every key, without secrets. */
    async list(opts = {}) {
        const data = await this.http.request("GET", "/v1/api-keys", opts);
        return data?.keys ?? [];
    }
    /** Revoke a key by its `id`; a key cannot delete itself (`ConflictError`). */
    async delete(keyId, opts = {}) {
        await this.http.request("DELETE", pathFor("/v1/api-keys/", keyId), opts);
    }
}
/** The fleet's egressd processes (`/v1/nodes`), admin keys only. Reached as `client.nodes`. */
export class Nodes {
    http;
    constructor(http) {
        this.http = http;
    }
    /** Every node that has registered, up and down, by ID. */
    async list(opts = {}) {
        const data = await this.http.request("GET", "/v1/nodes", opts);
        return data?.nodes ?? [];
    }
}
