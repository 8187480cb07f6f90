/**
 * Decision records: `client.events.list` and `client.events.follow`, an async iterator over
 * the API's Server-Sent Events stream that reconnects by itself.
 */
import { EgressdConnectionError, EgressdError, RateLimitedError, ServerError } from "./errors.js";
import { Deadline } from "./http.js";
import { SSEParser } from "./sse.js";
// The first wait before reopening a broken stream, doubling up to the longest (the Go SDK's).
const FIRST_WAIT_MS = 250;
const LONGEST_WAIT_MS = 5_000;
function sinceParam(since) {
    if (since === undefined || since === null)
        return undefined;
    if (since instanceof Date)
        return since.toISOString();
    if (typeof since === "number" || typeof since === "string")
        return String(since);
    throw new TypeError(`since must be a Date, a seq (number) or a string, not ${typeof since}`);
}
function query(f) {
    return {
        vm_id: f.vm_id,
        session_id: f.session_id,
        decision: f.decision,
        kind: f.kind,
        since: sinceParam(f.since),
        limit: f.limit,
    };
}
function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
        if (signal?.aborted)
            return reject(signal.reason);
        const onAbort = () => {
            clearTimeout(timer);
            reject(signal.reason);
        };
        const timer = setTimeout(() => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
        }, ms);
        signal?.addEventListener("abort", onAbort, { once: true });
    });
}
/** The gateway's decision records of this key's tenant. Reached as `client.events`. */
export class Events {
    http;
    constructor(http) {
        this.http = http;
    }
    /**
     * The buffered records that match, oldest first (`GET /v1/egress/events`). Without `since`,
     * the newest `limit`; with it, the first `limit` after it.
     */
    async list(filters = {}) {
        const data = await this.http.request("GET", "/v1/egress/events", {
            query: query(filters),
            signal: filters.signal,
        });
        return data?.events ?? [];
    }
    /**
     * The records as they happen: first the buffered ones that match (the newest `limit`), then
     * live ones, for as long as the caller iterates (`for await`; leave the loop, or abort the
     * signal, to close the stream).
     *
     * A stream that breaks, ends, or stays silent longer than `idleTimeoutMs` is reopened after
     * the last record delivered (`Last-Event-ID`), as EventSource would, waiting 250 ms and then
     * twice as long each time up to 5 s: a restart of egressd is ridden out, and no record is
     * delivered twice. Once the stream has stayed broken for `giveUpAfterMs`, or after
     * `maxReconnects` failed attempts in a row, the last {@link EgressdConnectionError} is
     * thrown. API errors (a bad filter, a revoked key) are thrown at once; once a stream has been
     * open, a 5xx or 429 on reopening it is waited out like a refused connection. A stream that
     * stayed open `healthyAfterMs` (or delivered a record) starts the count afresh when it breaks.
     */
    async *follow(opts = {}) {
        const first = { ...query(opts), follow: true };
        // Resuming after a record, Last-Event-ID supersedes the start point and the limit, which
        // were for the first connection only (as the Go SDK does).
        const resumed = { ...first, since: undefined, limit: undefined };
        const idleMs = opts.idleTimeoutMs ?? 45_000;
        const giveUpMs = opts.giveUpAfterMs ?? 60_000;
        const healthyMs = opts.healthyAfterMs ?? 10_000;
        const outer = opts.signal;
        let lastId;
        let lastSeq = -1;
        let failures = 0;
        let brokenSince;
        let everOpened = false;
        for (;;) {
            if (outer?.aborted)
                throw outer.reason;
            let cause;
            let openedAt;
            const deadline = new Deadline(outer, idleMs);
            let reader;
            try {
                const resp = await this.http.open("GET", "/v1/egress/events", { query: lastId ? resumed : first, accept: "text/event-stream", headers: lastId ? { "Last-Event-ID": lastId } : undefined }, deadline);
                const ctype = resp.headers.get("Content-Type") ?? "";
                if (!ctype.startsWith("text/event-stream") || !resp.body) {
                    throw new EgressdError(`GET /v1/egress/events answered ${resp.status} with Content-Type ${JSON.stringify(ctype)}, not an event stream`, { status: resp.status });
                }
                everOpened = true;
                openedAt = Date.now();
                reader = resp.body.getReader();
                const decoder = new TextDecoder();
                const parser = new SSEParser();
                for (;;) {
                    let chunk;
                    try {
                        chunk = await reader.read();
                    }
                    catch (err) {
                        throw deadline.failure("reading the event stream", err);
                    }
                    if (chunk.done)
                        break;
                    deadline.arm();
                    for (const sse of parser.push(decoder.decode(chunk.value, { stream: true }))) {
                        if (sse.event !== "decision")
                            continue;
                        let event;
                        try {
                            event = JSON.parse(sse.data);
                        }
                        catch (err) {
                            throw new EgressdError(`a record of the event stream is not JSON: ${err.message}`, { cause: err });
                        }
                        if (sse.id)
                            lastId = sse.id;
                        failures = 0;
                        brokenSince = undefined;
                        if (typeof event.seq === "number") {
                            if (event.seq <= lastSeq)
                                continue; // seen already, before a reconnect
                            lastSeq = event.seq;
                        }
                        // The caller's time between records is not the stream's silence.
                        deadline.pause();
                        yield event;
                        deadline.arm();
                    }
                }
                cause = new EgressdConnectionError("egressd ended the event stream");
            }
            catch (err) {
                if (outer?.aborted)
                    throw outer.reason;
                // Once a stream has been open, egressd answering 5xx or 429 is a restart or a
                // passing overload: ridden out like a refused connection. Other API errors (a bad
                // filter, a revoked key) cannot be fixed by waiting.
                const passing = everOpened && (err instanceof ServerError || err instanceof RateLimitedError);
                if (!(err instanceof EgressdConnectionError) && !passing)
                    throw err;
                cause = err;
            }
            finally {
                deadline.close();
                reader?.cancel().catch(() => undefined);
            }
            const now = Date.now();
            if (openedAt !== undefined && now - openedAt >= healthyMs) {
                // The stream was healthy (a quiet session sends no records for long): this is a new loss.
                failures = 0;
                brokenSince = undefined;
            }
            brokenSince ??= now;
            if ((opts.maxReconnects !== undefined && failures >= opts.maxReconnects) || now - brokenSince >= giveUpMs) {
                throw cause;
            }
            await sleep(Math.min(FIRST_WAIT_MS * 2 ** failures, LONGEST_WAIT_MS), outer);
            failures++;
        }
    }
}
