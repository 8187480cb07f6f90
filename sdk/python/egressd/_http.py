"""The HTTP transport: one JSON request at a time over urllib, errors mapped to exceptions."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping, Optional, Union

from .errors import EgressdConnectionError, EgressdError, error_from_response

__all__ = ["Transport", "path_for", "USER_AGENT"]

USER_AGENT = "egressd-python"

# Answers bigger than this are not read whole into an error message.
_MAX_ERROR_BODY = 64 << 10

QueryValue = Union[str, int, float, bool, None]


def path_for(*parts: str) -> str:
    """Join fixed path text and IDs into an escaped path.

    Parts alternate: fixed text (even positions) and IDs (odd positions). Each ID becomes
    exactly one path segment, so an ID can never address another endpoint; an empty ID, ``.``
    or ``..`` is refused, because no escaping survives a server's path cleaning.
    """
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(part)
            continue
        if not isinstance(part, str):
            raise TypeError(f"an ID must be a string, not {type(part).__name__}")
        if part in ("", ".", ".."):
            raise ValueError(f"{part!r} is not a valid ID")
        out.append(urllib.parse.quote(part, safe=""))
    return "".join(out)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: the API never sends one, and following one could carry the key away."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Transport:
    """Sends requests to one egressd API.

    Args:
        base_url: ``http://host:port``, with an optional path prefix (behind a reverse proxy).
        api_key: sent as ``Authorization: Bearer`` (or ``X-API-Key`` with ``auth_header``).
        timeout: seconds for connecting and for each read.
        auth_header: ``"bearer"`` or ``"x-api-key"``.

    Proxies: the ``HTTP(S)_PROXY``/``NO_PROXY`` environment is honoured, except for a
    loopback base URL, which is always reached directly (code inside a sandbox often has its
    egress proxy in ``HTTP_PROXY``, and that proxy must not see API keys).
    """

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str],
        *,
        timeout: float = 30,
        auth_header: str = "bearer",
        user_agent: str = USER_AGENT,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"base_url {base_url!r} must be an absolute http:// or https:// URL, "
                "such as http://127.0.0.1:8470"
            )
        if parsed.username or parsed.password:
            raise ValueError("base_url must not carry credentials; pass the API key as api_key")
        if parsed.query or parsed.fragment:
            raise ValueError(f"base_url {base_url!r} must not have a query or fragment")
        if auth_header.lower() not in ("bearer", "x-api-key"):
            raise ValueError('auth_header must be "bearer" or "x-api-key"')
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.auth_header = auth_header.lower()
        self.user_agent = user_agent
        proxies = {} if _is_loopback(parsed.hostname) else None
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler(proxies), _NoRedirect()
        )

    def url(self, path: str, query: Optional[Mapping[str, QueryValue]] = None) -> str:
        """The full URL of path with query (``None`` values left out, booleans as true/false)."""
        url = self.base_url + path
        if query:
            items = [
                (k, ("true" if v else "false") if isinstance(v, bool) else str(v))
                for k, v in query.items()
                if v is not None
            ]
            if items:
                url += "?" + urllib.parse.urlencode(items)
        return url

    def _headers(self, accept: str) -> dict:
        headers = {"Accept": accept, "User-Agent": self.user_agent}
        if self.api_key:
            if self.auth_header == "bearer":
                headers["Authorization"] = "Bearer " + self.api_key
            else:
                headers["X-API-Key"] = self.api_key
        return headers

    def open(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, QueryValue]] = None,
        data: Optional[bytes] = None,
        content_type: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        accept: str = "application/json",
        timeout: Optional[float] = None,
    ) -> http.client.HTTPResponse:
        """Send a request and return the open 2xx response; raise for anything else.

        The caller reads and closes the response. Non-2xx answers raise the
        :mod:`egressd.errors` class of their code; no answer raises EgressdConnectionError.
        """
        url = self.url(path, query)
        all_headers = self._headers(accept)
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        try:
            return self._opener.open(req, timeout=self.timeout if timeout is None else timeout)
        except urllib.error.HTTPError as err:
            with err:
                body = err.read(_MAX_ERROR_BODY) if err.fp is not None else b""
                raise error_from_response(err.code, body, err.headers) from None
        except urllib.error.URLError as err:
            reason = err.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise EgressdConnectionError(f"{method} {url}: {text}") from err
        except (OSError, http.client.HTTPException) as err:
            # socket.timeout, ConnectionResetError, RemoteDisconnected, ...
            text = "timed out" if isinstance(err, socket.timeout) else (str(err) or type(err).__name__)
            raise EgressdConnectionError(f"{method} {url}: {text}") from err

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, QueryValue]] = None,
        json_body: Any = None,
        data: Optional[bytes] = None,
        content_type: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Send one request and return its decoded JSON answer (``None`` for 204 or no body).

        ``json_body`` (any JSON value) is sent as ``application/json``; ``data`` sends raw
        bytes with ``content_type`` (default ``application/json``) instead.
        """
        if json_body is not None and data is not None:
            raise ValueError("pass json_body or data, not both")
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
        if data is not None and content_type is None:
            content_type = "application/json"
        resp = self.open(
            method, path, query=query, data=data, content_type=content_type, headers=headers, timeout=timeout
        )
        url = resp.geturl()
        try:
            with resp:
                raw = resp.read()
        except (OSError, http.client.HTTPException) as err:
            raise EgressdConnectionError(f"{method} {url}: reading the answer: {err}") from err
        if resp.status == 204 or not raw.strip():
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            ctype = resp.headers.get("Content-Type", "")
            raise EgressdError(
                f"{method} {url}: the answer (Content-Type {ctype!r}) is not JSON: {err}",
                status=resp.status,
            ) from err
