/**
 * Egress policies and checks: `client.egress`, shaped like the hosted product's
 * (`await client.egress.setSession({allow_https: true, allowed_domains: [...]})`, keys in
 * snake_case as on the wire).
 */
import { NotFoundError } from "./errors.js";
import { pathFor } from "./http.js";
/**
 * The body of a policy write: the fields given, sent as they are (egressd gives the others
 * their defaults, and names any field it does not know, a typo included, in its 400).
 */
function policyBody(params, drop) {
    const body = {};
    for (const [k, v] of Object.entries(params)) {
        if (k === drop || k === "signal" || v === undefined)
            continue;
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
    target;
    constructor(target) {
        this.target = target;
    }
    get http() {
        return this.target.http;
    }
    /**
     * Set a session's policy (`POST /v1/egress/session/{id}`) and return it as stored. Setting
     * replaces the whole policy: a field left out takes its default, so `setSession()` denies
     * everything. An invalid policy throws `InvalidPolicyError` whose `field` names the entry.
     */
    async setSession(params = {}) {
        const body = policyBody(params, "session_id");
        const sid = await this.target.sessionForWrite(params.session_id, params);
        return this.http.request("POST", pathFor("/v1/egress/session/", sid), { json: body, signal: params.signal });
    }
    /** The policy set on a session; `PolicyNotSetError` when it has none. */
    async getSession(params = {}) {
        const sid = this.target.sessionForRead(params.session_id, "getSession");
        return this.http.request("GET", pathFor("/v1/egress/session/", sid), { signal: params.signal });
    }
    /** Remove a session's policy; `PolicyNotSetError` when none is set. */
    async clearSession(params = {}) {
        const sid = this.target.sessionForRead(params.session_id, "clearSession");
        await this.http.request("DELETE", pathFor("/v1/egress/session/", sid), { signal: params.signal });
    }
    /**
     * Set a VM's policy (`POST /v1/egress/vm/{id}`): it holds for every session of the VM, now and
     * later; where a session has its own policy too, a connection must pass both.
     */
    async setVm(params = {}) {
        const body = policyBody(params, "vm_id");
        const vid = await this.target.vmForWrite(params.vm_id, params);
        return this.vmRequest("POST", vid, body, params);
    }
    /** The policy set on a VM; `PolicyNotSetError` when none is set. */
    async getVm(params = {}) {
        const vid = await this.target.vmForRead(params.vm_id, "getVm", params);
        return this.vmRequest("GET", vid, undefined, params);
    }
    /** Remove a VM's policy. */
    async clearVm(params = {}) {
        const vid = await this.target.vmForRead(params.vm_id, "clearVm", params);
        await this.vmRequest("DELETE", vid, undefined, params);
    }
    /** A request on a VM's policy; a VM that does not exist is told how to create. */
    async vmRequest(method, vmId, body, opts) {
        try {
            return await this.http.request(method, pathFor("/v1/egress/vm/", vmId), { json: body, signal: opts.signal });
        }
        catch (err) {
            if (!(err instanceof NotFoundError) || err.code !== "not_found")
                throw err; // policy_not_set: the VM is there
            throw new NotFoundError(`${err.apiMessage}; create it first with client.vms.create({vm_id: ${JSON.stringify(vmId)}}) ` +
                `(or egressctl vm create --id ${vmId}), or leave vm_id out to use the client's current VM`, { code: err.code, field: err.field, status: err.status, body: err.body, cause: err });
        }
    }
    /**
     * The policy that applies to a session's traffic (`GET .../effective`): its own AND its VM's,
     * or the operator's default when neither is set, with the layer each part comes from.
     */
    async effective(params = {}) {
        const sid = this.target.sessionForRead(params.session_id, "effective");
        return this.http.request("GET", pathFor("/v1/egress/session/", sid, "/effective"), { signal: params.signal });
    }
    /**
     * The decision the gateway would take for a session, without any traffic. Give one of:
     * `url` (and `method`), `host` and `port`, `ip` (`port`, `transport`), or `dns_query`
     * (`qtype`). A deny is a result (`decision: "deny"`), not an error.
     */
    async check(params) {
        const body = {};
        for (const [k, v] of Object.entries(params)) {
            if (k === "session_id" || k === "signal" || v === undefined)
                continue;
            if (k === "resolve" && v === false)
                continue;
            body[k] = v;
        }
        const sid = this.target.sessionForRead(params.session_id, "check");
        return this.http.request("POST", pathFor("/v1/egress/session/", sid, "/check"), {
            json: body,
            signal: params.signal,
        });
    }
    /** The package-manager preset in force: registry hosts by manager (`"pip"`, `"npm"`, ...). */
    async packageManagers(opts = {}) {
        const data = await this.http.request("GET", "/v1/egress/package-managers", opts);
        return data?.managers ?? {};
    }
    /**
     * What to add to a session's policy so that the denials it caused would have been allowed
     * (`GET /v1/egress/session/{id}/suggestion`), from the recorded decisions since `since`.
     * Monitor mode plus a suggestion is how a sandbox's allowlist is learnt.
     */
    async sessionSuggestion(params = {}) {
        const sid = this.target.sessionForRead(params.session_id, "sessionSuggestion");
        return this.http.request("GET", pathFor("/v1/egress/session/", sid, "/suggestion"), {
            query: { since: sinceParam(params.since) },
            signal: params.signal,
        });
    }
    /** The same for a VM's policy (`GET /v1/egress/vm/{id}/suggestion`), from all its sessions' decisions. */
    async vmSuggestion(params = {}) {
        const vid = await this.target.vmForRead(params.vm_id, "vmSuggestion", params);
        return this.http.request("GET", pathFor("/v1/egress/vm/", vid, "/suggestion"), {
            query: { since: sinceParam(params.since) },
            signal: params.signal,
        });
    }
    /**
     * Set a suggestion's merged policy on its session or VM, and return it as stored; `null`
     * (and nothing is set) when the suggestion changes nothing.
     */
    async applySuggestion(suggestion, opts = {}) {
        if (!suggestion.changed || !suggestion.policy)
            return null;
        const body = { ...suggestion.policy };
        if (suggestion.scope === "vm")
            return this.vmRequest("POST", suggestion.id, body, opts);
        return this.http.request("POST", pathFor("/v1/egress/session/", suggestion.id), { json: body, signal: opts.signal });
    }
}
function sinceParam(since) {
    if (since === undefined || since === null)
        return undefined;
    if (since instanceof Date)
        return since.toISOString();
    return String(since);
}
