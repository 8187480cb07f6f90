"""The client: ``Client(api_key, base_url=...)``, with a current session."""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ._http import USER_AGENT, QueryValue, Transport
from .egress import Egress
from .errors import NoSessionError, NotFoundError, NoVMError
from .models import Policy, Session
from .resources import VMs, APIKeys, Nodes, Sessions
from .secrets import Secrets
from .grants import Grants

__all__ = ["Client", "DEFAULT_BASE_URL"]

#: Where egressd's API listens by default.
DEFAULT_BASE_URL = "http://127.0.0.1:8470"


class Client:
    """A client of one egressd API, shaped like the hosted product's.

    Args:
        api_key: the API key (``<data-dir>/admin.key`` on a fresh install, or one made with
            ``client.api_keys.create``); ``EGRESSD_API_KEY`` when ``None``. Without either,
            only :meth:`health` and :meth:`ready` work; every other call raises
            :class:`~egressd.UnauthorizedError`.
        base_url: the API's URL; a path prefix is kept (egressd behind a reverse proxy).
            ``EGRESSD_URL`` when ``None``, and :data:`DEFAULT_BASE_URL` without either.
        session_id: a current session to start with.
        vm_id: a current VM to start with: the session the client creates goes on it.
        timeout: seconds for connecting and for each read of every request.
        auth_header: ``"bearer"`` (``Authorization: Bearer``, the default) or ``"x-api-key"``.

    So ``Client()`` is a client of the egressd that ``EGRESSD_URL`` and ``EGRESSD_API_KEY``
    name, as for ``egressctl``.

    **The current session.** Like the hosted product's client, this one has a current
    session: the first session-scoped *write* made without a ``session_id``
    (``egress.set_session``) creates a VM (unless the client has a ``vm_id``) and a session on
    it, and every later call uses them. They are :attr:`session_id`, :attr:`vm_id` and
    :attr:`proxy_url`, the proxy URL the sandbox's HTTP clients should use. A *read* without a
    session (``get_session``, ``effective``, ``check``, ``clear_session``) creates nothing: it
    raises :class:`~egressd.NoSessionError`. VM-scoped calls without a ``vm_id`` use the
    current VM: ``set_vm`` creates one (without a session) when there is none, ``get_vm`` and
    ``clear_vm`` raise :class:`~egressd.NoVMError`.

    Namespaces: :attr:`egress` (policies, checks, events), :attr:`vms`, :attr:`sessions`,
    :attr:`secrets`, :attr:`api_keys` and :attr:`nodes`; :meth:`ca_pem` is the interception
    CA's certificate. The hosted product's top-level names are here too:
    :meth:`set_session_egress`, :meth:`get_session_egress`, :meth:`set_vm_egress` and
    :meth:`get_vm_egress`.

    A client may be shared between threads; creating the current session is done once.
    Nothing outside the standard library is used.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        session_id: Optional[str] = None,
        vm_id: Optional[str] = None,
        timeout: float = 30,
        *,
        auth_header: str = "bearer",
        user_agent: str = USER_AGENT,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("EGRESSD_API_KEY") or None
        if base_url is None:
            base_url = os.environ.get("EGRESSD_URL") or DEFAULT_BASE_URL
        self._http = Transport(base_url, api_key, timeout=timeout, auth_header=auth_header, user_agent=user_agent)
        self._lock = threading.RLock()
        self._session_id = session_id
        self._vm_id = vm_id
        self._proxy_url: Optional[str] = None
        self._socks_url: Optional[str] = None
        #: VMs: ``create``, ``list``, ``get``, ``delete``.
        self.vms = VMs(self._http)
        #: Sessions: ``create``, ``list``, ``get``, ``delete``.
        self.sessions = Sessions(self._http)
        #: API keys (admin keys only): ``create``, ``list``, ``delete``.
        self.api_keys = APIKeys(self._http)
        #: The fleet's nodes (admin keys only): ``list``.
        self.nodes = Nodes(self._http)
        #: Secrets: ``create``, ``list``, ``get``, ``rotate``, ``set_domains``, ``delete``.
        self.secrets = Secrets(self._http)
        #: Grants on sessions and VMs: ``create``, ``list``, ``revoke``.
        self.grants = Grants(self._http)
        #: Egress policies, checks and decision records.
        self.egress = Egress(self)

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, session_id={self._session_id!r}, vm_id={self._vm_id!r})"

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._http.base_url

    # -- the current session ------------------------------------------------------------------

    @property
    def session_id(self) -> Optional[str]:
        """The current session's ID, ``None`` until one is given or created."""
        return self._session_id

    @property
    def vm_id(self) -> Optional[str]:
        """The current VM's ID, ``None`` until one is given or created."""
        return self._vm_id

    @property
    def proxy_url(self) -> Optional[str]:
        """The current session's proxy URL (``http://<session_id>:<token>@host:port``), for the
        sandbox's ``HTTP_PROXY``/``HTTPS_PROXY``. Known only for a session this client created
        (egressd shows it once); ``None`` otherwise."""
        return self._proxy_url

    @property
    def socks_url(self) -> Optional[str]:
        """The current session's SOCKS5 URL (``socks5h://<session_id>:<token>@host:port``),
        when egressd runs its SOCKS5 listener (``--socks-listen``) and this client created the
        session; ``None`` otherwise."""
        return self._socks_url

    def ensure_vm(self) -> str:
        """The current VM's ID: the one given, the current session's, or a new VM's."""
        with self._lock:
            if self._vm_id is None:
                if self._session_id is not None:
                    self._vm_id = self.sessions.get(self._session_id).vm_id
                else:
                    self._vm_id = self.vms.create().vm_id
            return self._vm_id

    def ensure_session(self) -> str:
        """The current session's ID, creating it (and a VM, unless there is one) if needed."""
        with self._lock:
            if self._session_id is None:
                self._adopt(self.sessions.create(self.ensure_vm()))
            assert self._session_id is not None
            return self._session_id

    def new_session(self) -> Session:
        """Start a new session on the current VM (creating the VM if needed) and make it the
        current one. The previous session is left open: end it with :meth:`end_session` first
        if it is no longer needed."""
        with self._lock:
            session = self.sessions.create(self.ensure_vm())
            self._adopt(session)
            return session

    def end_session(self, delete_vm: bool = False) -> None:
        """End the current session (its policy goes with it) and forget it; with
        ``delete_vm=True`` delete the current VM too. The next session-scoped call starts a
        new session. A session or VM that is gone already (deleted elsewhere) is just
        forgotten; other errors are raised and the client keeps what it could not end."""
        with self._lock:
            if self._session_id is not None:
                try:
                    self.sessions.delete(self._session_id)
                except NotFoundError:
                    pass
                self._session_id = self._proxy_url = self._socks_url = None
            if delete_vm and self._vm_id is not None:
                try:
                    self.vms.delete(self._vm_id)
                except NotFoundError:
                    pass
                self._vm_id = None

    def _adopt(self, session: Session) -> None:
        self._session_id = session.session_id
        self._vm_id = session.vm_id
        self._proxy_url = session.proxy_url
        self._socks_url = session.socks_url

    def _session_or_current(self, session_id: Optional[str]) -> str:
        """For a write: the given session, or the current one, created if needed."""
        return self.ensure_session() if session_id is None else session_id

    def _session_or_existing(self, session_id: Optional[str], call: str) -> str:
        """For a read: the given session, or the current one; a read creates nothing."""
        if session_id is not None:
            return session_id
        with self._lock:
            if self._session_id is None:
                raise NoSessionError(
                    f"{call}: this client has no session yet, and a read creates none. Set a policy "
                    "first (client.egress.set_session(...) creates a VM and a session), or pass "
                    "session_id=... here or to Client(...)"
                )
            return self._session_id

    def _vm_or_current(self, vm_id: Optional[str]) -> str:
        """For a write: the given VM, or the current one, created if needed."""
        return self.ensure_vm() if vm_id is None else vm_id

    def _vm_or_existing(self, vm_id: Optional[str], call: str) -> str:
        """For a read: the given VM, the current one, or the current session's; a read creates
        nothing."""
        if vm_id is not None:
            return vm_id
        with self._lock:
            if self._vm_id is None and self._session_id is None:
                raise NoVMError(
                    f"{call}: this client has no VM yet, and a read creates none. Pass vm_id=... "
                    "here or to Client(...), or set a policy first (client.egress.set_vm(...) "
                    "creates a VM)"
                )
            return self.ensure_vm()  # the current session's VM: looked up, not created

    # -- the hosted product's top-level names ---------------------------------------------------

    def set_session_egress(
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
        """Alias of :meth:`Egress.set_session <egressd.egress.Egress.set_session>`."""
        return self.egress.set_session(
            allow_package_managers, allow_http, allow_https, allowed_domains, allowed_cidrs,
            denied_domains, mode, session_id, http_rules=http_rules, allowed_tcp=allowed_tcp,
        )

    def get_session_egress(self, session_id: Optional[str] = None) -> Policy:
        """Alias of :meth:`Egress.get_session <egressd.egress.Egress.get_session>`."""
        return self.egress.get_session(session_id)

    def set_vm_egress(
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
        """Alias of :meth:`Egress.set_vm <egressd.egress.Egress.set_vm>`."""
        return self.egress.set_vm(
            vm_id, allow_package_managers, allow_http, allow_https, allowed_domains, allowed_cidrs,
            denied_domains, mode, http_rules=http_rules, allowed_tcp=allowed_tcp,
        )

    def get_vm_egress(self, vm_id: Optional[str] = None) -> Policy:
        """Alias of :meth:`Egress.get_vm <egressd.egress.Egress.get_vm>`."""
        return self.egress.get_vm(vm_id)

    # -- the rest --------------------------------------------------------------------------------

    def package_managers(self) -> Dict[str, List[str]]:
        """The package-manager preset in force: registry hosts by manager."""
        return self.egress.package_managers()

    def ca_pem(self) -> str:
        """``GET /v1/ca.pem``: the interception CA's certificate, PEM (no key needed).

        The sandbox adds it to the roots it trusts (``SSL_CERT_FILE``,
        ``REQUESTS_CA_BUNDLE``, ``NODE_EXTRA_CA_CERTS``...), so that the certificates egressd
        presents for the domains it intercepts (named by ``http_rules`` or a secret) verify.
        """
        resp = self._http.open("GET", "/v1/ca.pem", accept="application/x-pem-file")
        with resp:
            return resp.read(1 << 20).decode("ascii")

    def health(self) -> Dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` while egressd runs (no key needed); raises
        :class:`~egressd.EgressdConnectionError` when it does not answer."""
        return self._http.request("GET", "/healthz") or {}

    def ready(self) -> Dict[str, Any]:
        """``GET /readyz``: ``{"status": "ok"}`` when egressd and its store answer; raises
        :class:`~egressd.UnavailableError` (with the reason) when the store does not."""
        return self._http.request("GET", "/readyz") or {}

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, QueryValue]] = None,
        json: Any = None,
        data: Optional[bytes] = None,
        content_type: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Any:
        """Send any request to the API and return its decoded JSON answer (``None`` for 204).

        The low-level way to reach an endpoint this client has no method for. ``path`` is
        taken as it is (escape IDs yourself); ``json`` is sent as ``application/json``, or
        ``data`` as raw bytes with ``content_type``. Errors raise as for every other call.
        """
        return self._http.request(
            method, path, query=query, json_body=json, data=data, content_type=content_type, headers=headers
        )
