"""The client against a real egressd: every call, the current session, and every error code
that a request can provoke."""

from __future__ import annotations

import datetime
import os
import unittest
from typing import Optional
from unittest import mock

import egressd_harness as harness

import egressd
from egressd import (
    BadRequestError,
    Client,
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
    UnauthorizedError,
    UnsupportedMediaTypeError,
)

SERVER: Optional[harness.EgressdServer] = None

#: The node ID and labels the test's egressd registers with (GET /v1/nodes).
NODE_ID = "sdk-test-node"


def setUpModule() -> None:
    global SERVER
    SERVER = harness.EgressdServer("--node-id", NODE_ID, "--node-label", "tier=test").start()


def tearDownModule() -> None:
    if SERVER is not None:
        SERVER.stop()


def admin(**kwargs) -> Client:  # type: ignore[no-untyped-def]
    assert SERVER is not None
    return SERVER.client(**kwargs)


_counter = 0


def unique(prefix: str) -> str:
    """A vm_id or tenant no other test uses."""
    global _counter
    _counter += 1
    return f"{prefix}-{_counter}"


class ConstructionTest(unittest.TestCase):
    def test_url_and_key_fall_back_on_the_environment(self) -> None:
        assert SERVER is not None
        env = {"EGRESSD_URL": SERVER.url, "EGRESSD_API_KEY": SERVER.admin_key}
        with mock.patch.dict(os.environ, env):
            for name, make in {
                "Client()": lambda: Client(),
                "Client(api_key)": lambda: Client(SERVER.admin_key),
                "Client(base_url=...)": lambda: Client(base_url=SERVER.url),
            }.items():
                with self.subTest(name):
                    c = make()
                    self.assertEqual(c.base_url, SERVER.url)
                    c.vms.list()  # authenticated with the key
            # Arguments win over the environment.
            with self.assertRaises(UnauthorizedError):
                Client("egk_not-a-key").vms.list()
            self.assertEqual(Client(base_url="http://127.0.0.1:9/").base_url, "http://127.0.0.1:9")

    def test_without_the_environment(self) -> None:
        bare = {k: v for k, v in os.environ.items() if k not in ("EGRESSD_URL", "EGRESSD_API_KEY")}
        with mock.patch.dict(os.environ, bare, clear=True):
            c = Client()
            self.assertEqual(c.base_url, egressd.DEFAULT_BASE_URL)
            self.assertIsNone(c._http.api_key)

    def test_instavm_is_the_client(self) -> None:
        from egressd import InstaVM

        self.assertIs(InstaVM, Client)
        assert SERVER is not None
        c = InstaVM(SERVER.admin_key, base_url=SERVER.url)
        c.egress.set_session(allow_https=True)  # the hosted product's first call
        self.assertTrue(c.egress.get_session().allow_https)


class CurrentSessionTest(unittest.TestCase):
    def test_first_session_call_creates_a_vm_and_a_session(self) -> None:
        c = admin()
        self.assertIsNone(c.session_id)
        self.assertIsNone(c.vm_id)
        self.assertIsNone(c.proxy_url)

        policy = c.egress.set_session(allow_https=True)

        self.assertTrue(c.session_id and c.session_id.startswith("ses_"), c.session_id)
        self.assertTrue(c.vm_id and c.vm_id.startswith("vm_"), c.vm_id)
        assert SERVER is not None and c.proxy_url is not None
        self.assertTrue(c.proxy_url.startswith(f"http://{c.session_id}:"), c.proxy_url)
        self.assertTrue(c.proxy_url.endswith("@" + SERVER.proxy_addr), c.proxy_url)
        self.assertEqual(policy.scope, "session")
        self.assertEqual(policy.id, c.session_id)
        session = c.sessions.get(c.session_id)
        self.assertEqual(session.vm_id, c.vm_id)
        self.assertEqual(c.vms.get(c.vm_id).sessions, 1)

        # Later calls use the same session: no new VM or session.
        first = (c.session_id, c.vm_id, c.proxy_url)
        c.egress.get_session()
        c.egress.effective()
        c.egress.check(url="https://example.com/")
        self.assertEqual((c.session_id, c.vm_id, c.proxy_url), first)
        self.assertEqual(len(c.sessions.list(vm_id=c.vm_id)), 1)

    def test_a_session_scoped_write_creates_the_session(self) -> None:
        calls = {
            "set_session": lambda c: c.egress.set_session(),
            "set_session_egress": lambda c: c.set_session_egress(),
            "ensure_session": lambda c: c.ensure_session(),
        }
        for name, call in calls.items():
            with self.subTest(call=name):
                c = admin()
                call(c)
                self.assertIsNotNone(c.session_id)
                self.assertIsNotNone(c.proxy_url)
                self.assertEqual(c.sessions.get(c.session_id).vm_id, c.vm_id)

    def test_a_read_without_a_session_creates_nothing(self) -> None:
        reads = {
            "get_session": lambda c: c.egress.get_session(),
            "get_session_egress": lambda c: c.get_session_egress(),
            "clear_session": lambda c: c.egress.clear_session(),
            "effective": lambda c: c.egress.effective(),
            "check": lambda c: c.egress.check(url="https://example.com/"),
        }
        for name, call in reads.items():
            with self.subTest(call=name):
                c = admin()
                before = (len(c.vms.list()), len(c.sessions.list()))
                with self.assertRaises(NoSessionError) as ctx:
                    call(c)
                self.assertIn("no session yet", str(ctx.exception))
                self.assertIn("set_session", str(ctx.exception))  # says how to get one
                self.assertEqual((c.session_id, c.vm_id), (None, None))
                self.assertEqual((len(c.vms.list()), len(c.sessions.list())), before)

    def test_a_vm_read_without_a_vm_creates_nothing(self) -> None:
        for name, call in {"get_vm": lambda c: c.egress.get_vm(), "clear_vm": lambda c: c.egress.clear_vm()}.items():
            with self.subTest(call=name):
                c = admin()
                before = len(c.vms.list())
                with self.assertRaisesRegex(NoVMError, "no VM yet"):
                    call(c)
                self.assertIsNone(c.vm_id)
                self.assertEqual(len(c.vms.list()), before)

    def test_set_vm_on_a_missing_vm_says_how_to_create_it(self) -> None:
        c = admin()
        with self.assertRaises(NotFoundError) as ctx:
            c.egress.set_vm("no-such-vm", allow_https=True)
        self.assertNotIsInstance(ctx.exception, PolicyNotSetError)
        self.assertEqual((ctx.exception.status, ctx.exception.code), (404, "not_found"))
        self.assertIn("client.vms.create('no-such-vm')", str(ctx.exception))
        with self.assertRaisesRegex(NotFoundError, "vms.create"):
            c.egress.get_vm("no-such-vm")
        # A VM without a policy is there: no advice to create it.
        vm = c.vms.create()
        with self.assertRaises(PolicyNotSetError) as ctx:
            c.egress.get_vm(vm.vm_id)
        self.assertNotIn("vms.create", str(ctx.exception))

    def test_a_given_vm_id_gets_the_session(self) -> None:
        vm_id = unique("given-vm")
        admin().vms.create(vm_id)
        c = admin(vm_id=vm_id)
        self.assertEqual(c.vm_id, vm_id)
        self.assertIsNone(c.session_id)
        c.egress.set_session(allow_http=True)
        self.assertEqual(c.vm_id, vm_id)
        self.assertEqual(c.sessions.get(c.session_id).vm_id, vm_id)
        self.assertEqual([s.session_id for s in c.sessions.list(vm_id)], [c.session_id])
        self.assertEqual(len(c.vms.list()), len({v.vm_id for v in c.vms.list()}))

    def test_a_given_session_id_is_used_and_its_vm_found(self) -> None:
        a = admin()
        vm = a.vms.create(unique("sess-vm"))
        session = a.sessions.create(vm.vm_id)
        c = admin(session_id=session.session_id)
        self.assertEqual(c.session_id, session.session_id)
        self.assertIsNone(c.vm_id)
        c.egress.set_session(allow_https=True)
        self.assertIsNone(c.vm_id)  # a session call needs no VM ID
        policy = c.egress.set_vm(allow_https=True, allowed_domains=["example.com"])
        self.assertEqual(c.vm_id, vm.vm_id)  # learnt from the session
        self.assertEqual(policy.id, vm.vm_id)
        self.assertIsNone(c.proxy_url)  # shown only at creation
        self.assertEqual(len(a.sessions.list(vm.vm_id)), 1)

    def test_a_vm_call_without_a_current_vm_creates_only_a_vm(self) -> None:
        c = admin()
        policy = c.egress.set_vm(allow_https=True)
        self.assertIsNotNone(c.vm_id)
        self.assertIsNone(c.session_id)
        self.assertEqual(policy.scope, "vm")
        self.assertEqual(c.sessions.list(c.vm_id), [])
        c.egress.set_session(allow_https=True)  # now the session goes on that VM
        self.assertEqual(c.sessions.get(c.session_id).vm_id, policy.id)

    def test_new_session_and_end_session(self) -> None:
        c = admin()
        first = c.ensure_session()
        second = c.new_session()
        self.assertNotEqual(first, second.session_id)
        self.assertEqual(c.session_id, second.session_id)
        self.assertEqual(c.proxy_url, second.proxy_url)
        self.assertEqual(second.vm_id, c.vm_id)
        c.sessions.delete(first)

        vm_id = c.vm_id
        c.end_session()
        self.assertIsNone(c.session_id)
        self.assertIsNone(c.proxy_url)
        self.assertEqual(c.vm_id, vm_id)
        with self.assertRaises(NotFoundError):
            c.sessions.get(second.session_id)

        c.ensure_session()
        c.end_session(delete_vm=True)
        self.assertIsNone(c.vm_id)
        with self.assertRaises(NotFoundError):
            c.vms.get(vm_id)
        c.end_session(delete_vm=True)  # nothing left: does nothing

        # Parts deleted elsewhere are just forgotten.
        c.ensure_session()
        c.vms.delete(c.vm_id)  # ends the session too
        c.end_session(delete_vm=True)
        self.assertEqual((c.session_id, c.vm_id), (None, None))

    def test_repr_hides_the_key(self) -> None:
        c = admin()
        self.assertNotIn(c._http.api_key, repr(c))
        self.assertIn(c.base_url, repr(c))


class PolicyTest(unittest.TestCase):
    def test_set_session_returns_the_stored_normalised_policy(self) -> None:
        c = admin()
        before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        p = c.egress.set_session(
            allow_package_managers=True,
            allow_https=True,
            allowed_domains=["API.Example.COM.", "*.Docs.Example.com", "bücher.example"],
            allowed_cidrs=["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"],
            denied_domains=["evil.example.com"],
        )
        self.assertIsInstance(p, egressd.Policy)
        self.assertTrue(p.allow_package_managers and p.allow_https and not p.allow_http)
        self.assertEqual(sorted(p.allowed_domains), ["*.docs.example.com", "api.example.com", "xn--bcher-kva.example"])
        self.assertEqual(sorted(p.allowed_cidrs), ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"])
        self.assertEqual(p.denied_domains, ["evil.example.com"])
        self.assertEqual(p.mode, "enforce")
        self.assertEqual(p.warnings, [])
        self.assertGreater(p.revision, 0)
        self.assertIsInstance(p.updated_at, datetime.datetime)
        assert p.updated_at is not None
        self.assertGreater(p.updated_at, before)
        # Dict-like too, and to_dict() is the wire object.
        self.assertTrue(p["allow_https"])
        self.assertIn("revision", p)
        d = p.to_dict()
        self.assertEqual(d["scope"], "session")
        self.assertIsInstance(d["updated_at"], str)
        self.assertEqual(egressd.Policy.from_dict(d), p)

        got = c.egress.get_session()
        self.assertEqual(got.policy_dict(), p.policy_dict())
        self.assertEqual(got.revision, p.revision)

    def test_setting_replaces_the_whole_policy(self) -> None:
        c = admin()
        c.egress.set_session(allow_http=True, allow_https=True, allowed_domains=["example.com"], mode="monitor")
        p = c.egress.set_session(allow_https=True)
        self.assertEqual(
            p.policy_dict(),
            {
                "allow_package_managers": False,
                "allow_http": False,
                "allow_https": True,
                "allowed_domains": [],
                "allowed_cidrs": [],
                "denied_domains": [],
                "mode": "enforce",
                "allowed_tcp": [],
                "http_rules": [],
            },
        )
        later = c.egress.set_session(allow_https=True)
        self.assertGreater(later.revision, p.revision)

    def test_warnings(self) -> None:
        p = admin().egress.set_session(allowed_domains=["example.com"])
        self.assertEqual(len(p.warnings), 1, p.warnings)
        self.assertIn("allowed_domains", p.warnings[0])

    def test_clear_session(self) -> None:
        c = admin()
        c.egress.set_session(allow_https=True)
        self.assertIsNone(c.egress.clear_session())
        with self.assertRaises(PolicyNotSetError) as ctx:
            c.egress.get_session()
        self.assertEqual(ctx.exception.status, 404)
        self.assertEqual(ctx.exception.code, "policy_not_set")
        self.assertIsInstance(ctx.exception, NotFoundError)
        with self.assertRaises(PolicyNotSetError):
            c.egress.clear_session()

    def test_explicit_session_id(self) -> None:
        a = admin()
        vm = a.vms.create()
        s = a.sessions.create(vm.vm_id)
        p = a.egress.set_session(allow_http=True, session_id=s.session_id)
        self.assertEqual(p.id, s.session_id)
        self.assertTrue(a.egress.get_session(s.session_id).allow_http)
        self.assertEqual(a.egress.effective(s.session_id).session_id, s.session_id)
        self.assertTrue(a.egress.check(url="http://example.com/", session_id=s.session_id).allowed)
        a.egress.clear_session(s.session_id)
        self.assertIsNone(a.session_id)  # none of this touched the current session

    def test_vm_policy(self) -> None:
        a = admin()
        vm = a.vms.create(unique("policy-vm"))
        p = a.egress.set_vm(vm.vm_id, allow_https=True, allowed_domains=["*.example.com"], mode="monitor")
        self.assertEqual((p.scope, p.id, p.mode), ("vm", vm.vm_id, "monitor"))
        got = a.egress.get_vm(vm.vm_id)
        self.assertEqual(got.policy_dict(), p.policy_dict())
        self.assertEqual(a.vms.get(vm.vm_id).egress_policy.policy_dict(), p.policy_dict())  # type: ignore[union-attr]
        a.egress.clear_vm(vm.vm_id)
        with self.assertRaises(PolicyNotSetError):
            a.egress.get_vm(vm.vm_id)
        self.assertIsNone(a.vms.get(vm.vm_id).egress_policy)
        self.assertIsNone(a.vm_id)

    def test_vm_calls_on_the_current_vm(self) -> None:
        c = admin()
        c.ensure_session()
        c.egress.set_vm(allow_http=True)
        self.assertTrue(c.egress.get_vm().allow_http)
        self.assertEqual(c.egress.get_vm().id, c.vm_id)
        c.egress.clear_vm()
        with self.assertRaises(PolicyNotSetError):
            c.egress.get_vm()

    def test_aliases(self) -> None:
        c = admin()
        p = c.set_session_egress(allow_package_managers=True, allow_https=True, allowed_domains=["example.com"])
        self.assertEqual(c.get_session_egress().policy_dict(), p.policy_dict())
        self.assertEqual(c.egress.get_session().revision, p.revision)
        v = c.set_vm_egress(allow_http=True)
        self.assertEqual(v.id, c.vm_id)
        self.assertEqual(c.get_vm_egress().policy_dict(), v.policy_dict())
        other = c.vms.create()
        c.set_vm_egress(other.vm_id, allowed_cidrs=["10.0.0.0/8"])
        self.assertEqual(c.get_vm_egress(other.vm_id).allowed_cidrs, ["10.0.0.0/8"])
        sid = c.sessions.create(other.vm_id).session_id
        c.set_session_egress(allow_http=True, session_id=sid)
        self.assertTrue(c.get_session_egress(sid).allow_http)

    def test_positional_arguments_follow_the_hosted_products_order(self) -> None:
        c = admin()
        p = c.egress.set_session(True, False, True, ["example.com"])
        self.assertEqual((p.allow_package_managers, p.allow_http, p.allow_https), (True, False, True))
        self.assertEqual(p.allowed_domains, ["example.com"])

    def test_argument_types_are_checked_before_sending(self) -> None:
        c = admin()
        with self.assertRaisesRegex(TypeError, "allowed_domains must be a list"):
            c.egress.set_session(allowed_domains="example.com")  # type: ignore[arg-type]
        with self.assertRaisesRegex(TypeError, r"allowed_cidrs\[1\]"):
            c.egress.set_session(allowed_cidrs=["10.0.0.0/8", 7])  # type: ignore[list-item]
        with self.assertRaisesRegex(TypeError, "allow_https"):
            c.egress.set_session(allow_https="yes")  # type: ignore[arg-type]
        self.assertIsNone(c.session_id)  # nothing was sent
        # Any iterable of strings will do.
        p = c.egress.set_session(allowed_domains=(d for d in ["example.com"]), allow_https=True)
        self.assertEqual(p.allowed_domains, ["example.com"])

    def test_effective(self) -> None:
        c = admin()
        c.ensure_session()
        default = c.egress.effective()
        self.assertEqual((default.session_id, default.vm_id), (c.session_id, c.vm_id))
        self.assertEqual([l.layer for l in default.layers], ["default"])
        self.assertFalse(default.allow_https.value)

        c.egress.set_vm(allow_https=True, allow_package_managers=True, allowed_domains=["*.example.com"])
        c.egress.set_session(allow_https=True, allow_http=True, allowed_cidrs=["10.0.0.0/8"])
        e = c.egress.effective()
        self.assertIsInstance(e, egressd.Effective)
        self.assertEqual([l.layer for l in e.layers], ["session", "vm"])
        self.assertTrue(e.layers[0].policy.allow_http)
        self.assertGreater(e.layers[1].revision, 0)
        self.assertIsInstance(e.layers[1].updated_at, datetime.datetime)
        self.assertEqual(e.mode.value, "enforce")
        self.assertEqual((e.allow_https.value, sorted(e.allow_https.from_)), (True, ["session", "vm"]))
        self.assertEqual((e.allow_http.value, e.allow_http.from_), (False, ["vm"]))
        self.assertFalse(e.allow_package_managers.value)
        self.assertEqual((e.allowed_domains.hosts, e.allowed_domains.value), ("listed", ["*.example.com"]))
        self.assertEqual(e.allowed_cidrs.value, [])
        self.assertTrue(e.notes)
        self.assertEqual(e["allow_http"]["from"], ["vm"])
        self.assertEqual(e.to_dict()["session_id"], c.session_id)

    def test_check(self) -> None:
        c = admin()
        c.egress.set_session(
            allow_https=True,
            allow_package_managers=True,
            allowed_domains=["api.example.com"],
            allowed_cidrs=["10.0.0.0/8"],
            denied_domains=["pypi.org"],
        )
        cases = [
            ({"url": "https://api.example.com/v1/"}, "allow"),
            ({"url": "http://api.example.com/"}, "deny"),
            ({"url": "https://other.example.com/"}, "deny"),
            ({"url": "https://files.pythonhosted.org/x"}, "allow"),  # the preset
            ({"url": "https://pypi.org/simple/"}, "deny"),  # denied_domains wins
            ({"host": "api.example.com", "port": 443}, "allow"),
            ({"host": "api.example.com", "port": 22}, "deny"),
            ({"ip": "10.1.2.3", "port": 5432, "transport": "tcp"}, "allow"),
            ({"ip": "10.1.2.3", "port": 53, "transport": "udp"}, "allow"),
            ({"ip": "192.0.2.1", "port": 5432, "transport": "tcp"}, "deny"),
            ({"ip": "169.254.169.254", "port": 80, "transport": "tcp"}, "deny"),
            ({"dns_query": "api.example.com", "qtype": "A"}, "allow"),
            ({"dns_query": "exfil.attacker.example", "qtype": "TXT"}, "deny"),
        ]
        for kwargs, want in cases:
            with self.subTest(**kwargs):
                r = c.egress.check(**kwargs)  # type: ignore[arg-type]
                self.assertIsInstance(r, egressd.CheckResult)
                self.assertEqual(r.decision, want, r)
                self.assertEqual(r.allowed, want == "allow")
                self.assertTrue(r.reason)
                self.assertIn(r.layer, ("session", "hard"))
                self.assertFalse(r.would_deny)
        self.assertEqual(c.egress.check(ip="169.254.169.254", port=80, transport="tcp").layer, "hard")
        # Positional: url first.
        self.assertTrue(c.egress.check("https://api.example.com/").allowed)

    def test_http_rules(self) -> None:
        c = admin()
        p = c.egress.set_session(
            allow_https=True,
            http_rules=[
                {"domain": "API.Example.com", "methods": ["POST", "GET"], "paths": ["/v1/", "/%7eme"]},
                {"domain": "*.example.org"},
            ],
        )
        self.assertEqual(len(p.http_rules), 2)
        r = p.http_rules[0]
        self.assertIsInstance(r, egressd.HTTPRule)
        self.assertEqual((r.domain, r.methods, r.paths), ("api.example.com", ["GET", "POST"], ["/v1/", "/~me"]))
        self.assertEqual((p.http_rules[1].methods, p.http_rules[1].paths), ([], []))
        # egressd intercepts: no warning that the hosts are unreachable.
        self.assertFalse(any("interception_unavailable" in w for w in p.warnings), p.warnings)
        got = c.egress.get_session()
        self.assertEqual(got.policy_dict(), p.policy_dict())
        # A policy read back can be set again as it is, rules included.
        again = c.egress.set_session(**{k: v for k, v in got.policy_dict().items()})
        self.assertEqual(again.policy_dict(), p.policy_dict())
        # The VM's rules, through the alias and the model type.
        v = c.set_vm_egress(allow_https=True, http_rules=[egressd.HTTPRule(domain="api.example.com", methods=["GET"])])
        self.assertEqual(v.http_rules[0].methods, ["GET"])

        e = c.egress.effective()
        self.assertEqual(e.http_rules.from_, ["session", "vm"])
        self.assertEqual(e.http_rules.intercepted, ["*.example.org", "api.example.com"])
        self.assertEqual([(x.layer, x.index) for x in e.http_rules.rules], [("session", 0), ("session", 1), ("vm", 0)])

        # check with a method: the entry that denies, or the one that allows.
        denied = c.egress.check(url="https://api.example.com/v1/models", method="POST")
        self.assertEqual((denied.decision, denied.reason, denied.layer), ("deny", "method_not_allowed", "vm"))
        self.assertEqual(c.egress.check(url="https://api.example.com/v1/%2e%2e/admin").reason, "path_not_allowed")
        self.assertEqual(c.egress.check(url="https://api.example.com/v1/models").reason, "http_rules")
        with self.assertRaises(BadRequestError) as ctx:
            c.egress.check(url="https://api.example.com/", method="get")
        self.assertEqual(ctx.exception.field, "method")

    def test_allowed_tcp(self) -> None:
        c = admin()
        p = c.egress.set_session(allowed_tcp=["GitHub.com:22", "github.com.:22", "*.DB.example.test:5432"], denied_domains=["bad.db.example.test"])
        self.assertEqual(p.allowed_tcp, ["*.db.example.test:5432", "github.com:22"])  # normalised, sorted, deduplicated
        got = c.egress.get_session()
        self.assertEqual(got.allowed_tcp, p.allowed_tcp)
        self.assertEqual(got.policy_dict(), p.policy_dict())
        # A policy read back can be set again as it is.
        self.assertEqual(c.egress.set_session(**got.policy_dict()).policy_dict(), p.policy_dict())
        # The VM's, through the alias: every layer must list an endpoint.
        v = c.set_vm_egress(allowed_tcp=["github.com:22", "git.corp.example:2222"])
        self.assertEqual(v.allowed_tcp, ["git.corp.example:2222", "github.com:22"])
        e = c.egress.effective()
        self.assertEqual(e.allowed_tcp.value, ["github.com:22"])
        self.assertEqual(e.allowed_tcp.from_, ["session", "vm"])

        for kwargs, decision, reason in [
            ({"host": "github.com", "port": 22}, "allow", "allowed_tcp"),
            ({"host": "GITHUB.com.", "port": 22}, "allow", "allowed_tcp"),
            ({"host": "github.com", "port": 23}, "deny", "port_not_allowed"),
            ({"host": "x.db.example.test", "port": 5432}, "deny", "port_not_allowed"),  # the VM does not list it
            ({"host": "git.corp.example", "port": 2222}, "deny", "port_not_allowed"),  # the session does not
            ({"host": "github.com", "port": 443}, "deny", "https_off"),
            ({"host": "140.82.112.3", "port": 22}, "deny", "ip_literal"),
            ({"ip": "140.82.112.3", "port": 22, "transport": "tcp"}, "deny", "port_not_allowed"),
            ({"dns_query": "github.com"}, "allow", "allowed_tcp"),
        ]:
            with self.subTest(**kwargs):
                r = c.egress.check(**kwargs)  # type: ignore[arg-type]
                self.assertEqual((r.decision, r.reason), (decision, reason), r)
        r = c.egress.check(host="github.com", port=22)
        self.assertEqual((r.rule, r.layer, r.allowed), ("allowed_tcp github.com:22", "session", True))
        c.set_vm_egress(allowed_tcp=["*.db.example.test:5432"])
        self.assertEqual(c.egress.check(host="bad.db.example.test", port=5432).reason, "denied_domain")
        for port in (0, 65536, -1):
            with self.subTest(port=port):
                with self.assertRaises(BadRequestError) as ctx:
                    c.egress.check(host="github.com", port=port)
                self.assertEqual(ctx.exception.field, "port")
        with self.assertRaises(BadRequestError) as ctx:
            c.egress.check(host="github.com")
        self.assertEqual(ctx.exception.field, "port")

    def test_allowed_tcp_errors_name_the_field(self) -> None:
        c = admin()
        c.ensure_session()
        for entries, field in [
            (["github.com"], "allowed_tcp[0]"),
            (["github.com:22", "github.com:0"], "allowed_tcp[1]"),
            (["github.com:22", "140.82.112.3:22"], "allowed_tcp[1]"),
            (["github.com:22-23"], "allowed_tcp[0]"),
            (["*:22"], "allowed_tcp[0]"),
        ]:
            with self.subTest(field=field, entries=entries):
                with self.assertRaises(InvalidPolicyError) as ctx:
                    c.egress.set_session(allowed_tcp=entries)
                self.assertEqual((ctx.exception.status, ctx.exception.field), (400, field))
        with self.assertRaises(InvalidPolicyError) as ctx:
            c.egress.set_vm(allowed_tcp=["github.com:65536"])
        self.assertEqual(ctx.exception.field, "allowed_tcp[0]")
        with self.assertRaises(InvalidPolicyError) as ctx:
            c.vms.create(egress_policy={"allowed_tcp": ["github.com"]})
        self.assertEqual(ctx.exception.field, "egress_policy.allowed_tcp[0]")
        # A single string is refused before sending: it is not a list of one entry.
        with self.assertRaises(TypeError):
            c.egress.set_session(allowed_tcp="github.com:22")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            c.egress.set_session(allowed_tcp=[("github.com", 22)])  # type: ignore[list-item]

    def test_http_rules_errors_name_the_field(self) -> None:
        c = admin()
        c.ensure_session()
        for rules, field in [
            ([{"domain": "api.example.com", "methods": ["get"]}], "http_rules[0].methods[0]"),
            ([{"domain": "api.example.com"}, {"domain": "b.example.com", "paths": ["v1/"]}], "http_rules[1].paths[0]"),
            ([{"domain": "api.example.com", "paths": ["/v1/?x=1"]}], "http_rules[0].paths[0]"),
            ([{"domain": "api.example.com", "method": ["GET"]}], "http_rules[0].method"),
        ]:
            with self.subTest(field=field):
                with self.assertRaises(InvalidPolicyError) as ctx:
                    c.egress.set_session(allow_https=True, http_rules=rules)
                self.assertEqual((ctx.exception.status, ctx.exception.field), (400, field))
        with self.assertRaises(InvalidPolicyError) as ctx:
            c.vms.create(egress_policy={"allow_https": True, "http_rules": [{"domain": "a.example", "methods": ["get"]}]})
        self.assertEqual(ctx.exception.field, "egress_policy.http_rules[0].methods[0]")

    def test_check_monitor_mode(self) -> None:
        c = admin()
        c.egress.set_session(mode="monitor")
        r = c.egress.check(url="https://example.com/")
        self.assertEqual((r.decision, r.would_deny, r.allowed), ("allow", True, True))

    def test_check_resolve(self) -> None:
        # localhost comes from the hosts file: no DNS query leaves the machine.
        try:
            with open("/etc/hosts", encoding="utf-8") as f:
                in_hosts = any("localhost" in line.split("#")[0].split()[1:] for line in f)
        except OSError:
            in_hosts = False
        if not in_hosts:
            self.skipTest("/etc/hosts does not name localhost: resolving it could query DNS")
        c = admin()
        c.egress.set_session(allow_https=True)
        by_name = c.egress.check(host="localhost", port=443)
        self.assertEqual(by_name.decision, "allow")
        self.assertEqual(by_name.addresses, [])
        resolved = c.egress.check(host="localhost", port=443, resolve=True)
        self.assertEqual(resolved.decision, "deny")  # loopback is hard denied
        self.assertTrue(resolved.addresses)
        for a in resolved.addresses:
            self.assertIsInstance(a, egressd.AddressResult)
            self.assertEqual((a.decision, a.layer), ("deny", "hard"), a)
            self.assertTrue(a.ip)

    def test_check_needs_a_target(self) -> None:
        c = admin()
        c.ensure_session()
        with self.assertRaises(BadRequestError) as ctx:
            c.egress.check()
        self.assertNotIsInstance(ctx.exception, InvalidPolicyError)
        self.assertEqual((ctx.exception.status, ctx.exception.code), (400, "bad_request"))

    def test_package_managers(self) -> None:
        c = admin()
        managers = c.package_managers()
        self.assertIn("pip", managers)
        self.assertIn("pypi.org", managers["pip"])
        self.assertIn("npm", managers)
        self.assertEqual(c.egress.package_managers(), managers)

    def test_health_and_ready(self) -> None:
        self.assertEqual(admin().health(), {"status": "ok"})
        self.assertEqual(admin().ready(), {"status": "ok"})
        assert SERVER is not None
        self.assertEqual(Client(None, base_url=SERVER.url).health()["status"], "ok")  # no key needed


class VMsAndSessionsTest(unittest.TestCase):
    def test_vms(self) -> None:
        a = admin()
        vm_id = unique("crud-vm")
        vm = a.vms.create(vm_id, network="none")
        self.assertIsInstance(vm, egressd.VM)
        self.assertEqual(vm.vm_id, vm_id)
        self.assertEqual(vm.network.mode, "none")
        self.assertEqual(vm.sessions, 0)
        self.assertIsNone(vm.egress_policy)
        self.assertIsInstance(vm.created_at, datetime.datetime)

        listed = {v.vm_id: v for v in a.vms.list()}
        self.assertIn(vm_id, listed)
        self.assertEqual(a.vms.get(vm_id).vm_id, vm_id)

        self.assertIsNone(a.vms.delete(vm_id))  # gone at once: not a netns VM
        with self.assertRaises(NotFoundError) as ctx:
            a.vms.get(vm_id)
        self.assertNotIsInstance(ctx.exception, PolicyNotSetError)
        self.assertEqual(ctx.exception.code, "not_found")
        with self.assertRaises(NotFoundError):
            a.vms.delete(vm_id)

    def test_server_picks_the_vm_id(self) -> None:
        vm = admin().vms.create()
        self.assertTrue(vm.vm_id.startswith("vm_"), vm.vm_id)

    def test_create_vm_with_a_policy(self) -> None:
        a = admin()
        vm = a.vms.create(egress_policy={"allow_https": True, "allowed_domains": ["Example.com"]}, network={"mode": "none"})
        assert vm.egress_policy is not None
        self.assertEqual(vm.egress_policy.allowed_domains, ["example.com"])
        self.assertEqual((vm.egress_policy.scope, vm.egress_policy.id), ("vm", vm.vm_id))
        # A policy model works as a template: only its §2.1 fields are sent.
        copy = a.vms.create(egress_policy=vm.egress_policy)
        assert copy.egress_policy is not None
        self.assertEqual(copy.egress_policy.policy_dict(), vm.egress_policy.policy_dict())
        self.assertEqual(a.egress.get_vm(copy.vm_id).allowed_domains, ["example.com"])
        fields = egressd.PolicyFields(allow_http=True)
        self.assertTrue(a.vms.create(egress_policy=fields).egress_policy.allow_http)  # type: ignore[union-attr]

    def test_create_vm_with_an_invalid_policy_names_the_field(self) -> None:
        vm_id = unique("bad-policy-vm")
        with self.assertRaises(InvalidPolicyError) as ctx:
            admin().vms.create(vm_id, egress_policy={"allowed_cidrs": ["10.0.0.1/8"]})
        self.assertEqual(ctx.exception.field, "egress_policy.allowed_cidrs[0]")
        with self.assertRaises(NotFoundError):
            admin().vms.get(vm_id)  # nothing was created

    def test_netns_needs_the_transparent_gateway(self) -> None:
        with self.assertRaises(BadRequestError) as ctx:
            admin().vms.create(network="netns")
        self.assertEqual(ctx.exception.field, "network.mode")
        self.assertIn("--transparent", ctx.exception.message)

    def test_sessions(self) -> None:
        a = admin()
        vm = a.vms.create(unique("session-vm"))
        s1 = a.sessions.create(vm.vm_id)
        s2 = a.sessions.create(vm.vm_id)
        self.assertIsInstance(s1, egressd.Session)
        self.assertEqual(s1.vm_id, vm.vm_id)
        self.assertTrue(s1.proxy_url and s1.proxy_url.startswith(f"http://{s1.session_id}:"))
        self.assertIsInstance(s1.created_at, datetime.datetime)

        got = a.sessions.get(s1.session_id)
        self.assertEqual(got.session_id, s1.session_id)
        self.assertIsNone(got.proxy_url)  # shown only at creation
        self.assertEqual([s.session_id for s in a.sessions.list(vm.vm_id)], [s1.session_id, s2.session_id])
        everyone = {s.session_id for s in a.sessions.list()}
        self.assertTrue({s1.session_id, s2.session_id} <= everyone)
        self.assertEqual(a.vms.get(vm.vm_id).sessions, 2)

        a.egress.set_session(allow_https=True, session_id=s1.session_id)
        a.sessions.delete(s1.session_id)
        with self.assertRaises(NotFoundError):
            a.sessions.get(s1.session_id)
        with self.assertRaises(NotFoundError):
            a.egress.get_session(s1.session_id)  # the policy went with the session
        a.vms.delete(vm.vm_id)
        with self.assertRaises(NotFoundError):
            a.sessions.get(s2.session_id)  # deleting the VM ended its sessions

    def test_session_on_a_missing_vm(self) -> None:
        with self.assertRaises(NotFoundError) as ctx:
            admin().sessions.create("no-such-vm")
        self.assertEqual(ctx.exception.field, "vm_id")
        with self.assertRaises(NotFoundError):
            admin().sessions.list("no-such-vm")

    def test_ids_are_one_path_segment(self) -> None:
        a = admin()
        with self.assertRaises(NotFoundError):
            a.vms.get("a/b")  # escaped, so it cannot reach /v1/vms/a/b
        with self.assertRaises(NotFoundError):
            a.egress.get_vm("x?y=1")
        for bad in ("", ".", ".."):
            with self.subTest(id=bad), self.assertRaises(ValueError):
                a.vms.get(bad)
        with self.assertRaises(ValueError):
            a.egress.get_session("")


class APIKeysTest(unittest.TestCase):
    def test_keys_and_tenants(self) -> None:
        a = admin()
        tenant = unique("acme")
        key = a.api_keys.create(tenant)
        self.assertIsInstance(key, egressd.APIKey)
        self.assertEqual((key.tenant, key.admin), (tenant, False))
        self.assertTrue(key.key and key.key.startswith("egk_"))
        self.assertTrue(key.id.startswith("key_"))
        self.assertIsInstance(key.created_at, datetime.datetime)
        listed = {k.id: k for k in a.api_keys.list()}
        self.assertIn(key.id, listed)
        self.assertIsNone(listed[key.id].key)  # secrets are shown once

        assert key.key is not None
        tenant_client = admin(api_key=key.key)
        mine = tenant_client.vms.create("shared-name")
        self.assertEqual(mine.vm_id, "shared-name")
        theirs = a.vms.create(unique("admins-vm"))
        with self.assertRaises(NotFoundError):
            tenant_client.vms.get(theirs.vm_id)  # another tenant's: 404, like a missing one
        self.assertNotIn(theirs.vm_id, {v.vm_id for v in tenant_client.vms.list()})

        for call in (tenant_client.api_keys.list, lambda: tenant_client.api_keys.create("x"),
                     lambda: tenant_client.api_keys.delete(key.id)):
            with self.assertRaises(ForbiddenError) as ctx:
                call()
            self.assertEqual((ctx.exception.status, ctx.exception.code), (403, "forbidden"))

        a.api_keys.delete(key.id)
        with self.assertRaises(UnauthorizedError):
            tenant_client.vms.list()
        with self.assertRaises(NotFoundError):
            a.api_keys.delete(key.id)

    def test_admin_keys_and_self_deletion(self) -> None:
        a = admin()
        second = a.api_keys.create(unique("ops"), admin=True)
        self.assertTrue(second.admin)
        assert second.key is not None
        c = admin(api_key=second.key)
        self.assertTrue(c.api_keys.list())
        with self.assertRaises(ConflictError) as ctx:
            c.api_keys.delete(second.id)
        self.assertEqual((ctx.exception.status, ctx.exception.code), (409, "conflict"))
        a.api_keys.delete(second.id)

    def test_nodes(self) -> None:
        nodes = admin().nodes.list()
        self.assertEqual([n.id for n in nodes], [NODE_ID])
        node = nodes[0]
        self.assertIsInstance(node, egressd.Node)
        self.assertEqual((node.roles, node.state, node.vm_count, node.sandbox_cidr), (["api", "gateway"], "up", 0, ""))
        self.assertEqual(node.labels, {"tier": "test"})
        self.assertIsInstance(node.last_heartbeat, datetime.datetime)
        self.assertTrue(node.address)
        tenant = admin().api_keys.create(unique("nodes-tenant"))
        assert tenant.key is not None
        with self.assertRaises(ForbiddenError):
            admin(api_key=tenant.key).nodes.list()

    def test_bad_tenant(self) -> None:
        with self.assertRaises(BadRequestError) as ctx:
            admin().api_keys.create("no spaces allowed")
        self.assertEqual(ctx.exception.field, "tenant")


class ErrorsTest(unittest.TestCase):
    def test_401_bad_key(self) -> None:
        with self.assertRaises(UnauthorizedError) as ctx:
            admin(api_key="egk_not-a-key").vms.list()
        err = ctx.exception
        self.assertEqual((err.status, err.code, err.field), (401, "unauthorized", None))
        self.assertEqual(str(err), "the API key is not valid (401 unauthorized)")

    def test_401_no_key(self) -> None:
        with self.assertRaises(UnauthorizedError) as ctx:
            admin(api_key=None).vms.list()
        self.assertIn("no API key", ctx.exception.message)

    def test_x_api_key_header(self) -> None:
        c = admin(auth_header="x-api-key")
        self.assertIsInstance(c.vms.list(), list)
        with self.assertRaises(UnauthorizedError):
            admin(api_key="wrong", auth_header="x-api-key").vms.list()

    def test_404_unknown_path(self) -> None:
        with self.assertRaises(NotFoundError) as ctx:
            admin().request("GET", "/v1/nothing-here")
        self.assertEqual(ctx.exception.code, "not_found")

    def test_404_policy_not_set(self) -> None:
        vm = admin().vms.create()
        with self.assertRaises(PolicyNotSetError) as ctx:
            admin().egress.get_vm(vm.vm_id)
        err = ctx.exception
        self.assertEqual((err.status, err.code), (404, "policy_not_set"))
        self.assertIsInstance(err, NotFoundError)
        self.assertIsInstance(err, EgressdError)

    def test_405(self) -> None:
        with self.assertRaises(MethodNotAllowedError) as ctx:
            admin().request("PUT", "/v1/vms", json={})
        err = ctx.exception
        self.assertEqual((err.status, err.code), (405, "method_not_allowed"))
        self.assertEqual(str(err), "PUT is not allowed on /v1/vms (405 method_not_allowed)")

    def test_409_duplicate_vm_id(self) -> None:
        vm_id = unique("dup-vm")
        admin().vms.create(vm_id)
        with self.assertRaises(ConflictError) as ctx:
            admin().vms.create(vm_id)
        err = ctx.exception
        self.assertEqual((err.status, err.code, err.field), (409, "conflict", "vm_id"))
        self.assertIn(vm_id, err.message)

    def test_400_invalid_policy(self) -> None:
        c = admin()
        with self.assertRaises(InvalidPolicyError) as ctx:
            c.egress.set_session(allowed_cidrs=["10.0.0.0/8", "10.0.0.1/8"])
        err = ctx.exception
        self.assertIsInstance(err, BadRequestError)
        self.assertEqual((err.status, err.code, err.field), (400, "invalid_policy", "allowed_cidrs[1]"))
        self.assertEqual(err.message, "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?")
        self.assertEqual(
            str(err), "allowed_cidrs[1]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8? (400 invalid_policy)"
        )
        self.assertEqual(err.body["error"]["field"], "allowed_cidrs[1]")
        for kwargs, field in [
            ({"allowed_domains": ["ok.example", "bad domain"]}, "allowed_domains[1]"),
            ({"allowed_domains": ["*"]}, "allowed_domains[0]"),
            ({"denied_domains": ["10.0.0.1"]}, "denied_domains[0]"),
            ({"mode": "audit"}, "mode"),
        ]:
            with self.subTest(**kwargs), self.assertRaises(InvalidPolicyError) as ctx:
                c.egress.set_session(**kwargs)  # type: ignore[arg-type]
            self.assertEqual(ctx.exception.field, field)

    def test_400_bad_request(self) -> None:
        c = admin()
        with self.assertRaises(BadRequestError) as ctx:
            c.vms.create("not a valid id!")
        self.assertNotIsInstance(ctx.exception, InvalidPolicyError)
        self.assertEqual((ctx.exception.code, ctx.exception.field), ("bad_request", "vm_id"))
        with self.assertRaises(BadRequestError) as ctx:
            c.request("POST", "/v1/vms", json={"vm_idd": "typo"})
        self.assertEqual(ctx.exception.field, "vm_idd")
        with self.assertRaises(BadRequestError) as ctx:
            c.request("POST", "/v1/vms", data=b"{not json")
        self.assertIn("malformed JSON", ctx.exception.message)

    def test_413_body_over_1_mib(self) -> None:
        domains = [f"{'a' * 60}-{i:05d}.{'b' * 50}.example" for i in range(9000)]
        c = admin()
        c.ensure_session()
        with self.assertRaises(PayloadTooLargeError) as ctx:
            c.egress.set_session(allowed_domains=domains)
        err = ctx.exception
        self.assertEqual((err.status, err.code), (413, "too_large"))

    def test_415_through_the_low_level_request(self) -> None:
        with self.assertRaises(UnsupportedMediaTypeError) as ctx:
            admin().request("POST", "/v1/vms", data=b"vm_id=x", content_type="application/x-www-form-urlencoded")
        err = ctx.exception
        self.assertEqual((err.status, err.code), (415, "unsupported_media"))
        self.assertIn("not JSON", err.message)

    def test_low_level_request(self) -> None:
        c = admin()
        vm = c.request("POST", "/v1/vms", json={"vm_id": unique("raw-vm")})
        self.assertIsInstance(vm, dict)
        self.assertEqual(c.request("GET", "/v1/sessions", query={"vm_id": vm["vm_id"]}), {"sessions": []})
        self.assertIsNone(c.request("DELETE", "/v1/vms/" + vm["vm_id"]))  # 204

    def test_connection_refused(self) -> None:
        port = harness.free_port()  # nothing listens there
        c = Client("key", base_url=f"http://127.0.0.1:{port}", timeout=5)
        with self.assertRaises(EgressdConnectionError) as ctx:
            c.health()
        err = ctx.exception
        self.assertIsInstance(err, ConnectionError)
        self.assertIsInstance(err, EgressdError)
        self.assertIsNone(err.status)
        self.assertIn(f"127.0.0.1:{port}", str(err))
        with self.assertRaises(EgressdConnectionError):
            c.egress.set_session(allow_https=True)
        self.assertIsNone(c.session_id)

    def test_bad_base_url(self) -> None:
        for url in ("127.0.0.1:8470", "ftp://x", "http://user:pw@127.0.0.1:8470", "http://127.0.0.1:8470/?a=1"):
            with self.subTest(url=url), self.assertRaises(ValueError):
                Client("k", base_url=url)
        with self.assertRaises(ValueError):
            Client("k", auth_header="basic")

    def test_base_url_with_trailing_slash(self) -> None:
        assert SERVER is not None
        c = Client(SERVER.admin_key, base_url=SERVER.url + "/")
        self.assertEqual(c.base_url, SERVER.url)
        self.assertIsInstance(c.vms.list(), list)


if __name__ == "__main__":
    unittest.main()
