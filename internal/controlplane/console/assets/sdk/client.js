/**
 * The client: `new Client({apiKey, baseUrl, sessionId?, vmId?})`, with a current session.
 */
import { Grants } from "./grants.js";
import { Egress } from "./egress.js";
import { NoSessionError, NotFoundError, NoVMError } from "./errors.js";
import { Events } from "./events.js";
import { Transport } from "./http.js";
import { APIKeys, Nodes, Secrets, Sessions, VMs } from "./resources.js";
/** Where egressd's API listens by default. */
export const DEFAULT_BASE_URL = "http://127.0.0.1:8470";
/** The environment, in Node; nothing in a browser (which has no `process`). */
function env(name) {
    const proc = globalThis.process;
    return proc?.env?.[name] || undefined;
}
function isNode() {
    const proc = globalThis.process;
    return typeof proc?.versions?.node === "string";
}
/**
 * A client of one egressd API, shaped like the hosted product's.
 *
 * **The current session.** The first session-scoped *write* made without a `session_id`
 * (`egress.setSession`) creates a VM (unless the client has a `vmId`) and a session on it, and
 * every later call uses them: {@link sessionId}, {@link vmId}, {@link proxyUrl} (and
 * {@link socksUrl}). A *read* without a session (`getSession`, `effective`, `check`,
 * `clearSession`) creates nothing: it throws `NoSessionError`. VM-scoped calls without a
 * `vm_id` use the current VM: `setVm` creates one when there is none, `getVm` and `clearVm`
 * throw `NoVMError`. Calls made at once share one creation.
 */
export class Client {
    /** Egress policies and checks. */
    egress;
    /** Decision records: `list` and `follow`. */
    events;
    /** VMs: `create`, `list`, `get`, `delete`. */
    vms;
    /** Sessions: `create`, `list`, `get`, `delete`. */
    sessions;
    /** Secrets: `create`, `list`, `get`, `rotate`, `setDomains`, `delete`. */
    secrets;
    /** API keys (admin keys only): `create`, `list`, `delete`. */
    apiKeys;
    /** The fleet's nodes (admin keys only): `list`. */
    nodes;
    /** Grants on sessions and VMs: `create`, `list`, `revoke`. */
    grants;
    http;
    _sessionId;
    _vmId;
    _proxyUrl;
    _socksUrl;
    creatingVm;
    creatingSession;
    constructor(options = {}) {
        this.http = new Transport({
            baseUrl: options.baseUrl ?? env("EGRESSD_URL") ?? DEFAULT_BASE_URL,
            apiKey: options.apiKey ?? env("EGRESSD_API_KEY"),
            timeoutMs: options.timeoutMs,
            authHeader: options.authHeader,
            fetch: options.fetch,
            // A browser sets its own; Node's would say only "node".
            userAgent: isNode() ? "egressd-js" : undefined,
        });
        this._sessionId = options.sessionId || undefined;
        this._vmId = options.vmId || undefined;
        const target = {
            http: this.http,
            sessionForWrite: (sid, opts) => (sid === undefined ? this.ensureSession(opts) : Promise.resolve(sid)),
            sessionForRead: (sid, call) => this.sessionForRead(sid, call),
            vmForWrite: (vid, opts) => (vid === undefined ? this.ensureVm(opts) : Promise.resolve(vid)),
            vmForRead: (vid, call, opts) => this.vmForRead(vid, call, opts),
        };
        this.egress = new Egress(target);
        this.events = new Events(this.http);
        this.vms = new VMs(this.http);
        this.sessions = new Sessions(this.http);
        this.secrets = new Secrets(this.http);
        this.apiKeys = new APIKeys(this.http);
        this.nodes = new Nodes(this.http);
        this.grants = new Grants(this.http);
    }
    /** The API's base URL, without a trailing slash. */
    get baseUrl() {
        return this.http.baseUrl;
    }
    /** The current session's ID, `undefined` until one is given or created. */
    get sessionId() {
        return this._sessionId;
    }
    /** The current VM's ID, `undefined` until one is given or created. */
    get vmId() {
        return this._vmId;
    }
    /**
     * The current session's proxy URL (`http://<session_id>:<token>@host:port`), for the
     * sandbox's `HTTP_PROXY`/`HTTPS_PROXY`. Known only for a session this client created.
     */
    get proxyUrl() {
        return this._proxyUrl;
    }
    /** The current session's SOCKS5 URL, when egressd runs a SOCKS5 listener and this client created the session. */
    get socksUrl() {
        return this._socksUrl;
    }
    /** The current VM's ID: the one given, the current session's, or a new VM's. */
    async ensureVm(opts = {}) {
        if (this._vmId !== undefined)
            return this._vmId;
        this.creatingVm ??= (async () => {
            try {
                const vmId = this._sessionId !== undefined
                    ? (await this.sessions.get(this._sessionId, opts)).vm_id
                    : (await this.vms.create({ signal: opts.signal })).vm_id;
                this._vmId ??= vmId;
                return this._vmId;
            }
            finally {
                this.creatingVm = undefined;
            }
        })();
        return this.creatingVm;
    }
    /** The current session's ID, creating it (and a VM, unless there is one) if needed. */
    async ensureSession(opts = {}) {
        if (this._sessionId !== undefined)
            return this._sessionId;
        this.creatingSession ??= (async () => {
            try {
                const session = await this.sessions.create(await this.ensureVm(opts), opts);
                this.adopt(session);
                return session.session_id;
            }
            finally {
                this.creatingSession = undefined;
            }
        })();
        return this.creatingSession;
    }
    /**
     * Start a new session on the current VM (creating the VM if needed) and make it the current
     * one. The previous session is left open: end it with {@link endSession} first if it is done.
     */
    async newSession(opts = {}) {
        const session = await this.sessions.create(await this.ensureVm(opts), opts);
        this.adopt(session);
        return session;
    }
    /**
     * End the current session (its policy goes with it) and forget it; with `deleteVm: true`
     * delete the current VM too. One that is gone already is just forgotten.
     */
    async endSession(params = {}) {
        if (this._sessionId !== undefined) {
            try {
                await this.sessions.delete(this._sessionId, params);
            }
            catch (err) {
                if (!(err instanceof NotFoundError))
                    throw err;
            }
            this._sessionId = this._proxyUrl = this._socksUrl = undefined;
        }
        if (params.deleteVm && this._vmId !== undefined) {
            try {
                await this.vms.delete(this._vmId, params);
            }
            catch (err) {
                if (!(err instanceof NotFoundError))
                    throw err;
            }
            this._vmId = undefined;
        }
    }
    adopt(session) {
        this._sessionId = session.session_id;
        this._vmId = session.vm_id;
        this._proxyUrl = session.proxy_url || undefined;
        this._socksUrl = session.socks_url || undefined;
    }
    sessionForRead(sessionId, call) {
        if (sessionId !== undefined)
            return sessionId;
        if (this._sessionId === undefined) {
            throw new NoSessionError(`${call}: this client has no session yet, and a read creates none. Set a policy first ` +
                "(client.egress.setSession({...}) creates a VM and a session), or pass session_id here or sessionId to new Client(...)");
        }
        return this._sessionId;
    }
    async vmForRead(vmId, call, opts) {
        if (vmId !== undefined)
            return vmId;
        if (this._vmId === undefined && this._sessionId === undefined) {
            throw new NoVMError(`${call}: this client has no VM yet, and a read creates none. Pass vm_id here or vmId to ` +
                "new Client(...), or set a policy first (client.egress.setVm({...}) creates a VM)");
        }
        return this.ensureVm(opts); // the current session's VM: looked up, not created
    }
    /** `GET /v1/ca.pem`: the interception CA's certificate, PEM (no key needed). */
    async caPem(opts = {}) {
        return this.http.text("GET", "/v1/ca.pem", { accept: "application/x-pem-file", signal: opts.signal });
    }
    /** `GET /v1/status`: which egressd answered, and what the key's tenant holds. */
    async status(opts = {}) {
        return this.http.request("GET", "/v1/status", opts);
    }
    /** `GET /healthz`: `{status: "ok"}` while egressd runs (no key needed). */
    async health(opts = {}) {
        return (await this.http.request("GET", "/healthz", opts)) ?? { status: "" };
    }
    /** `GET /readyz`: `{status: "ok"}` when egressd and its store answer; `UnavailableError` when not. */
    async ready(opts = {}) {
        return (await this.http.request("GET", "/readyz", opts)) ?? { status: "" };
    }
    /**
     * Send any request to the API and return its decoded JSON answer (`undefined` for 204): the
     * way to an endpoint this client has no method for. `path` is taken as it is (escape IDs
     * yourself); `json` is sent as `application/json`, or `body` with `contentType`.
     */
    async request(method, path, opts = {}) {
        return this.http.request(method, path, opts);
    }
}
