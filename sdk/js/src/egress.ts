/**
 * Egress policies and checks: `client.egress`, shaped like the hosted product's
 * (`await client.egress.setSession({allow_https: true, allowed_domains: [...]})`, keys in
 * snake_case as on the wire).
 */

import { NotFoundError } from "./errors.js";
import { pathFor, type RequestOptions, type Transport } from "./http.js";
import type { CheckInput, CheckResult, Effective, Policy, PolicyInput, Suggestion } from "./types.js";

/** What the client gives the egress calls: its transport and its current session and VM. */
export interface CurrentTarget {
  readonly http: Transport;
  /** For a write: the given session, or the current one, created if needed. */
  sessionForWrite(sessionId: string | undefined, opts: RequestOptions): Promise<string>;
  /** For a read: the given session, or the current one; throws NoSessionError when there is none. */
  sessionForRead(sessionId: string | undefined, call: string): string;
  /** For a write: the given VM, or the current one, created if needed. */
  vmForWrite(vmId: string | undefined, opts: RequestOptions): Promise<string>;
  /** For a read: the given VM, the current one or the current session's; throws NoVMError when none. */
  vmForRead(vmId: string | undefined, call: string, opts: RequestOptions): Promise<string>;
}

/** `setSession`'s parameters: the policy fields, the session, and a signal. */
export type SetSessionParams = PolicyInput & { session_id?: string } & RequestOptions;
/** `setVm`'s parameters: the policy fields, the VM, and a signal. */
export type SetVMParams = PolicyInput & { vm_id?: string } & RequestOptions;
/** A session-scoped read's parameters. */
export type SessionParams = { session_id?: string } & RequestOptions;
/** A VM-scoped read's parameters. */
export type VMParams = { vm_id?: string } & RequestOptions;
/** `check`'s parameters: one form of {@link CheckInput}, and `resolve` to look the name up as the gateway would. */
export type CheckParams = CheckInput & { resolve?: boolean; session_id?: string } & RequestOptions;
/** A suggestion's start point: a time (decisions at or after it) or a record's `seq` (after it). */
export type SuggestionSince = { since?: Date | number | string };

/**
 * The body of a policy write: the fields given, sent as they are (egressd gives the others
 * their defaults, and names any field it does not know, a typo included, in its 400).
 */
function policyBody(params: object, drop: string): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    if (k === drop || k === "signal" || v === undefined) continue;
    body[k] = v;
  }
  return body;
}

/**
 * Egress policies of sessions and VMs, and checks. Reached as `client.egress`.
 *
 * A call without `session_id` works on the client's current session: `setSession` creates a
 * VM and a session first when the client has none, a read throws `NoSessionError`. A call
 * without `vm_id` works on the client's current VM: `setVm` creates one when there is none,
 * `getVm` and `clearVm` throw `NoVMError`.
 */
export class Egress {
  constructor(private readonly target: CurrentTarget) {}

  private get http(): Transport {
    return this.target.http;
  }

  /**
   * Set a session's policy (`POST /v1/egress/session/{id}`) and return it as stored. Setting
   * replaces the whole policy: a field left out takes its default, so `setSession()` denies
   * everything. An invalid policy throws `InvalidPolicyError` whose `field` names the entry.
   */
  async setSession(params: SetSessionParams = {}): Promise<Policy> {
    const body = policyBody(params, "session_id");
    const sid = await this.target.sessionForWrite(params.session_id, params);
    return this.http.request<Policy>("POST", pathFor("/v1/egress/session/", sid), { json: body, signal: params.signal });
  }

  /** The policy set on a session; `PolicyNotSetError` when it has none. */
  async getSession(params: SessionParams = {}): Promise<Policy> {
    const sid = this.target.sessionForRead(params.session_id, "getSession");
    return this.http.request<Policy>("GET", pathFor("/v1/egress/session/", sid), { signal: params.signal });
  }

  /** Remove a session's policy; `PolicyNotSetError` when none is set. */
  async clearSession(params: SessionParams = {}): Promise<void> {
    const sid = this.target.sessionForRead(params.session_id, "clearSession");
    await this.http.request("DELETE", pathFor("/v1/egress/session/", sid), { signal: params.signal });
  }

  /**
   * Set a VM's policy (`POST /v1/egress/vm/{id}`): it holds for every session of the VM, now and
   * later; where a session has its own policy too, a connection must pass both.
   */
  async setVm(params: SetVMParams = {}): Promise<Policy> {
    const body = policyBody(params, "vm_id");
    const vid = await this.target.vmForWrite(params.vm_id, params);
    return this.vmRequest<Policy>("POST", vid, body, params);
  }

  /** The policy set on a VM; `PolicyNotSetError` when none is set. */
  async getVm(params: VMParams = {}): Promise<Policy> {
    const vid = await this.target.vmForRead(params.vm_id, "getVm", params);
    return this.vmRequest<Policy>("GET", vid, undefined, params);
  }

  /** Remove a VM's policy. */
  async clearVm(params: VMParams = {}): Promise<void> {
    const vid = await this.target.vmForRead(params.vm_id, "clearVm", params);
    await this.vmRequest("DELETE", vid, undefined, params);
  }

  /** A request on a VM's policy; a VM that does not exist is told how to create. */
  private async vmRequest<T>(method: string, vmId: string, body: unknown, opts: RequestOptions): Promise<T> {
    try {
      return await this.http.request<T>(method, pathFor("/v1/egress/vm/", vmId), { json: body, signal: opts.signal });
    } catch (err) {
      if (!(err instanceof NotFoundError) || err.code !== "not_found") throw err; // policy_not_set: the VM is there
      throw new NotFoundError(
        `${err.apiMessage}; create it first with client.vms.create({vm_id: ${JSON.stringify(vmId)}}) ` +
          `(or egressctl vm create --id ${vmId}), or leave vm_id out to use the client's current VM`,
        { code: err.code, field: err.field, status: err.status, body: err.body, cause: err },
      );
    }
  }

  /**
   * The policy that applies to a session's traffic (`GET .../effective`): its own AND its VM's,
   * or the operator's default when neither is set, with the layer each part comes from.
   */
  async effective(params: SessionParams = {}): Promise<Effective> {
    const sid = this.target.sessionForRead(params.session_id, "effective");
    return this.http.request<Effective>("GET", pathFor("/v1/egress/session/", sid, "/effective"), { signal: params.signal });
  }

  /**
   * The decision the gateway would take for a session, without any traffic. Give one of:
   * `url` (and `method`), `host` and `port`, `ip` (`port`, `transport`), or `dns_query`
   * (`qtype`). A deny is a result (`decision: "deny"`), not an error.
   */
  async check(params: CheckParams): Promise<CheckResult> {
    const body: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(params)) {
      if (k === "session_id" || k === "signal" || v === undefined) continue;
      if (k === "resolve" && v === false) continue;
      body[k] = v;
    }
    const sid = this.target.sessionForRead(params.session_id, "check");
    return this.http.request<CheckResult>("POST", pathFor("/v1/egress/session/", sid, "/check"), {
      json: body,
      signal: params.signal,
    });
  }

  /** The package-manager preset in force: registry hosts by manager (`"pip"`, `"npm"`, ...). */
  async packageManagers(opts: RequestOptions = {}): Promise<Record<string, string[]>> {
    const data = await this.http.request<{ managers?: Record<string, string[]> }>("GET", "/v1/egress/package-managers", opts);
    return data?.managers ?? {};
  }

  /**
   * What to add to a session's policy so that the denials it caused would have been allowed
   * (`GET /v1/egress/session/{id}/suggestion`), from the recorded decisions since `since`.
   * Monitor mode plus a suggestion is how a sandbox's allowlist is learnt.
   */
  async sessionSuggestion(params: SessionParams & SuggestionSince = {}): Promise<Suggestion> {
    const sid = this.target.sessionForRead(params.session_id, "sessionSuggestion");
    return this.http.request<Suggestion>("GET", pathFor("/v1/egress/session/", sid, "/suggestion"), {
      query: { since: sinceParam(params.since) },
      signal: params.signal,
    });
  }

  /** The same for a VM's policy (`GET /v1/egress/vm/{id}/suggestion`), from all its sessions' decisions. */
  async vmSuggestion(params: VMParams & SuggestionSince = {}): Promise<Suggestion> {
    const vid = await this.target.vmForRead(params.vm_id, "vmSuggestion", params);
    return this.http.request<Suggestion>("GET", pathFor("/v1/egress/vm/", vid, "/suggestion"), {
      query: { since: sinceParam(params.since) },
      signal: params.signal,
    });
  }

  /**
   * Set a suggestion's merged policy on its session or VM, and return it as stored; `null`
   * (and nothing is set) when the suggestion changes nothing.
   */
  async applySuggestion(suggestion: Suggestion, opts: RequestOptions = {}): Promise<Policy | null> {
    if (!suggestion.changed || !suggestion.policy) return null;
    const body = { ...suggestion.policy };
    if (suggestion.scope === "vm") return this.vmRequest<Policy>("POST", suggestion.id, body, opts);
    return this.http.request<Policy>("POST", pathFor("/v1/egress/session/", suggestion.id), { json: body, signal: opts.signal });
  }
}

function sinceParam(since: SuggestionSince["since"]): string | undefined {
  if (since === undefined || since === null) return undefined;
  if (since instanceof Date) return since.toISOString();
  return String(since);
}
