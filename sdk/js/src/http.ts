/**
 * The HTTP transport: one request at a time over `fetch`, errors mapped to classes, a deadline
 * and the caller's `AbortSignal` on each request.
 */

import { EgressdConnectionError, EgressdError, errorFromResponse } from "./errors.js";

/** What every call takes besides its own parameters. */
export interface RequestOptions {
  /** Aborts the call; it then rejects with the signal's reason, as `fetch` does. */
  signal?: AbortSignal | undefined;
}

/** A query parameter's value; `undefined` and `null` are left out, booleans sent as true/false. */
export type QueryValue = string | number | boolean | undefined | null;

/** How the API key is sent. */
export type AuthHeader = "bearer" | "x-api-key";

/** The `fetch` the client uses (the global one unless given). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** What a request sends. */
export interface SendOptions extends RequestOptions {
  query?: Record<string, QueryValue> | undefined;
  /** A JSON value, sent as `application/json`. */
  json?: unknown;
  /** A raw body, sent with `contentType`. */
  body?: string | Uint8Array | undefined;
  contentType?: string | undefined;
  headers?: Record<string, string> | undefined;
  accept?: string | undefined;
  /** Milliseconds before the request is given up; the transport's own when left out, 0 for none. */
  timeoutMs?: number | undefined;
}

/**
 * Join fixed path text and IDs into an escaped path. Parts alternate: fixed text (even
 * positions) and IDs (odd positions). Each ID becomes exactly one path segment, so an ID can
 * never address another endpoint; an empty ID, `.` or `..` is refused, because no escaping
 * survives a server's path cleaning.
 */
export function pathFor(...parts: string[]): string {
  return parts
    .map((part, i) => {
      if (i % 2 === 0) return part;
      if (typeof part !== "string") throw new TypeError(`an ID must be a string, not ${typeof part}`);
      if (part === "" || part === "." || part === "..") throw new TypeError(`${JSON.stringify(part)} is not a valid ID`);
      return encodeURIComponent(part);
    })
    .join("");
}

/**
 * One request's signal: the caller's, plus a deadline that can be re-armed (an event stream
 * re-arms it at each chunk, so that it is an idle timeout there).
 */
export class Deadline {
  readonly signal: AbortSignal;
  private readonly ctrl = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private expired = false;
  private readonly onAbort: () => void;

  constructor(
    private readonly outer: AbortSignal | undefined,
    private readonly ms: number,
  ) {
    this.signal = this.ctrl.signal;
    this.onAbort = () => this.ctrl.abort(outer?.reason);
    if (outer) {
      if (outer.aborted) this.ctrl.abort(outer.reason);
      else outer.addEventListener("abort", this.onAbort, { once: true });
    }
    this.arm();
  }

  /** Start (again) the time allowed from now on. */
  arm(): void {
    this.pause();
    if (this.ms > 0 && !this.ctrl.signal.aborted) {
      this.timer = setTimeout(() => {
        this.expired = true;
        this.ctrl.abort(new EgressdConnectionError(`timed out after ${this.ms} ms`));
      }, this.ms);
    }
  }

  /** Stop the clock (while the caller, not the network, is the one taking its time). */
  pause(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Whether the deadline, rather than the caller, ended the request. */
  get timedOut(): boolean {
    return this.expired;
  }

  /** Whether the caller aborted. */
  get callerAborted(): boolean {
    return this.outer?.aborted === true;
  }

  /** End the request now (the connection is closed) and stop listening to the caller. */
  close(): void {
    this.pause();
    this.outer?.removeEventListener("abort", this.onAbort);
    if (!this.ctrl.signal.aborted) this.ctrl.abort();
  }

  /** The error for a failure seen while this deadline ran: the caller's reason, a timeout, or err. */
  failure(what: string, err: unknown): unknown {
    if (this.callerAborted) return this.outer!.reason;
    if (this.expired) return new EgressdConnectionError(`${what}: timed out after ${this.ms} ms`, { cause: err });
    if (err instanceof EgressdError) return err;
    return new EgressdConnectionError(`${what}: ${describe(err)}`, { cause: err });
  }
}

/** A network error in words: undici hides the useful part (ECONNREFUSED ...) in `cause`. */
function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof Error) {
      const code = (cause as { code?: unknown }).code;
      return typeof code === "string" && !cause.message.includes(code) ? `${code} ${cause.message}` : cause.message;
    }
    return err.message || err.name;
  }
  return String(err);
}

/** Sends requests to one egressd API. */
export class Transport {
  readonly baseUrl: string;
  readonly apiKey: string | undefined;
  readonly timeoutMs: number;
  readonly authHeader: AuthHeader;
  private readonly fetchImpl: FetchLike;
  private readonly userAgent: string | undefined;

  constructor(opts: {
    baseUrl: string;
    apiKey?: string | undefined;
    timeoutMs?: number | undefined;
    authHeader?: AuthHeader | undefined;
    fetch?: FetchLike | undefined;
    userAgent?: string | undefined;
  }) {
    let parsed: URL;
    try {
      parsed = new URL(opts.baseUrl);
    } catch {
      throw new TypeError(`baseUrl ${JSON.stringify(opts.baseUrl)} must be an absolute http:// or https:// URL, such as http://127.0.0.1:8470`);
    }
    if ((parsed.protocol !== "http:" && parsed.protocol !== "https:") || !parsed.hostname) {
      throw new TypeError(`baseUrl ${JSON.stringify(opts.baseUrl)} must be an absolute http:// or https:// URL, such as http://127.0.0.1:8470`);
    }
    if (parsed.username || parsed.password) {
      throw new TypeError("baseUrl must not carry credentials; pass the API key as apiKey");
    }
    if (parsed.search || parsed.hash) {
      throw new TypeError(`baseUrl ${JSON.stringify(opts.baseUrl)} must not have a query or fragment`);
    }
    const auth = (opts.authHeader ?? "bearer").toLowerCase();
    if (auth !== "bearer" && auth !== "x-api-key") throw new TypeError('authHeader must be "bearer" or "x-api-key"');
    const fetchImpl = opts.fetch ?? (globalThis.fetch as FetchLike | undefined);
    if (typeof fetchImpl !== "function") {
      throw new TypeError("no fetch: egressd needs Node 18 or later, a browser, or a fetch given as the fetch option");
    }
    // A path prefix is kept (egressd behind a reverse proxy); the trailing slash is not.
    this.baseUrl = `${parsed.protocol}//${parsed.host}${parsed.pathname}`.replace(/\/+$/, "");
    this.apiKey = opts.apiKey || undefined;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.authHeader = auth;
    // Called as a plain function: a browser's fetch refuses to be a method of another object
    // ("Illegal invocation"), which calling it as this.fetchImpl(...) would make it.
    this.fetchImpl = (input, init) => fetchImpl(input, init);
    this.userAgent = opts.userAgent;
  }

  /** The full URL of path with query. */
  url(path: string, query?: Record<string, QueryValue>): string {
    let url = this.baseUrl + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v === undefined || v === null) continue;
        params.append(k, typeof v === "boolean" ? (v ? "true" : "false") : String(v));
      }
      const qs = params.toString();
      if (qs) url += "?" + qs;
    }
    return url;
  }

  /**
   * Send a request under deadline and return the 2xx response, its body not read; throw the
   * error class of any other answer, or EgressdConnectionError when none came.
   */
  async open(method: string, path: string, opts: SendOptions, deadline: Deadline): Promise<Response> {
    const url = this.url(path, opts.query);
    const headers: Record<string, string> = { Accept: opts.accept ?? "application/json" };
    if (this.userAgent) headers["User-Agent"] = this.userAgent;
    if (this.apiKey) {
      if (this.authHeader === "bearer") headers["Authorization"] = "Bearer " + this.apiKey;
      else headers["X-API-Key"] = this.apiKey;
    }
    let body: string | Uint8Array | undefined = opts.body;
    if (opts.json !== undefined) {
      if (body !== undefined) throw new TypeError("pass json or body, not both");
      body = JSON.stringify(opts.json);
    }
    if (body !== undefined) headers["Content-Type"] = opts.contentType ?? "application/json";
    Object.assign(headers, opts.headers);
    let resp: Response;
    try {
      resp = await this.fetchImpl(url, {
        method,
        headers,
        body: body as BodyInit | undefined,
        // The API never redirects; following one could carry the key to another host.
        redirect: "manual",
        signal: deadline.signal,
        cache: "no-store",
      });
    } catch (err) {
      throw deadline.failure(`${method} ${url}`, err);
    }
    if (resp.type === "opaqueredirect") {
      // A browser hides a redirect's status and headers.
      throw errorFromResponse(302, "", resp.headers);
    }
    if (resp.status >= 200 && resp.status < 300) return resp;
    let text = "";
    try {
      text = await resp.text();
    } catch (err) {
      throw deadline.failure(`${method} ${url}: reading the answer`, err);
    }
    throw errorFromResponse(resp.status, text, resp.headers);
  }

  /** Send one request and return its decoded JSON answer (`undefined` for 204 or no body). */
  async request<T = unknown>(method: string, path: string, opts: SendOptions = {}): Promise<T> {
    const deadline = new Deadline(opts.signal, opts.timeoutMs ?? this.timeoutMs);
    try {
      const resp = await this.open(method, path, opts, deadline);
      let text: string;
      try {
        text = await resp.text();
      } catch (err) {
        throw deadline.failure(`${method} ${resp.url || this.url(path, opts.query)}: reading the answer`, err);
      }
      if (resp.status === 204 || text.trim() === "") return undefined as T;
      try {
        return JSON.parse(text) as T;
      } catch (err) {
        throw new EgressdError(
          `${method} ${this.url(path, opts.query)}: the answer (Content-Type ${JSON.stringify(resp.headers.get("Content-Type") ?? "")}) is not JSON: ${(err as Error).message}`,
          { status: resp.status, cause: err },
        );
      }
    } finally {
      deadline.close();
    }
  }

  /** Send one request and return its body as text (the CA certificate). */
  async text(method: string, path: string, opts: SendOptions = {}): Promise<string> {
    const deadline = new Deadline(opts.signal, opts.timeoutMs ?? this.timeoutMs);
    try {
      const resp = await this.open(method, path, opts, deadline);
      try {
        return await resp.text();
      } catch (err) {
        throw deadline.failure(`${method} ${this.url(path)}: reading the answer`, err);
      }
    } finally {
      deadline.close();
    }
  }
}
