"""Egress policies, checks and decision records: ``client.egress``."""

from __future__ import annotations

import http.client
import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Union

from . import _sse
from ._http import path_for
from .errors import EgressdConnectionError, EgressdError, NotFoundError
from .models import CheckResult, Effective, Event, Model, Policy, Suggestion, format_time

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Egress", "policy_body"]

#: A start point for events: a time (records at or after it) or a record's ``seq`` (after it).
Since = Union[datetime, int, str, None]

# Reconnecting a followed stream: the first wait, doubling up to the longest; and how long a
# stream may stay broken before follow_events gives up (the Go SDK's defaults).
_FOLLOW_FIRST_WAIT = 0.25
_FOLLOW_LONGEST_WAIT = 5.0
_FOLLOW_GIVE_UP_AFTER = 60.0


def _names(name: str, value: Optional[Iterable[str]]) -> List[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a list of strings, not a single string: use [{value!r}]")
    out = list(value)
    for i, item in enumerate(out):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{i}] must be a string, not {type(item).__name__}")
    return out


def _rules(value: Optional[Iterable[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """The JSON of ``http_rules``: a list of ``{"domain", "methods"?, "paths"?}`` objects
    (dicts, or :class:`~egressd.models.HTTPRule` models as a policy answers them)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)):
        raise TypeError(
            "http_rules must be a list of rules, each a dict such as "
            '{"domain": "api.example.com", "methods": ["GET"], "paths": ["/v1/"]}'
        )
    out: List[Dict[str, Any]] = []
    for i, rule in enumerate(value):
        if isinstance(rule, Model):
            rule = rule.to_dict()
        if not isinstance(rule, Mapping):
            raise TypeError(f"http_rules[{i}] must be a dict with domain, methods and paths, not {type(rule).__name__}")
        item = dict(rule)  # other keys are sent as they are: egressd names an unknown one
        domain = item.get("domain")
        if domain is not None and not isinstance(domain, str):
            raise TypeError(f"http_rules[{i}].domain must be a string, not {type(domain).__name__}")
        for key in ("methods", "paths"):
            if item.get(key) is not None:
                item[key] = _names(f"http_rules[{i}].{key}", item[key])
        out.append(item)
    return out


def _flag(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def policy_body(
    allow_package_managers: bool = False,
    allow_http: bool = False,
    allow_https: bool = False,
    allowed_domains: Optional[Iterable[str]] = None,
    allowed_cidrs: Optional[Iterable[str]] = None,
    denied_domains: Optional[Iterable[str]] = None,
    mode: str = "enforce",
    http_rules: Optional[Iterable[Mapping[str, Any]]] = None,
    allowed_tcp: Optional[Iterable[str]] = None,
) -> Dict[str, Any]:
    """The JSON body of a policy (DESIGN §2.1): every field, with its default when not given.

    Only types are checked here; egressd validates the values (and names the entry to blame
    in an :class:`~egressd.errors.InvalidPolicyError`).
    """
    if not isinstance(mode, str):
        raise TypeError(f'mode must be "enforce" or "monitor", not {mode!r}')
    return {
        "allow_package_managers": _flag("allow_package_managers", allow_package_managers),
        "allow_http": _flag("allow_http", allow_http),
        "allow_https": _flag("allow_https", allow_https),
        "allowed_domains": _names("allowed_domains", allowed_domains),
        "allowed_cidrs": _names("allowed_cidrs", allowed_cidrs),
        "denied_domains": _names("denied_domains", denied_domains),
        "mode": mode,
        "allowed_tcp": _names("allowed_tcp", allowed_tcp),
        "http_rules": _rules(http_rules),
    }


def _since(value: Since) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"since must be a datetime, a seq (int) or a string, not {value!r}")
    return str(value)


class Egress:
    """Egress policies of sessions and VMs, checks, and the gateway's decision records.

    Reached as ``client.egress``. A method that takes ``session_id=None`` works on the
    client's current session; ``set_session`` creates a VM and a session first when the client
    has none (see :class:`~egressd.Client`), a read raises :class:`~egressd.NoSessionError`.
    One that takes ``vm_id=None`` works on the client's current VM; ``set_vm`` creates one
    when it has none, ``get_vm`` and ``clear_vm`` raise :class:`~egressd.NoVMError`.
    """

    def __init__(self, client: "Client") -> None:
        self._client = client
        self._http = client._http

    # -- session policy ---------------------------------------------------------------------

    def set_session(
        self,
        allow_package_managers: bool = False,
        allow_http: bool = False,
        allow_https: bool = False,
        allowed_domains: Optional[Iterable[str]] = None,
        allowed_cidrs: Optional[Iterable[str]] = None,
        denied_domains: Optional[Iterable[str]] = None,
        mode: str = "enforce",
        session_id: Optional[str] = None,
        http_rules: Optional[Iterable[Mapping[str, Any]]] = None,
        allowed_tcp: Optional[Iterable[str]] = None,
    ) -> Policy:
        """Set a session's policy (``POST /v1/egress/session/{id}``) and return it as stored.

        Setting replaces the whole policy: a field left out takes its default, so
        ``set_session()`` with no arguments denies everything. The answer is normalised
        (domains in punycode and lower case) and carries ``revision``, ``updated_at`` and any
        ``warnings``. An invalid policy raises :class:`~egressd.InvalidPolicyError` whose
        ``field`` names the entry, e.g. ``allowed_cidrs[1]``.

        Args:
            allow_package_managers: allow the package registries of the preset, on 80 and 443.
            allow_http: allow outbound HTTP (TCP 80).
            allow_https: allow outbound HTTPS (TCP 443).
            allowed_domains: when non-empty, web traffic only to these hosts; ``*.example.com``
                matches every name under example.com (not example.com itself).
            allowed_cidrs: ranges allowed on every port and protocol, e.g. ``["10.0.0.0/8"]``.
            denied_domains: hosts never allowed, whatever else allows them.
            mode: ``"enforce"``, or ``"monitor"`` to record would-be denials and block nothing.
            session_id: the session; the client's current one when ``None``.
            http_rules: method and path rules per domain, e.g.
                ``[{"domain": "api.example.com", "methods": ["GET", "POST"], "paths": ["/v1/"]}]``
                (methods in upper case, paths as prefixes starting with ``/``; either left out
                means any). A domain named here is intercepted, and each request to it must
                match a rule of every layer that has rules for it.
            allowed_tcp: ``"name:port"`` endpoints for TCP that is not web traffic, allowed
                whatever the web flags say, e.g. ``["github.com:22", "*.db.example.com:5432"]``
                (one port per entry, 1-65535; names only: an address belongs in
                ``allowed_cidrs``). ``denied_domains`` still win, and the address dialled
                must be public or inside ``allowed_cidrs``.
        """
        body = policy_body(
            allow_package_managers, allow_http, allow_https, allowed_domains, allowed_cidrs, denied_domains, mode,
            http_rules, allowed_tcp,
        )
        sid = self._client._session_or_current(session_id)
        data = self._http.request("POST", path_for("/v1/egress/session/", sid), json_body=body)
        return Policy.from_dict(data)

    def get_session(self, session_id: Optional[str] = None) -> Policy:
        """The policy set on a session (``GET /v1/egress/session/{id}``).

        Raises :class:`~egressd.PolicyNotSetError` when the session has none (it then runs
        under its VM's policy or the default: see :meth:`effective`), and
        :class:`~egressd.NoSessionError` when ``session_id`` is ``None`` and the client has no
        session yet: a read creates none.
        """
        sid = self._client._session_or_existing(session_id, "get_session")
        return Policy.from_dict(self._http.request("GET", path_for("/v1/egress/session/", sid)))

    def clear_session(self, session_id: Optional[str] = None) -> None:
        """Remove a session's policy (``DELETE /v1/egress/session/{id}``).

        Raises :class:`~egressd.PolicyNotSetError` when none is set, and
        :class:`~egressd.NoSessionError` when the client has no session to clear.
        """
        sid = self._client._session_or_existing(session_id, "clear_session")
        self._http.request("DELETE", path_for("/v1/egress/session/", sid))

    # -- VM policy ---------------------------------------------------------------------------

    def set_vm(
        self,
        vm_id: Optional[str] = None,
        allow_package_managers: bool = False,
        allow_http: bool = False,
        allow_https: bool = False,
        allowed_domains: Optional[Iterable[str]] = None,
        allowed_cidrs: Optional[Iterable[str]] = None,
        denied_domains: Optional[Iterable[str]] = None,
        mode: str = "enforce",
        http_rules: Optional[Iterable[Mapping[str, Any]]] = None,
        allowed_tcp: Optional[Iterable[str]] = None,
    ) -> Policy:
        """Set a VM's policy (``POST /v1/egress/vm/{id}``) and return it as stored.

        It holds for every session of the VM, now and later; where a session has its own
        policy too, a connection must pass both. Arguments as :meth:`set_session`; ``vm_id``
        is the client's current VM when ``None``.
        """
        body = policy_body(
            allow_package_managers, allow_http, allow_https, allowed_domains, allowed_cidrs, denied_domains, mode,
            http_rules, allowed_tcp,
        )
        vid = self._client._vm_or_current(vm_id)
        return Policy.from_dict(self._vm_request("POST", vid, body))

    def get_vm(self, vm_id: Optional[str] = None) -> Policy:
        """The policy set on a VM (``GET /v1/egress/vm/{id}``); raises
        :class:`~egressd.PolicyNotSetError` when none is set, :class:`~egressd.NoVMError` when
        ``vm_id`` is ``None`` and the client has no VM yet."""
        vid = self._client._vm_or_existing(vm_id, "get_vm")
        return Policy.from_dict(self._vm_request("GET", vid))

    def clear_vm(self, vm_id: Optional[str] = None) -> None:
        """Remove a VM's policy (``DELETE /v1/egress/vm/{id}``)."""
        vid = self._client._vm_or_existing(vm_id, "clear_vm")
        self._vm_request("DELETE", vid)

    def _vm_request(self, method: str, vm_id: str, body: Any = None) -> Any:
        """A request on a VM's policy; a VM that does not exist is told how to create."""
        try:
            return self._http.request(method, path_for("/v1/egress/vm/", vm_id), json_body=body)
        except NotFoundError as err:
            if err.code != "not_found":
                raise  # policy_not_set: the VM is there
            raise NotFoundError(
                f"{err.message}; create it first with client.vms.create({vm_id!r}) "
                f"(or egressctl vm create --id {vm_id}), or leave vm_id out to use the "
                "client's current VM",
                code=err.code,
                field=err.field,
                status=err.status,
                body=err.body,
            ) from err

    # -- what applies --------------------------------------------------------------------------

    def effective(self, session_id: Optional[str] = None) -> Effective:
        """The policy that applies to a session's traffic (``GET .../effective``): its own AND
        its VM's, or the operator's default when neither is set, with the layer each part
        comes from."""
        sid = self._client._session_or_existing(session_id, "effective")
        return Effective.from_dict(
            self._http.request("GET", path_for("/v1/egress/session/", sid, "/effective"))
        )

    def check(
        self,
        url: Optional[str] = None,
        host: Optional[str] = None,
        port: Optional[int] = None,
        ip: Optional[str] = None,
        transport: Optional[str] = None,
        dns_query: Optional[str] = None,
        qtype: Optional[str] = None,
        resolve: bool = False,
        session_id: Optional[str] = None,
        method: Optional[str] = None,
    ) -> CheckResult:
        """The decision the gateway would take for a session, without any traffic.

        Give one of: ``url`` (and ``method``, upper case, ``"GET"`` when left out: it matters
        for domains that ``http_rules`` name); ``host`` and ``port``; ``ip``, ``port`` and
        ``transport`` (``"tcp"`` or ``"udp"``); ``dns_query`` and ``qtype`` (``"A"``, ...).
        ``host`` and ``port`` judge TCP to a name on any port 1-65535: the web rules on 80 and
        443, ``allowed_tcp`` on every port (``check(host="github.com", port=22)``).
        A name is judged as a name, with no lookup, unless ``resolve=True``: egressd then
        looks it up as the gateway would and judges each address too (``result.addresses``).

        A deny is a result (``result.allowed`` is False), not an error; errors are for
        requests egressd cannot judge (:class:`~egressd.BadRequestError`).
        """
        body: Dict[str, Any] = {
            k: v
            for k, v in (
                ("url", url),
                ("method", method),
                ("host", host),
                ("ip", ip),
                ("port", port),
                ("transport", transport),
                ("dns_query", dns_query),
                ("qtype", qtype),
            )
            if v is not None
        }
        if resolve:
            body["resolve"] = True
        sid = self._client._session_or_existing(session_id, "check")
        return CheckResult.from_dict(
            self._http.request("POST", path_for("/v1/egress/session/", sid, "/check"), json_body=body)
        )

    # -- decision records ----------------------------------------------------------------------

    def events(
        self,
        vm_id: Optional[str] = None,
        session_id: Optional[str] = None,
        decision: Optional[str] = None,
        kind: Optional[str] = None,
        since: Since = None,
        limit: Optional[int] = None,
    ) -> List[Event]:
        """The gateway's buffered decision records of this key's tenant, oldest first.

        Every filter left ``None`` matches everything (this does not default to the current
        session: pass ``session_id=client.session_id`` for that).

        Args:
            vm_id, session_id: only this VM's or session's records.
            decision: ``"allow"`` or ``"deny"``.
            kind: ``"connect"``, ``"request"``, ``"dns"`` or ``"close"``.
            since: a datetime (records at or after it) or a record's ``seq`` (records after
                it), to page forward; without it, the newest ``limit`` records.
            limit: how many at most (the server's default is 100, its maximum 10,000).
        """
        query = self._events_query(vm_id, session_id, decision, kind, since, limit)
        data = self._http.request("GET", "/v1/egress/events", query=query)
        return [Event.from_dict(e) for e in (data or {}).get("events") or []]

    def follow_events(
        self,
        vm_id: Optional[str] = None,
        session_id: Optional[str] = None,
        decision: Optional[str] = None,
        kind: Optional[str] = None,
        since: Since = None,
        limit: Optional[int] = None,
        *,
        idle_timeout: float = 45.0,
        give_up_after: float = _FOLLOW_GIVE_UP_AFTER,
        max_reconnects: Optional[int] = None,
    ) -> Iterator[Event]:
        """Yield decision records as they happen (``follow=true``, a Server-Sent Events stream).

        First come the buffered records that match (the newest ``limit``; ``limit=0`` for
        none), then new ones, for as long as the caller keeps iterating: leave the loop (or
        ``close()`` the generator) to end the stream. Filters are those of :meth:`events`.

        A stream that breaks, ends, or stays silent longer than ``idle_timeout`` seconds
        (egressd sends a heartbeat every 15 s) is reopened after the last record yielded, as
        a browser's EventSource would, waiting 0.25 s and then twice as long each time, up to
        5 s: a restart of egressd is ridden out. Once the stream has stayed broken for
        ``give_up_after`` seconds (a minute), or after ``max_reconnects`` failed attempts in a
        row when that is given, the last :class:`~egressd.EgressdConnectionError` is raised.
        API errors (a bad filter, a revoked key, too many streams) are raised at once.
        """
        query: Dict[str, Any] = self._events_query(vm_id, session_id, decision, kind, since, limit)
        query["follow"] = True
        last_id: Optional[str] = None
        failures = 0
        broken_since: Optional[float] = None
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else None
            cause: Exception
            try:
                resp = self._http.open(
                    "GET",
                    "/v1/egress/events",
                    query=query,
                    headers=headers,
                    accept="text/event-stream",
                    timeout=idle_timeout,
                )
            except EgressdConnectionError as err:
                cause = err
            else:
                ctype = resp.headers.get("Content-Type", "")
                if not ctype.startswith("text/event-stream"):
                    resp.close()
                    raise EgressdError(
                        f"GET /v1/egress/events answered {resp.status} with Content-Type {ctype!r}, "
                        "not an event stream",
                        status=resp.status,
                    )
                cause = EgressdConnectionError("egressd ended the event stream")
                with resp:
                    try:
                        for sse in _sse.parse(resp):
                            if sse.event != "decision":
                                continue
                            event = Event.from_dict(json.loads(sse.data))
                            if sse.id:
                                last_id = sse.id
                            failures, broken_since = 0, None
                            yield event
                    except (OSError, http.client.HTTPException) as err:
                        cause = EgressdConnectionError(f"reading the event stream: {err or type(err).__name__}")
            now = time.monotonic()
            if broken_since is None:
                broken_since = now
            if (max_reconnects is not None and failures >= max_reconnects) or now - broken_since >= give_up_after:
                raise cause
            time.sleep(min(_FOLLOW_FIRST_WAIT * 2**failures, _FOLLOW_LONGEST_WAIT))
            failures += 1

    @staticmethod
    def _events_query(
        vm_id: Optional[str],
        session_id: Optional[str],
        decision: Optional[str],
        kind: Optional[str],
        since: Since,
        limit: Optional[int],
    ) -> Dict[str, Any]:
        return {
            "vm_id": vm_id,
            "session_id": session_id,
            "decision": decision,
            "kind": kind,
            "since": _since(since),
            "limit": limit,
        }

    # -- the preset ----------------------------------------------------------------------------

    def package_managers(self) -> Dict[str, List[str]]:
        """The package-manager preset in force: registry hosts by manager (``"pip"``, ...)."""
        data = self._http.request("GET", "/v1/egress/package-managers")
        return {name: list(hosts) for name, hosts in ((data or {}).get("managers") or {}).items()}

    # -- suggestions ---------------------------------------------------------------------------

    def session_suggestion(self, session_id: Optional[str] = None, since: Since = None) -> Suggestion:
        """What to add to a session's policy so that the denials it caused would have been
        allowed (``GET /v1/egress/session/{id}/suggestion``), from the recorded decisions.

        ``since`` is a datetime or a record's ``seq``: only decisions from there are read.
        Apply it with :meth:`apply_suggestion` (when ``changed`` is true). Monitor mode plus a
        suggestion is how a sandbox's allowlist is learnt.
        """
        sid = self._client._session_or_existing(session_id, "session_suggestion")
        data = self._http.request(
            "GET", path_for("/v1/egress/session/", sid, "/suggestion"), query={"since": _since(since)}
        )
        return Suggestion.from_dict(data)

    def vm_suggestion(self, vm_id: Optional[str] = None, since: Since = None) -> Suggestion:
        """The same for a VM's policy (``GET /v1/egress/vm/{id}/suggestion``), from the
        decisions of all its sessions."""
        vid = self._client._vm_or_existing(vm_id, "vm_suggestion")
        data = self._http.request("GET", path_for("/v1/egress/vm/", vid, "/suggestion"), query={"since": _since(since)})
        return Suggestion.from_dict(data)

    def apply_suggestion(self, suggestion: Suggestion) -> Optional[Policy]:
        """Set a suggestion's merged policy on its session or VM and return it as stored;
        ``None`` (and nothing is set) when the suggestion changes nothing."""
        if not suggestion.changed or suggestion.policy is None:
            return None
        body = suggestion.policy.policy_dict()
        if suggestion.scope == "vm":
            return Policy.from_dict(self._vm_request("POST", suggestion.id, body))
        data = self._http.request("POST", path_for("/v1/egress/session/", suggestion.id), json_body=body)
        return Policy.from_dict(data)
