"""Grants: ``client.grants`` (DESIGN §2.8).

A grant adds entries to one layer, a session's or a VM's, until it expires: ``domains`` to
its ``allowed_domains``, ``tcp`` to its ``allowed_tcp``, ``cidrs`` to its ``allowed_cidrs``.
Web ports follow the layer's flags (a grant never turns one on), and a grant never loosens
another layer: grant on the layer that denied. At expiry egressd cuts what only the grant
allowed, as it does when a policy is tightened.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ._http import Transport, path_for
from .models import Model, _list, parse_time

__all__ = ["Grant", "Grants", "MAX_GRANT_TTL_SECONDS"]

#: The longest a grant may live (24 hours); the shortest is one second.
MAX_GRANT_TTL_SECONDS = 86400


@dataclass(frozen=True)
class Grant(Model):
    """A grant as egressd answers it.

    Attributes:
        id: ``gr_`` and 20 random characters.
        scope, scope_id: ``"session"`` or ``"vm"``, and that object's ID.
        domains, tcp, cidrs: the entries, normalised.
        note: the note given, for people.
        created_at, expires_at: when it was made and when it ends.
        warnings: in the answer to ``create`` only: when the grant adds less than it seems to
            (a layer without a policy, web flags off).
    """

    id: str = ""
    scope: str = ""
    scope_id: str = ""
    domains: List[str] = field(default_factory=list)
    tcp: List[str] = field(default_factory=list)
    cidrs: List[str] = field(default_factory=list)
    note: str = ""
    created_at: Optional[_dt.datetime] = None
    expires_at: Optional[_dt.datetime] = None
    warnings: List[str] = field(default_factory=list)

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        for name in ("domains", "tcp", "cidrs", "warnings"):
            out[name] = _list(data.get(name))
        out["created_at"] = parse_time(data.get("created_at"))
        out["expires_at"] = parse_time(data.get("expires_at"))
        return out


def _entries(v: Optional[Iterable[str]]) -> List[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]  # a lone string is one entry, not a list of characters
    return list(v)


def _ttl(ttl: Union[int, _dt.timedelta]) -> int:
    if isinstance(ttl, _dt.timedelta):
        secs = ttl.total_seconds()
        if secs != int(secs):
            raise ValueError(f"ttl {ttl} is not a whole number of seconds")
        return int(secs)
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"ttl must be seconds (int) or a timedelta, not {type(ttl).__name__}")
    return ttl


def _target(session_id: Optional[str], vm_id: Optional[str]) -> Tuple[str, str]:
    if (session_id is None) == (vm_id is None):
        raise ValueError("give exactly one of session_id and vm_id")
    if session_id is not None:
        return "session", session_id
    assert vm_id is not None
    return "vm", vm_id


class Grants:
    """Grants on sessions and VMs. Reached as ``client.grants``::

        g = client.grants.create(session_id=sid, tcp=["github.com:22"], ttl=600, note="clone")
        client.grants.list(session_id=sid)
        client.grants.revoke(g.id, session_id=sid)
    """

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def create(
        self,
        *,
        session_id: Optional[str] = None,
        vm_id: Optional[str] = None,
        domains: Optional[Iterable[str]] = None,
        tcp: Optional[Iterable[str]] = None,
        cidrs: Optional[Iterable[str]] = None,
        ttl: Union[int, _dt.timedelta],
        note: str = "",
    ) -> Grant:
        """Add a grant to a session's or VM's layer (``POST .../grants``), answered once
        enforced. ``ttl`` is seconds (1 to 86400) or a ``timedelta``; at least one entry.
        Bad input raises :class:`~egressd.BadRequestError` naming the field (``ttl_seconds``,
        ``tcp[0]``...); another tenant's object :class:`~egressd.NotFoundError`."""
        scope, oid = _target(session_id, vm_id)
        body: Dict[str, Any] = {"ttl_seconds": _ttl(ttl)}
        for name, v in (("domains", domains), ("tcp", tcp), ("cidrs", cidrs)):
            if v is not None:
                body[name] = _entries(v)
        if note:
            body["note"] = note
        data = self._http.request("POST", path_for(f"/v1/egress/{scope}/", oid, "/grants"), json_body=body)
        return Grant.from_dict(data)

    def list(self, *, session_id: Optional[str] = None, vm_id: Optional[str] = None) -> List[Grant]:
        """The active grants of a session or VM, oldest first."""
        scope, oid = _target(session_id, vm_id)
        data = self._http.request("GET", path_for(f"/v1/egress/{scope}/", oid, "/grants"))
        return [Grant.from_dict(g) for g in (data or {}).get("grants") or []]

    def revoke(self, grant_id: str, *, session_id: Optional[str] = None, vm_id: Optional[str] = None) -> None:
        """End a grant now (``DELETE .../grants/{grant_id}``): what only it allowed is cut."""
        scope, oid = _target(session_id, vm_id)
        self._http.request("DELETE", path_for(f"/v1/egress/{scope}/", oid, "/grants/", grant_id))
