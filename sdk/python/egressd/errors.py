"""Exceptions raised by the egressd client.

Every answer of the API other than 2xx becomes an :class:`EgressdError` subclass chosen by
the error ``code`` in the body (``{"error": {"code", "message", "field"}}``), or by the HTTP
status when the answer did not come from egressd itself (a reverse proxy's error page, say).
A request that never got an answer (connection refused, a timeout, a reset) raises
:class:`EgressdConnectionError`.

``str(err)`` reads as one line a person can act on, the blamed field first and the status
last::

    allowed_cidrs[1]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8? (400 invalid_policy)
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "EgressdError",
    "APIError",
    "BadRequestError",
    "InvalidPolicyError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "PolicyNotSetError",
    "MethodNotAllowedError",
    "ConflictError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "RateLimitedError",
    "ServerError",
    "UnavailableError",
    "EgressdConnectionError",
    "NoSessionError",
    "NoVMError",
    "error_from_response",
]

# How much of a body that is not egressd's own error shape is quoted in a message.
_EXCERPT_CHARS = 200


class EgressdError(Exception):
    """The base class of every error the client raises.

    Attributes:
        message: what went wrong, as the API said it.
        code: the API's error code (``"invalid_policy"``, ``"not_found"``, ...), or ``None``
            when the answer did not come from egressd (or there was no answer at all).
        field: the request field to blame (``"allowed_cidrs[1]"``), when there is one.
        status: the HTTP status, or ``None`` when there was no answer.
        body: the decoded JSON body of the answer, when it had one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        field: Optional[str] = None,
        status: Optional[int] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field or None
        self.status = status
        self.body = body

    def __str__(self) -> str:
        msg = self.message
        # Some messages name their field already ("tenant must be ..."): do not say it twice.
        if self.field and not (msg.startswith(self.field + " ") or msg.startswith(self.field + ":")):
            msg = f"{self.field}: {msg}"
        tail = " ".join(str(p) for p in (self.status, self.code) if p is not None)
        return f"{msg} ({tail})" if tail else msg

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
            f"field={self.field!r}, status={self.status!r})"
        )


class APIError(EgressdError):
    """An answer of the API other than 2xx; the base of the status- and code-specific errors."""


class BadRequestError(APIError):
    """400 ``bad_request``: malformed JSON, an unknown field, a bad ID, filter or check request."""


class InvalidPolicyError(BadRequestError):
    """400 ``invalid_policy``: the policy does not validate; ``field`` names the entry."""


class UnauthorizedError(APIError):
    """401 ``unauthorized``: no API key, or one that is not valid (or was revoked)."""


class ForbiddenError(APIError):
    """403 ``forbidden``: an admin-only endpoint (API keys) called with a tenant key."""


class NotFoundError(APIError):
    """404 ``not_found``: no such path or object, or another tenant's object."""


class PolicyNotSetError(NotFoundError):
    """404 ``policy_not_set``: the session or VM exists but has no policy of that scope."""


class MethodNotAllowedError(APIError):
    """405 ``method_not_allowed``: a known path with another method."""


class ConflictError(APIError):
    """409 ``conflict``: the ``vm_id`` is taken, or a key tried to delete itself."""


class PayloadTooLargeError(APIError):
    """413 ``too_large``: the request body is over 1 MiB."""


class UnsupportedMediaTypeError(APIError):
    """415 ``unsupported_media``: the request body was sent with a Content-Type that is not JSON."""


class RateLimitedError(APIError):
    """429 ``rate_limited``: too many requests for this API key (or too many event streams).

    Attributes:
        retry_after: seconds to wait before retrying, from the ``Retry-After`` header, or
            ``None`` when the answer did not say.
    """

    def __init__(self, message: str, *, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx, code ``internal`` for 500: a bug in egressd; its log says more."""


class UnavailableError(ServerError):
    """503 ``unavailable``: egressd cannot reach its store, or the feature is not enabled."""


class EgressdConnectionError(EgressdError, ConnectionError):
    """The request got no answer: connection refused, reset, a timeout, a bad TLS handshake.

    It is also a :class:`ConnectionError` (and so an :class:`OSError`), so code that already
    catches those keeps working. ``code`` and ``status`` are ``None``.
    """


class NoSessionError(EgressdError):
    """A call that only reads (``get_session``, ``effective``, ``check``, ``clear_session``)
    was made on a client that has no current session yet.

    Reads create nothing (DESIGN §7): the first session-scoped *write* (``set_session``)
    creates a VM and a session, or pass ``session_id=...`` to the call or to the client.
    Nothing was sent to egressd; ``code`` and ``status`` are ``None``.
    """


class NoVMError(EgressdError):
    """A call that only reads (``get_vm``, ``clear_vm``) was made on a client that has no
    current VM yet: pass ``vm_id=...``, or set a policy first (``set_vm`` creates the VM).
    Nothing was sent to egressd."""


_BY_CODE: Dict[str, Type[APIError]] = {
    "bad_request": BadRequestError,
    "invalid_policy": InvalidPolicyError,
    "unauthorized": UnauthorizedError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "policy_not_set": PolicyNotSetError,
    "method_not_allowed": MethodNotAllowedError,
    "conflict": ConflictError,
    "too_large": PayloadTooLargeError,
    "unsupported_media": UnsupportedMediaTypeError,
    "rate_limited": RateLimitedError,
    "internal": ServerError,
    "unavailable": UnavailableError,
}

_BY_STATUS: Dict[int, Type[APIError]] = {
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
}

_STATUS_TEXT = {
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
}


def _error_class(status: int, code: Optional[str]) -> Type[APIError]:
    if code and code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return APIError


def _retry_after(headers: Optional[Mapping[str, str]]) -> Optional[float]:
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None  # an HTTP date: rare enough not to parse


def _excerpt(data: bytes) -> str:
    """The first line of a text body, short enough for a message ("" if none or binary)."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return ""
    text = text.split("\n", 1)[0].strip()
    if any(ord(c) < 32 and c != "\t" for c in text):
        return ""
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "…"
    return text


def error_from_response(
    status: int,
    data: bytes,
    headers: Optional[Mapping[str, str]] = None,
) -> APIError:
    """Build the error for a non-2xx answer from its status, raw body and headers.

    The API's own shape ``{"error": {"code", "message", "field"}}`` gives the class (by
    ``code``), the message and the field. Other shapes (``/readyz``'s ``{"status", "reason"}``,
    a plain-text page from a proxy in front of egressd) keep the status-based class and quote
    the body.
    """
    code: Optional[str] = None
    field: Optional[str] = None
    message = ""
    body: Any = None
    try:
        body = json.loads(data.decode("utf-8")) if data else None
    except (UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict):
        detail = body.get("error")
        if isinstance(detail, dict):
            code = detail.get("code") or None
            message = str(detail.get("message") or "")
            field = detail.get("field") or None
        elif isinstance(detail, str):
            message = detail
        elif body.get("reason"):
            message = str(body["reason"])
        elif body.get("status"):
            message = str(body["status"])
    elif body is None:
        message = _excerpt(data)
    if 300 <= status < 400:
        location = headers.get("Location") if headers else None
        message = "unexpected redirect" + (f" to {location}; check the base URL" if location else "")
    if not message:
        message = _STATUS_TEXT.get(status, f"HTTP {status}")
    if code is None and status == 503:
        code = "unavailable"
    cls = _error_class(status, code)
    if issubclass(cls, RateLimitedError):
        return RateLimitedError(
            message, code=code, field=field, status=status, body=body, retry_after=_retry_after(headers)
        )
    return cls(message, code=code, field=field, status=status, body=body)
