/**
 * Errors thrown by the egressd client.
 *
 * Every answer of the API other than 2xx becomes an {@link EgressdError} subclass chosen by the
 * error `code` in the body (`{"error": {"code", "message", "field"}}`), or by the HTTP status
 * when the answer did not come from egressd itself (a reverse proxy's error page, say). A request
 * that got no answer (connection refused, a reset, a timeout) throws
 * {@link EgressdConnectionError}. A call whose `signal` was aborted rejects with the signal's
 * reason (an `AbortError` `DOMException` unless the caller gave another), as `fetch` does.
 *
 * `err.message` reads as one line a person can act on, the blamed field first and the status
 * last: `allowed_cidrs[1]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8? (400 invalid_policy)`;
 * `err.apiMessage` is the API's message alone.
 */
/** The base class of every error the client throws. */
export class EgressdError extends Error {
    /** The API's error code, or `undefined` when the answer did not come from egressd. */
    code;
    /** The request field to blame, when there is one. */
    field;
    /** The HTTP status, or `undefined` when there was no answer. */
    status;
    /** The decoded JSON body of the answer, when it had one. */
    body;
    /** The API's message alone (`message` adds the field and the status). */
    apiMessage;
    constructor(message, init = {}) {
        super(formatMessage(message, init), init.cause === undefined ? undefined : { cause: init.cause });
        // The class's own name, so that logs and stack traces say which error this is.
        this.name = new.target.name;
        this.apiMessage = message;
        this.code = init.code || undefined;
        this.field = init.field || undefined;
        this.status = init.status;
        this.body = init.body;
    }
}
function formatMessage(message, init) {
    let msg = message;
    // Some messages name their field already ("tenant must be ..."): do not say it twice.
    if (init.field && !(msg.startsWith(init.field + " ") || msg.startsWith(init.field + ":"))) {
        msg = `${init.field}: ${msg}`;
    }
    const tail = [init.status, init.code || undefined].filter((p) => p !== undefined).join(" ");
    return tail ? `${msg} (${tail})` : msg;
}
/** An answer of the API other than 2xx; the base of the status- and code-specific errors. */
export class APIError extends EgressdError {
}
/** 400 `bad_request`: malformed JSON, an unknown field, a bad ID, filter or check request. */
export class BadRequestError extends APIError {
}
/** 400 `invalid_policy`: the policy does not validate; `field` names the entry. */
export class InvalidPolicyError extends BadRequestError {
}
/** 401 `unauthorized`: no API key, or one that is not valid (or was revoked). */
export class UnauthorizedError extends APIError {
}
/** 403 `forbidden`: an admin-only endpoint (API keys, nodes) called with a tenant key. */
export class ForbiddenError extends APIError {
}
/** 404 `not_found`: no such path or object, or another tenant's object. */
export class NotFoundError extends APIError {
}
/** 404 `policy_not_set`: the session or VM exists but has no policy of that scope. */
export class PolicyNotSetError extends NotFoundError {
}
/** 405 `method_not_allowed`: a known path with another method. */
export class MethodNotAllowedError extends APIError {
}
/** 409 `conflict`: the `vm_id` or secret name is taken, or a key tried to delete itself. */
export class ConflictError extends APIError {
}
/** 413 `too_large`: the request body is over 1 MiB. */
export class PayloadTooLargeError extends APIError {
}
/** 415 `unsupported_media`: a request body sent with a Content-Type that is not JSON. */
export class UnsupportedMediaTypeError extends APIError {
}
/** 429 `rate_limited`: too many requests for this API key (or too many event streams). */
export class RateLimitedError extends APIError {
    /** Seconds to wait before retrying (`Retry-After`), `undefined` when the answer did not say. */
    retryAfter;
    constructor(message, init = {}) {
        super(message, init);
        this.retryAfter = init.retryAfter;
    }
}
/** 5xx, code `internal` for 500: a bug in egressd; its log says more. */
export class ServerError extends APIError {
}
/** 503 `unavailable`: egressd cannot reach its store, or a write was not enforced within 5 s. */
export class UnavailableError extends ServerError {
}
/** The request got no answer: connection refused, reset, a timeout. `code` and `status` are undefined. */
export class EgressdConnectionError extends EgressdError {
}
/**
 * A call that only reads (`getSession`, `effective`, `check`, `clearSession`) was made on a
 * client that has no current session yet. Reads create nothing: the first session-scoped write
 * (`egress.setSession`) creates a VM and a session, or pass `session_id`. Nothing was sent.
 */
export class NoSessionError extends EgressdError {
}
/**
 * A call that only reads (`getVm`, `clearVm`) was made on a client that has no current VM yet:
 * pass `vm_id`, or set a policy first (`egress.setVm` creates the VM). Nothing was sent.
 */
export class NoVMError extends EgressdError {
}
/** The error class of each API code (docs/api.md, "Errors"). */
export const ERROR_CLASSES = Object.freeze({
    bad_request: BadRequestError,
    invalid_policy: InvalidPolicyError,
    unauthorized: UnauthorizedError,
    forbidden: ForbiddenError,
    not_found: NotFoundError,
    policy_not_set: PolicyNotSetError,
    method_not_allowed: MethodNotAllowedError,
    conflict: ConflictError,
    too_large: PayloadTooLargeError,
    unsupported_media: UnsupportedMediaTypeError,
    rate_limited: RateLimitedError,
    internal: ServerError,
    unavailable: UnavailableError,
});
const BY_STATUS = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    429: RateLimitedError,
    503: UnavailableError,
};
const STATUS_TEXT = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request entity too large",
    415: "unsupported media type",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
};
// How much of a body that is not egressd's own error shape is quoted in a message.
const EXCERPT_CHARS = 200;
function errorClass(status, code) {
    if (code && Object.prototype.hasOwnProperty.call(ERROR_CLASSES, code))
        return ERROR_CLASSES[code];
    if (BY_STATUS[status])
        return BY_STATUS[status];
    if (status >= 500)
        return ServerError;
    return APIError;
}
function parseRetryAfter(value) {
    if (value == null || value.trim() === "")
        return undefined;
    const n = Number(value.trim());
    // An HTTP date is rare enough not to parse.
    return Number.isFinite(n) ? Math.max(0, n) : undefined;
}
function excerpt(text) {
    let line = text.trim().split("\n", 1)[0].trim();
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u0008\u000a-\u001f]/.test(line))
        return "";
    if (line.length > EXCERPT_CHARS)
        line = line.slice(0, EXCERPT_CHARS) + "…";
    return line;
}
function isRecord(v) {
    return typeof v === "object" && v !== null && !Array.isArray(v);
}
/**
 * The error for a non-2xx answer, from its status, body text and headers.
 *
 * The API's own shape `{"error": {"code", "message", "field"}}` gives the class (by `code`), the
 * message and the field. Other shapes (`/readyz`'s `{"status", "reason"}`, a plain-text page
 * from a proxy in front of egressd) keep the status-based class and quote the body.
 */
export function errorFromResponse(status, text, headers) {
    let code;
    let field;
    let message = "";
    let body;
    try {
        body = text ? JSON.parse(text) : undefined;
    }
    catch {
        body = undefined;
    }
    if (isRecord(body)) {
        const detail = body["error"];
        if (isRecord(detail)) {
            code = typeof detail["code"] === "string" && detail["code"] ? detail["code"] : undefined;
            message = detail["message"] == null ? "" : String(detail["message"]);
            field = typeof detail["field"] === "string" && detail["field"] ? detail["field"] : undefined;
        }
        else if (typeof detail === "string") {
            message = detail;
        }
        else if (body["reason"]) {
            message = String(body["reason"]);
        }
        else if (body["status"]) {
            message = String(body["status"]);
        }
    }
    else if (body === undefined) {
        message = excerpt(text);
    }
    if (status >= 300 && status < 400) {
        const location = headers?.get("Location");
        message = "unexpected redirect" + (location ? ` to ${location}; check the base URL` : "");
    }
    if (!message)
        message = STATUS_TEXT[status] ?? `HTTP ${status}`;
    if (code === undefined && status === 503)
        code = "unavailable";
    const Cls = errorClass(status, code);
    if (Cls === RateLimitedError) {
        return new RateLimitedError(message, {
            code,
            field,
            status,
            body,
            retryAfter: parseRetryAfter(headers?.get("Retry-After")),
        });
    }
    return new Cls(message, { code, field, status, body });
}
