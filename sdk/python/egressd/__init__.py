"""egressd: the Python client of egressd, an egress firewall for code sandboxes.

Standard library only, Python 3.9+::

    from egressd import Client

    client = Client()  # EGRESSD_API_KEY and EGRESSD_URL, as for egressctl
    client.egress.set_session(allow_package_managers=True, allow_https=True,
                              allowed_domains=["api.github.com"])
    print(client.session_id, client.proxy_url)

See :class:`Client` for the current session, :mod:`egressd.errors` for the exceptions and
:mod:`egressd.models` for the answers.
"""

from .client import DEFAULT_BASE_URL, Client
from .egress import Egress
from .errors import (
    APIError,
    BadRequestError,
    ConflictError,
    EgressdConnectionError,
    EgressdError,
    ForbiddenError,
    InvalidPolicyError,
    MethodNotAllowedError,
    NoSessionError,
    NotFoundError,
    NoVMError,
    PayloadTooLargeError,
    PolicyNotSetError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from .models import (
    POLICY_FIELDS,
    VM,
    AddressResult,
    APIKey,
    CheckResult,
    Effective,
    EffectiveHTTPRule,
    EffectiveHTTPRules,
    Event,
    HTTPRule,
    Network,
    Node,
    Policy,
    PolicyFields,
    Session,
    LayerCount,
    NotAllowable,
    SuggestedEntry,
    Suggestion,
)
from .resources import APIKeys, Nodes, Sessions, VMs
from .secrets import Secret, Secrets
from .grants import Grant, Grants

#: The hosted product's name of the client: ``from egressd import InstaVM`` lets code written
#: for it run with one import changed.
InstaVM = Client

__version__ = "0.1.0"

__all__ = [
    "Client",
    "InstaVM",
    "DEFAULT_BASE_URL",
    "Egress",
    "VMs",
    "Sessions",
    "APIKeys",
    "Nodes",
    "Secrets",
    "Grants",
    # errors
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
    # models
    "POLICY_FIELDS",
    "PolicyFields",
    "Policy",
    "HTTPRule",
    "Network",
    "VM",
    "Session",
    "CheckResult",
    "AddressResult",
    "Effective",
    "EffectiveHTTPRules",
    "EffectiveHTTPRule",
    "Event",
    "APIKey",
    "Node",
    "Secret",
    "Grant",
    "Suggestion",
    "SuggestedEntry",
    "NotAllowable",
    "LayerCount",
]
