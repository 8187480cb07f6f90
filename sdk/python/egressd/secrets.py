"""Secrets: ``client.secrets`` (DESIGN §2.7).

A secret is a value (an API key, a token) that the sandbox never holds: it gets the secret's
``placeholder`` instead, and the gateway puts the value on intercepted requests to the
secret's domains in its place. The value is write-only: egressd stores it encrypted and never
answers it, so no model here has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ._http import Transport, path_for
from .models import Model, _list, parse_time

__all__ = ["Secret", "Secrets"]


@dataclass(frozen=True)
class Secret(Model):
    """A secret as egressd answers it: never with its value.

    Attributes:
        name: 1 to 63 of ``A-Z a-z 0-9 _ -``, starting with a letter or digit.
        domains: the hosts the value may go to, normalised (``"api.example.com"``,
            ``"*.example.com"``).
        placeholder: ``egressd-secret-<name>-<24 random characters>``: what the sandbox uses
            where it would use the value. It stays the same when the value is rotated.
        created_at, updated_at: when it was created and last changed.
    """

    name: str = ""
    domains: List[str] = field(default_factory=list)
    placeholder: str = ""
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None

    @classmethod
    def _convert(cls, data: Mapping[str, Any]) -> Dict[str, Any]:
        out = super()._convert(data)
        out["domains"] = _list(data.get("domains"))
        out["created_at"] = parse_time(data.get("created_at"))
        out["updated_at"] = parse_time(data.get("updated_at"))
        return out


def _domains(domains: Iterable[str]) -> List[str]:
    if isinstance(domains, str):
        # A lone string would be sent as a list of its characters' worth of nonsense.
        return [domains]
    return list(domains)


class Secrets:
    """The tenant's secrets (``/v1/secrets``). Reached as ``client.secrets``.

    Values go in and never come out::

        s = client.secrets.create(name="openai", value=os.environ["OPENAI_API_KEY"],
                                  domains=["api.openai.com"])
        sandbox_env = {"OPENAI_API_KEY": s.placeholder}
    """

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def create(self, name: str, value: str, domains: Iterable[str]) -> Secret:
        """Store a secret (``POST /v1/secrets``) and return it with its placeholder.

        Args:
            name: 1 to 63 of ``A-Z a-z 0-9 _ -``, starting with a letter or digit; a name the
                tenant uses already raises :class:`~egressd.ConflictError`.
            value: what the gateway puts on requests in place of the placeholder; at most 16
                KiB, no control characters and no white space at either end (it goes into
                HTTP header values).
            domains: the hosts it may go to, as in ``allowed_domains`` (wildcards allowed);
                at least one. A request that carries the placeholder to any other host is
                refused.

        Bad input raises :class:`~egressd.BadRequestError` naming the field; its message
        never holds the value.
        """
        body = {"name": name, "value": value, "domains": _domains(domains)}
        return Secret.from_dict(self._http.request("POST", "/v1/secrets", json_body=body))

    def list(self) -> List[Secret]:
        """Every secret of the tenant, by name, without values."""
        data = self._http.request("GET", "/v1/secrets")
        return [Secret.from_dict(s) for s in (data or {}).get("secrets") or []]

    def get(self, name: str) -> Secret:
        """One secret, without its value; :class:`~egressd.NotFoundError` when there is none."""
        return Secret.from_dict(self._http.request("GET", path_for("/v1/secrets/", name)))

    def rotate(self, name: str, value: str, domains: Optional[Iterable[str]] = None) -> Secret:
        """Give a secret a new value (``PUT /v1/secrets/{name}``); with ``domains``, replace
        its domains too. The placeholder stays, so sandboxes need no change; the next
        intercepted request gets the new value."""
        body: Dict[str, Any] = {"value": value}
        if domains is not None:
            body["domains"] = _domains(domains)
        return Secret.from_dict(self._http.request("PUT", path_for("/v1/secrets/", name), json_body=body))

    def set_domains(self, name: str, domains: Iterable[str]) -> Secret:
        """Replace a secret's domains and keep its value and placeholder."""
        body = {"domains": _domains(domains)}
        return Secret.from_dict(self._http.request("PUT", path_for("/v1/secrets/", name), json_body=body))

    def delete(self, name: str) -> None:
        """Delete a secret: its placeholder is replaced no more, and a request that still
        carries it is refused."""
        self._http.request("DELETE", path_for("/v1/secrets/", name))
