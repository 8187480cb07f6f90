/**
 * VMs, sessions, secrets, API keys and nodes: `client.vms`, `client.sessions`,
 * `client.secrets`, `client.apiKeys`, `client.nodes`.
 */

import { pathFor, type RequestOptions, type Transport } from "./http.js";
import type { APIKey, Network, Node, PolicyInput, Secret, Session, VM } from "./types.js";

/** What `vms.create` takes; every field is optional. */
export interface CreateVMParams extends RequestOptions {
  /** 1 to 63 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit; egressd picks `vm_<hex>` when left out. */
  vm_id?: string;
  /** A VM policy to set at once; an invalid one creates nothing (`InvalidPolicyError` naming `egress_policy.<field>`). */
  egress_policy?: PolicyInput;
  /** `"none"` (the default: the explicit proxy only), `"netns"`, or `{mode, node?, node_selector?}`. */
  network?: "none" | "netns" | Pick<Network, "mode" | "node" | "node_selector">;
}

/** Sandboxes (`/v1/vms`). Reached as `client.vms`. */
export class VMs {
  constructor(private readonly http: Transport) {}

  /**
   * Create a VM (`POST /v1/vms`). A taken `vm_id` throws `ConflictError`. A netns VM is
   * answered once its node made its network, or after 10 s with `network.state` `"pending"`.
   */
  async create(params: CreateVMParams = {}): Promise<VM> {
    const { signal, network, ...rest } = params;
    const body: Record<string, unknown> = { ...rest };
    if (network !== undefined) body["network"] = typeof network === "string" ? { mode: network } : network;
    return this.http.request<VM>("POST", "/v1/vms", { json: body, signal });
  }

  /** Every VM of this key's tenant, oldest first, each with its number of open sessions. */
  async list(opts: RequestOptions = {}): Promise<VM[]> {
    const data = await this.http.request<{ vms?: VM[] }>("GET", "/v1/vms", opts);
    return data?.vms ?? [];
  }

  /** One VM, with its `egress_policy` when one is set; `NotFoundError` when there is none. */
  async get(vmId: string, opts: RequestOptions = {}): Promise<VM> {
    return this.http.request<VM>("GET", pathFor("/v1/vms/", vmId), opts);
  }

  /**
   * Delete a VM: its sessions end and its and their policies go. Resolves to `undefined` once
   * it is gone, or to the VM (`network.state` `"deleting"`) while its node still removes it.
   */
  async delete(vmId: string, opts: RequestOptions = {}): Promise<VM | undefined> {
    return this.http.request<VM | undefined>("DELETE", pathFor("/v1/vms/", vmId), opts);
  }
}

/** Sessions (`/v1/sessions`). Reached as `client.sessions`. */
export class Sessions {
  constructor(private readonly http: Transport) {}

  /**
   * Start a session on a VM. The answer's `proxy_url` (and `socks_url`, when egressd runs a
   * SOCKS5 listener) is shown only now: keep it.
   */
  async create(vmId: string, opts: RequestOptions = {}): Promise<Session> {
    return this.http.request<Session>("POST", "/v1/sessions", { json: { vm_id: vmId }, signal: opts.signal });
  }

  /** The open sessions of one VM, or of the whole tenant when `vm_id` is left out. */
  async list(params: { vm_id?: string } & RequestOptions = {}): Promise<Session[]> {
    const data = await this.http.request<{ sessions?: Session[] }>("GET", "/v1/sessions", {
      query: { vm_id: params.vm_id },
      signal: params.signal,
    });
    return data?.sessions ?? [];
  }

  /** One session (without `proxy_url`). */
  async get(sessionId: string, opts: RequestOptions = {}): Promise<Session> {
    return this.http.request<Session>("GET", pathFor("/v1/sessions/", sessionId), opts);
  }

  /** End a session; its policy goes with it. */
  async delete(sessionId: string, opts: RequestOptions = {}): Promise<void> {
    await this.http.request("DELETE", pathFor("/v1/sessions/", sessionId), opts);
  }
}

function domainList(domains: string[] | string): string[] {
  // A lone string is one domain, not a list of characters.
  return typeof domains === "string" ? [domains] : [...domains];
}

/**
 * The tenant's secrets (`/v1/secrets`, DESIGN §2.7). Reached as `client.secrets`. A value goes
 * in and never comes out: the sandbox gets the `placeholder`, and the gateway puts the value in
 * its place on intercepted requests to the secret's domains.
 */
export class Secrets {
  constructor(private readonly http: Transport) {}

  /** Store a secret and return it with its placeholder; a name in use throws `ConflictError`. */
  async create(params: { name: string; value: string; domains: string[] } & RequestOptions): Promise<Secret> {
    const { signal, name, value, domains } = params;
    return this.http.request<Secret>("POST", "/v1/secrets", {
      json: { name, value, domains: domainList(domains) },
      signal,
    });
  }

  /** Every secret of the tenant, by name, without values. */
  async list(opts: RequestOptions = {}): Promise<Secret[]> {
    const data = await this.http.request<{ secrets?: Secret[] }>("GET", "/v1/secrets", opts);
    return data?.secrets ?? [];
  }

  /** One secret, without its value; `NotFoundError` when there is none. */
  async get(name: string, opts: RequestOptions = {}): Promise<Secret> {
    return this.http.request<Secret>("GET", pathFor("/v1/secrets/", name), opts);
  }

  /**
   * A new value (`PUT /v1/secrets/{name}`), and with `domains` new domains too. The placeholder
   * stays, so sandboxes need no change.
   */
  async rotate(name: string, params: { value: string; domains?: string[] } & RequestOptions): Promise<Secret> {
    const body: Record<string, unknown> = { value: params.value };
    if (params.domains !== undefined) body["domains"] = domainList(params.domains);
    return this.http.request<Secret>("PUT", pathFor("/v1/secrets/", name), { json: body, signal: params.signal });
  }

  /** Replace a secret's domains and keep its value and placeholder. */
  async setDomains(name: string, domains: string[], opts: RequestOptions = {}): Promise<Secret> {
    return this.http.request<Secret>("PUT", pathFor("/v1/secrets/", name), {
      json: { domains: domainList(domains) },
      signal: opts.signal,
    });
  }

  /** Delete a secret: a request that still carries its placeholder is refused from then on. */
  async delete(name: string, opts: RequestOptions = {}): Promise<void> {
    await this.http.request("DELETE", pathFor("/v1/secrets/", name), opts);
  }
}

/** API keys (`/v1/api-keys`), admin keys only: a tenant key gets `ForbiddenError`. Reached as `client.apiKeys`. */
export class APIKeys {
  constructor(private readonly http: Transport) {}

  /** Create a key for a tenant; the answer's `key` is the secret, shown this once. */
  async create(params: { tenant: string; admin?: boolean } & RequestOptions): Promise<APIKey> {
    const body: Record<string, unknown> = { tenant: params.tenant };
    if (params.admin) body["admin"] = true;
    return this.http.request<APIKey>("POST", "/v1/api-keys", { json: body, signal: params.signal });
  }

  /** Every key, without secrets. */
  async list(opts: RequestOptions = {}): Promise<APIKey[]> {
    const data = await this.http.request<{ keys?: APIKey[] }>("GET", "/v1/api-keys", opts);
    return data?.keys ?? [];
  }

  /** Revoke a key by its `id`; a key cannot delete itself (`ConflictError`). */
  async delete(keyId: string, opts: RequestOptions = {}): Promise<void> {
    await this.http.request("DELETE", pathFor("/v1/api-keys/", keyId), opts);
  }
}

/** The fleet's egressd processes (`/v1/nodes`), admin keys only. Reached as `client.nodes`. */
export class Nodes {
  constructor(private readonly http: Transport) {}

  /** Every node that has registered, up and down, by ID. */
  async list(opts: RequestOptions = {}): Promise<Node[]> {
    const data = await this.http.request<{ nodes?: Node[] }>("GET", "/v1/nodes", opts);
    return data?.nodes ?? [];
  }
}
