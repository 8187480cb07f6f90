"""Typed views of the API's answers.

Every model is a frozen dataclass built from the JSON object the API sent. Fields are read as
attributes (``policy.allow_https``, ``vm.created_at``); the wire object itself is kept, so a
model also reads like a dict (``policy["allow_https"]``, ``"warnings" in policy``) and
:meth:`Model.to_dict` returns it as sent (times as RFC 3339 strings), including any field that
a newer egressd adds and this client does not know yet.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Type, TypeVar

__all__ = [
    "POLICY_FIELDS",
    "Model",
    "HTTPRule",
    "PolicyFields",
    "Policy",
    "Network",
    "VM",
    "Session",
    "CheckResult",
    "AddressResult",
    "EffectiveValue",
    "EffectiveDomains",
    "EffectiveList",
    "EffectiveLayer",
    "EffectiveHTTPRule",
    "EffectiveHTTPRules",
    "Effective",
    "Event",
    "APIKey",
    "Node",
    "parse_time",
    "format_time",
]

#: The policy fields of DESIGN §2.1, in the API's order.
POLICY_FIELDS: Tuple[str, ...] = (
    "allow_package_managers",
    "allow_http",
    "allow_https",
    "allowed_domains",
    "allowed_cidrs",
    "denied_domains",
    "mode",
    "allowed_tcp",
    "http_rules",
)

_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """Parse an RFC 3339 time as Go writes it (nanoseconds, ``Z``) into an aware datetime.

    Fractions past microseconds are truncated. ``None`` or ``""`` give ``None``; a string
    that is not RFC 3339 raises :class:`ValueError`.
    """
    if not value:
        return None
    m = _TIME.match(value)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    date, clock, frac, zone = m.groups()
    micros = int(((frac or ".")[1:] + "000000")[:6])
    dt = datetime.fromisoformat(f"{date}T{clock}")
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return dt.replace(microsecond=micros, tzinfo=tz)


def format_time(value: datetime) -> str:
    """Format a datetime as RFC 3339 in UTC, for query parameters; a naive one is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


M = TypeVar("M", bound="Model")


@dataclass(frozen=True)
class Model(Mapping[str, Any]):
    """Base of every model: attribute access to typed fields, dict access to the wire object."""

    def _wire(self) -> Dict[str, Any]:
        raw = self.__dict__.get("_raw")
        if raw is None:
            # Made in Python rather than decoded: build the wire form from the fields.
            raw = {
                ("from" if f.name == "from_" else f.name): _to_json(getattr(self, f.name))
                for f in fields(self)
            }
            object.__setattr__(self, "_raw", raw)
        return raw

    def to_dict(self) -> Dict[str, Any]:
        """The object as the API sent it (a deep copy: JSON types, times as strings)."""
        return copy.deepcopy(self._wire())

    def __getitem__(self, key: str) -> Any:
        return self._wire()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._wire())

    def __len__(self) -> int:
        return len(self._wire())

    @classmethod
    def from_dict(cls: Type[M], data: Mapping[str, Any]) -> M:
        """Build the model from a decoded JSON object; unknown keys are kept for to_dict()."""
        obj = cls(**cls._convert(data))
        object.__setattr__(obj, "_raw", dict(data))
        return obj

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        """The constructor arguments for data; subclasses convert nested objects and times."""
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in data.items() if k in names}


def _to_json(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _list(value: Any) -> List[Any]:
    return list(value) if value else []


@dataclass(frozen=True)
class HTTPRule(Model):
    """One entry of ``http_rules``: the requests allowed to the hosts ``domain`` matches.

    Attributes:
        domain: a host name or ``*.parent`` wildcard (normalised: punycode, lower case).
        methods: upper-case HTTP methods; empty means any method.
        paths: path prefixes starting with ``/``, matched on segment boundaries against the
            decoded, dot-segment-resolved path (never the query); empty means any path.
    """

    domain: str = ""
    methods: List[str] = field(default_factory=list)
    paths: List[str] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        for name in ("methods", "paths"):
            out[name] = _list(out.get(name))
        return out


def _rules(value: Any) -> List[HTTPRule]:
    return [r if isinstance(r, HTTPRule) else HTTPRule.from_dict(r) for r in value or []]


@dataclass(frozen=True)
class PolicyFields(Model):
    """The policy fields of DESIGN §2.1, each with its default.

    Attributes:
        allow_package_managers: allow the package registries of the preset on 80 and 443.
        allow_http: allow outbound HTTP (TCP 80).
        allow_https: allow outbound HTTPS (TCP 443).
        allowed_domains: when non-empty, HTTP/HTTPS only to these hosts (``*.x`` for subdomains).
        allowed_cidrs: ranges allowed on every port and protocol.
        denied_domains: hosts never allowed, whatever else allows them.
        mode: ``"enforce"`` or ``"monitor"`` (record would-be denials, block nothing).
        allowed_tcp: ``"name:port"`` endpoints for TCP that is not web traffic, e.g.
            ``"github.com:22"``, ``"*.db.example.com:5432"``, whatever the web flags say.
        http_rules: method and path rules per domain (:class:`HTTPRule`); a domain named
            here is intercepted and each request to it decided.
    """

    allow_package_managers: bool = False
    allow_http: bool = False
    allow_https: bool = False
    allowed_domains: List[str] = field(default_factory=list)
    allowed_cidrs: List[str] = field(default_factory=list)
    denied_domains: List[str] = field(default_factory=list)
    mode: str = "enforce"
    allowed_tcp: List[str] = field(default_factory=list)
    http_rules: List[HTTPRule] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        for name in ("allowed_domains", "allowed_cidrs", "denied_domains", "allowed_tcp"):
            if name in out:
                out[name] = _list(out[name])
        if "http_rules" in out:
            out["http_rules"] = _rules(out["http_rules"])
        return out

    def policy_dict(self) -> Dict[str, Any]:
        """Only the §2.1 fields, as a body for setting this policy elsewhere (JSON types:
        ``http_rules`` as a list of dicts)."""
        return {name: _to_json(copy.deepcopy(getattr(self, name))) for name in POLICY_FIELDS}


@dataclass(frozen=True)
class Policy(PolicyFields):
    """A stored policy, as ``POST``/``GET /v1/egress/{session,vm}/{id}`` answer it.

    Attributes (besides the §2.1 fields of :class:`PolicyFields`):
        scope: ``"session"`` or ``"vm"``.
        id: the session's or VM's ID.
        revision: the store-wide revision of this change (larger is newer).
        updated_at: when it was set.
        warnings: sentences about a policy that was accepted but probably not meant as it is.
    """

    scope: str = ""
    id: str = ""
    revision: int = 0
    updated_at: Optional[datetime] = None
    warnings: List[str] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["updated_at"] = parse_time(data.get("updated_at"))
        out["warnings"] = _list(data.get("warnings"))
        return out


@dataclass(frozen=True)
class Network(Model):
    """How a VM is attached: mode ``"none"`` (explicit proxy only) or ``"netns"``.

    A ``"netns"`` network belongs to one transparent gateway ``node`` (the one named on
    create, or one whose labels match ``node_selector``, or the server's choice), which makes
    the namespace on its host. ``state`` is ``"ready"`` (``netns``, ``path``, ``address`` and
    ``gateway`` are set), ``"pending"`` (the node has not made it yet), ``"failed"``
    (``error`` says why), ``"deleting"``, or ``"node_down"`` while its node is silent; ``""``
    for mode ``"none"``.
    """

    mode: str = "none"
    node: str = ""
    node_selector: Dict[str, str] = field(default_factory=dict)
    state: str = ""
    error: str = ""
    netns: str = ""
    path: str = ""
    address: str = ""
    gateway: str = ""

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["node_selector"] = dict(data.get("node_selector") or {})
        return out


@dataclass(frozen=True)
class VM(Model):
    """One sandbox. ``egress_policy`` is its VM policy, ``None`` when none is set."""

    vm_id: str = ""
    network: Network = field(default_factory=Network)
    sessions: int = 0
    created_at: Optional[datetime] = None
    egress_policy: Optional[Policy] = None

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["network"] = Network.from_dict(data.get("network") or {})
        out["created_at"] = parse_time(data.get("created_at"))
        if data.get("egress_policy"):
            out["egress_policy"] = Policy.from_dict(data["egress_policy"])
        return out


@dataclass(frozen=True)
class Session(Model):
    """One use of a VM. ``proxy_url`` (``http://<session_id>:<token>@host:port``) is set only
    in the answer that creates the session: keep it. ``socks_url``
    (``socks5h://<session_id>:<token>@host:port``) is set there too when egressd runs its
    SOCKS5 listener (``--socks-listen``), for ssh, git and database clients."""

    session_id: str = ""
    vm_id: str = ""
    proxy_url: Optional[str] = None
    socks_url: Optional[str] = None
    created_at: Optional[datetime] = None

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["proxy_url"] = data.get("proxy_url") or None
        out["socks_url"] = data.get("socks_url") or None
        out["created_at"] = parse_time(data.get("created_at"))
        return out


@dataclass(frozen=True)
class AddressResult(Model):
    """The decision for one resolved address of a check with ``resolve=True``."""

    ip: str = ""
    decision: str = ""
    reason: str = ""
    rule: str = ""
    layer: str = ""
    would_deny: bool = False


@dataclass(frozen=True)
class CheckResult(Model):
    """The decision the gateway would take.

    Attributes:
        decision: ``"allow"`` or ``"deny"``.
        reason: why, in words.
        rule: the rule that decided.
        layer: ``"session"``, ``"vm"``, ``"default"`` or ``"hard"`` (built-in denials).
        would_deny: in monitor mode, ``decision`` is ``"allow"`` and this says whether an
            enforcing policy would have denied it.
        addresses: with ``resolve=True``, the decision for each address the name resolved to.
    """

    decision: str = ""
    reason: str = ""
    rule: str = ""
    layer: str = ""
    would_deny: bool = False
    addresses: List[AddressResult] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        """Whether the gateway would let it through (``decision == "allow"``)."""
        return self.decision == "allow"

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["addresses"] = [AddressResult.from_dict(a) for a in data.get("addresses") or []]
        return out


@dataclass(frozen=True)
class EffectiveValue(Model):
    """An effective flag or mode (``value``) and the layers it comes from (``from_``)."""

    value: Any = None
    from_: List[str] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        return {"value": data.get("value"), "from_": _list(data.get("from"))}


@dataclass(frozen=True)
class EffectiveList(Model):
    """An effective list (``value``) and the layers it comes from (``from_``)."""

    value: List[str] = field(default_factory=list)
    from_: List[str] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        return {"value": _list(data.get("value")), "from_": _list(data.get("from"))}


@dataclass(frozen=True)
class EffectiveDomains(EffectiveList):
    """The effective ``allowed_domains``: ``hosts`` is ``"any"`` (no layer lists domains),
    ``"listed"`` (only what ``value`` matches) or ``"none"`` (the lists have nothing in common)."""

    hosts: str = ""

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["hosts"] = data.get("hosts") or ""
        return out


@dataclass(frozen=True)
class EffectiveLayer(Model):
    """One layer that is set (``"session"``, ``"vm"`` or ``"default"``) with its whole policy."""

    layer: str = ""
    revision: int = 0
    updated_at: Optional[datetime] = None
    policy: PolicyFields = field(default_factory=PolicyFields)
    #: The layer's active grants (:class:`~egressd.Grant`); the effective values include them.
    grants: List[Any] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        from .grants import Grant  # grants imports this module

        out = super()._convert(data)
        out["updated_at"] = parse_time(data.get("updated_at"))
        out["policy"] = PolicyFields.from_dict(data.get("policy") or {})
        out["grants"] = [Grant.from_dict(g) for g in data.get("grants") or []]
        return out


@dataclass(frozen=True)
class EffectiveHTTPRule(HTTPRule):
    """An ``http_rules`` entry of one layer: ``layer`` and its ``index`` in that layer's policy
    (the index a decision's ``rule`` names, as in ``http_rules[2] ...``)."""

    layer: str = ""
    index: int = 0


@dataclass(frozen=True)
class EffectiveHTTPRules(Model):
    """The ``http_rules`` of the layers, not merged: a request to a host must match an entry of
    every layer whose entries name the host. ``intercepted`` lists the domains they name."""

    intercepted: List[str] = field(default_factory=list)
    rules: List[EffectiveHTTPRule] = field(default_factory=list)
    from_: List[str] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        return {
            "intercepted": _list(data.get("intercepted")),
            "rules": [EffectiveHTTPRule.from_dict(r) for r in data.get("rules") or []],
            "from_": _list(data.get("from")),
        }


@dataclass(frozen=True)
class Effective(Model):
    """What applies to a session's traffic: its policy AND its VM's, or the default.

    Flags are ANDed, ``allowed_domains``, ``allowed_cidrs`` and ``allowed_tcp`` intersected,
    ``denied_domains`` joined; each says in ``from_`` which layers it comes from. ``notes`` says in words what the
    values alone do not.
    """

    session_id: str = ""
    vm_id: str = ""
    layers: List[EffectiveLayer] = field(default_factory=list)
    mode: EffectiveValue = field(default_factory=EffectiveValue)
    allow_package_managers: EffectiveValue = field(default_factory=EffectiveValue)
    allow_http: EffectiveValue = field(default_factory=EffectiveValue)
    allow_https: EffectiveValue = field(default_factory=EffectiveValue)
    allowed_domains: EffectiveDomains = field(default_factory=EffectiveDomains)
    allowed_cidrs: EffectiveList = field(default_factory=EffectiveList)
    denied_domains: EffectiveList = field(default_factory=EffectiveList)
    allowed_tcp: EffectiveList = field(default_factory=EffectiveList)
    http_rules: EffectiveHTTPRules = field(default_factory=EffectiveHTTPRules)
    package_managers: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["layers"] = [EffectiveLayer.from_dict(x) for x in data.get("layers") or []]
        for name in ("mode", "allow_package_managers", "allow_http", "allow_https"):
            out[name] = EffectiveValue.from_dict(data.get(name) or {})
        out["allowed_domains"] = EffectiveDomains.from_dict(data.get("allowed_domains") or {})
        for name in ("allowed_cidrs", "denied_domains", "allowed_tcp"):
            out[name] = EffectiveList.from_dict(data.get(name) or {})
        out["http_rules"] = EffectiveHTTPRules.from_dict(data.get("http_rules") or {})
        out["package_managers"] = _list(data.get("package_managers"))
        out["notes"] = _list(data.get("notes"))
        return out


@dataclass(frozen=True)
class Event(Model):
    """One decision record of the gateway (or, ``kind == "close"``, one closed connection).

    ``kind`` is ``"connect"``, ``"request"``, ``"dns"`` or ``"close"``; ``seq`` increases from
    one record to the next and can be passed as ``since`` to page forward.
    """

    seq: int = 0
    time: Optional[datetime] = None
    kind: str = ""
    tenant: str = ""
    vm_id: str = ""
    session_id: str = ""
    decision: str = ""
    would_deny: bool = False
    reason: str = ""
    rule: str = ""
    layer: str = ""
    mode: str = ""
    transport: str = ""
    host: str = ""
    ip: str = ""
    port: int = 0
    qtype: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    duration_ms: float = 0.0
    close_reason: str = ""
    dial_ms: float = 0.0
    #: A request inside an intercepted connection: method, decided path (no query), the
    #: status sent, and the names of the secrets applied (never a value).
    method: str = ""
    path: str = ""
    status: int = 0
    secrets: List[str] = field(default_factory=list)
    #: ``"fast_path"`` when the kernel forwards the connection after the gateway verified
    #: its ClientHello from its packets (``--fast-path``); ``""`` for the proxies'.
    via: str = ""

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["time"] = parse_time(data.get("time"))
        out["secrets"] = _list(data.get("secrets"))
        return out


@dataclass(frozen=True)
class APIKey(Model):
    """An API key. ``key``, the secret, is set only in the answer that creates it."""

    id: str = ""
    tenant: str = ""
    admin: bool = False
    key: Optional[str] = None
    created_at: Optional[datetime] = None

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["key"] = data.get("key") or None
        out["created_at"] = parse_time(data.get("created_at"))
        return out


@dataclass(frozen=True)
class Node(Model):
    """One egressd process of the fleet, as ``GET /v1/nodes`` lists it (admin keys only).

    Attributes:
        id: its ``--node-id``.
        roles: what it serves: ``"api"``, ``"gateway"``, and ``"transparent"`` when it can
            own netns VMs.
        address: its API's address.
        labels: its ``--node-label`` values, which a VM's ``node_selector`` matches.
        sandbox_cidr: a transparent node's ``--sandbox-cidr``, ``""`` for the others.
        last_heartbeat: when it last heartbeated, by the store's clock.
        revision: the store revision its gateway's view has applied.
        vm_count: the netns VMs the store places on it.
        state: ``"up"``, or ``"down"`` once it has not heartbeated for 10 s; a down node keeps
            its VMs (a namespace cannot move hosts).
    """

    id: str = ""
    roles: List[str] = field(default_factory=list)
    address: str = ""
    labels: Dict[str, str] = field(default_factory=dict)
    sandbox_cidr: str = ""
    last_heartbeat: Optional[datetime] = None
    revision: int = 0
    vm_count: int = 0
    state: str = ""

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["roles"] = _list(data.get("roles"))
        out["labels"] = dict(data.get("labels") or {})
        out["last_heartbeat"] = parse_time(data.get("last_heartbeat"))
        return out


@dataclass(frozen=True)
class SuggestedEntry(Model):
    """One thing a suggestion adds: a flag name (``"allow_https"``), an ``allowed_domains``
    entry or an ``allowed_tcp`` entry, with how many recorded decisions it covers. ``names``
    lists, for a wildcard that collapses siblings (``"*.example.com"``), the names denied
    under it."""

    entry: str = ""
    covers: int = 0
    names: List[str] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["names"] = _list(data.get("names"))
        return out


@dataclass(frozen=True)
class NotAllowable(Model):
    """A group of denials that no entry lifts (hard denials, ``denied_domains``, IP literals,
    private addresses...): the reason code, the destination, how many, and ``explanation``,
    which says why and what a person could do instead."""

    reason: str = ""
    layer: str = ""
    kind: str = ""
    host: str = ""
    ip: str = ""
    port: int = 0
    transport: str = ""
    rule: str = ""
    covers: int = 0
    explanation: str = ""


@dataclass(frozen=True)
class LayerCount(Model):
    """A number of denials that another layer caused (``layer``: ``"session"``, ``"vm"``)."""

    layer: str = ""
    covers: int = 0


@dataclass(frozen=True)
class Suggestion(Model):
    """The answer of ``GET /v1/egress/{session,vm}/{id}/suggestion`` (DESIGN §2.9): the
    smallest change to that layer's policy that would have allowed the denials it caused.

    Attributes:
        scope, id: the layer: ``"session"`` or ``"vm"``, and its ID; ``vm_id``, a session's VM.
        policy_set, revision: whether the layer has a policy, and its revision (0 when none).
        decisions: denials and would-be denials read; ``truncated`` when there were more.
        flags, allowed_domains, allowed_tcp: what to add (:class:`SuggestedEntry`).
        not_allowable: what no entry lifts (:class:`NotAllowable`).
        other_layers: denials of the other layer (:class:`LayerCount`): its own suggestion.
        already_allowed: denials that the policy as it is now allows.
        notes: what a reader could miss.
        changed: whether ``policy`` differs from the layer's policy.
        policy: the merged policy (:class:`PolicyFields`), ``None`` when nothing can be
            suggested for this layer.
    """

    scope: str = ""
    id: str = ""
    vm_id: str = ""
    policy_set: bool = False
    revision: int = 0
    decisions: int = 0
    truncated: bool = False
    flags: List[SuggestedEntry] = field(default_factory=list)
    allowed_domains: List[SuggestedEntry] = field(default_factory=list)
    allowed_tcp: List[SuggestedEntry] = field(default_factory=list)
    not_allowable: List[NotAllowable] = field(default_factory=list)
    other_layers: List[LayerCount] = field(default_factory=list)
    already_allowed: int = 0
    notes: List[str] = field(default_factory=list)
    changed: bool = False
    policy: Optional[PolicyFields] = None

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        for name in ("flags", "allowed_domains", "allowed_tcp"):
            out[name] = [SuggestedEntry.from_dict(x) for x in data.get(name) or []]
        out["not_allowable"] = [NotAllowable.from_dict(x) for x in data.get("not_allowable") or []]
        out["other_layers"] = [LayerCount.from_dict(x) for x in data.get("other_layers") or []]
        out["notes"] = _list(data.get("notes"))
        p = data.get("policy")
        out["policy"] = PolicyFields.from_dict(p) if p else None
        return out
