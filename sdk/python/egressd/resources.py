"""VMs, sessions, API keys and nodes: ``client.vms``, ``client.sessions``, ``client.api_keys``,
``client.nodes``."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

from ._http import Transport, path_for
from .models import VM, APIKey, Node, PolicyFields, Session

__all__ = ["VMs", "Sessions", "APIKeys", "Nodes"]


class VMs:
    """Sandboxes (``/v1/vms``). Reached as ``client.vms``."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def create(
        self,
        vm_id: Optional[str] = None,
        egress_policy: Union[PolicyFields, Mapping[str, Any], None] = None,
        network: Union[str, Mapping[str, Any], None] = None,
    ) -> VM:
        """Create a VM (``POST /v1/vms``) and return it.

        Args:
            vm_id: 1 to 63 of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit; egressd
                picks ``vm_<hex>`` when ``None``. A taken one raises
                :class:`~egressd.ConflictError`.
            egress_policy: a VM policy to set at once, as a mapping of the §2.1 fields or a
                policy model (its §2.1 fields are used). An invalid one creates nothing and
                raises :class:`~egressd.InvalidPolicyError` naming ``egress_policy.<field>``.
            network: ``"none"`` (the default: the explicit proxy only) or ``"netns"`` (a
                network namespace behind the transparent gateway of a node run with
                ``--transparent``), or a mapping ``{"mode": "netns", "node": ...,
                "node_selector": {"zone": "eu-1"}}``, sent as it is: ``node`` names the node
                and ``node_selector`` keeps to nodes with those labels (see
                :class:`~egressd.Network`).

        A netns VM is answered once its node has made the network (``vm.network.state`` is
        ``"ready"``), or after 10 s with ``"pending"`` (HTTP 202): the node makes it later,
        and :meth:`get` shows when it is ready or ``"failed"``. A network the node could not
        make raises :class:`~egressd.UnavailableError` with the node's reason; no VM is left.
        """
        body: Dict[str, Any] = {}
        if vm_id is not None:
            body["vm_id"] = vm_id
        if egress_policy is not None:
            if isinstance(egress_policy, PolicyFields):
                body["egress_policy"] = egress_policy.policy_dict()
            else:
                body["egress_policy"] = dict(egress_policy)
        if network is not None:
            body["network"] = {"mode": network} if isinstance(network, str) else dict(network)
        return VM.from_dict(self._http.request("POST", "/v1/vms", json_body=body))

    def list(self) -> List[VM]:
        """Every VM of this key's tenant, oldest first, each with its number of open sessions."""
        data = self._http.request("GET", "/v1/vms")
        return [VM.from_dict(v) for v in (data or {}).get("vms") or []]

    def get(self, vm_id: str) -> VM:
        """One VM, with its ``egress_policy`` when one is set; :class:`~egressd.NotFoundError`
        when there is no such VM (or it is another tenant's)."""
        return VM.from_dict(self._http.request("GET", path_for("/v1/vms/", vm_id)))

    def delete(self, vm_id: str) -> Optional[VM]:
        """Delete a VM: its sessions end and its and their policies go.

        Returns ``None`` once the VM is gone. A netns VM's network is removed by its node: if
        that takes over 10 s (or the node is down), egressd answers 202 and this returns the
        VM with ``network.state == "deleting"``; it takes no sessions or policies, and
        :meth:`get` raises :class:`~egressd.NotFoundError` once its node has removed it.
        """
        data = self._http.request("DELETE", path_for("/v1/vms/", vm_id))
        return VM.from_dict(data) if data else None


class Sessions:
    """Sessions (``/v1/sessions``). Reached as ``client.sessions``."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def create(self, vm_id: str) -> Session:
        """Start a session on a VM (``POST /v1/sessions``).

        The answer's ``proxy_url`` (``http://<session_id>:<token>@host:port``) is what the
        sandbox sets as ``HTTP_PROXY``/``HTTPS_PROXY``; it is shown only now: keep it.
        """
        return Session.from_dict(self._http.request("POST", "/v1/sessions", json_body={"vm_id": vm_id}))

    def get(self, session_id: str) -> Session:
        """One session (without ``proxy_url``)."""
        return Session.from_dict(self._http.request("GET", path_for("/v1/sessions/", session_id)))

    def delete(self, session_id: str) -> None:
        """End a session; its policy goes with it."""
        self._http.request("DELETE", path_for("/v1/sessions/", session_id))

    def list(self, vm_id: Optional[str] = None) -> List[Session]:
        """The open sessions of one VM, or of the whole tenant when ``vm_id`` is ``None``."""
        data = self._http.request("GET", "/v1/sessions", query={"vm_id": vm_id})
        return [Session.from_dict(s) for s in (data or {}).get("sessions") or []]


class APIKeys:
    """API keys (``/v1/api-keys``), for admin keys only: a tenant key gets
    :class:`~egressd.ForbiddenError`. Reached as ``client.api_keys``."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def create(self, tenant: str, admin: bool = False) -> APIKey:
        """Create a key for a tenant; the answer's ``key`` is the secret, shown this once."""
        body: Dict[str, Any] = {"tenant": tenant}
        if admin:
            body["admin"] = True
        return APIKey.from_dict(self._http.request("POST", "/v1/api-keys", json_body=body))

    def list(self) -> List[APIKey]:
        """Every key, without secrets."""
        data = self._http.request("GET", "/v1/api-keys")
        return [APIKey.from_dict(k) for k in (data or {}).get("keys") or []]

    def delete(self, key_id: str) -> None:
        """Revoke a key by its ``id``; a key cannot delete itself (:class:`~egressd.ConflictError`)."""
        self._http.request("DELETE", path_for("/v1/api-keys/", key_id))


class Nodes:
    """The fleet's egressd processes (``/v1/nodes``), for admin keys only: a tenant key gets
    :class:`~egressd.ForbiddenError`. Reached as ``client.nodes``."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def list(self) -> List[Node]:
        """Every node that has registered, up and down, by ID."""
        data = self._http.request("GET", "/v1/nodes")
        return [Node.from_dict(n) for n in (data or {}).get("nodes") or []]
