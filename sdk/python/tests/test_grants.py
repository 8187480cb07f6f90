"""Grants against a real egressd: ``client.grants``."""

from __future__ import annotations

import datetime as dt
import unittest
from typing import Optional

import egressd_harness as harness

import egressd
from egressd import BadRequestError, NotFoundError

SERVER: Optional[harness.EgressdServer] = None


def setUpModule() -> None:
    global SERVER
    SERVER = harness.EgressdServer().start()


def tearDownModule() -> None:
    if SERVER is not None:
        SERVER.stop()


def tenant_client(tenant: str) -> egressd.Client:
    assert SERVER is not None
    key = SERVER.client().api_keys.create(tenant).key
    return SERVER.client(api_key=key)


class GrantsTest(unittest.TestCase):
    def test_lifecycle(self) -> None:
        client = tenant_client("py-grants")
        client.vms.create("vm-g")
        sid = client.sessions.create("vm-g").session_id
        g = client.grants.create(session_id=sid, tcp="GitHub.com:22", domains=["Example.COM"], ttl=dt.timedelta(minutes=10), note="clone")
        self.assertIsInstance(g, egressd.Grant)
        self.assertTrue(g.id.startswith("gr_"), g.id)
        self.assertEqual((g.scope, g.scope_id), ("session", sid))
        self.assertEqual((g.tcp, g.domains, g.cidrs, g.note), (["github.com:22"], ["example.com"], [], "clone"))
        assert g.created_at is not None and g.expires_at is not None
        self.assertEqual(g.expires_at - g.created_at, dt.timedelta(minutes=10))
        self.assertTrue(g.warnings, "a grant on a session without a policy says what it adds")

        eff = client.egress.effective(session_id=sid)
        self.assertEqual([x.id for layer in eff.layers for x in layer.grants], [g.id])
        self.assertIsInstance(eff.layers[0].grants[0], egressd.Grant)

        v = client.grants.create(vm_id="vm-g", cidrs=["198.51.100.0/24"], ttl=60)
        self.assertEqual([x.id for x in client.grants.list(session_id=sid)], [g.id])
        self.assertEqual([x.id for x in client.grants.list(vm_id="vm-g")], [v.id])

        # Another tenant finds nothing.
        other = tenant_client("py-grants-other")
        with self.assertRaises(NotFoundError):
            other.grants.list(vm_id="vm-g")
        with self.assertRaises(NotFoundError):
            other.grants.revoke(v.id, vm_id="vm-g")

        client.grants.revoke(g.id, session_id=sid)
        self.assertEqual(client.grants.list(session_id=sid), [])
        with self.assertRaises(NotFoundError):
            client.grants.revoke(g.id, session_id=sid)
        # A grant is found only through the object it is on.
        with self.assertRaises(NotFoundError):
            client.grants.revoke(v.id, session_id=sid)

    def test_bad_input_names_the_field(self) -> None:
        client = tenant_client("py-grants-bad")
        client.vms.create("vm-b")
        cases = [
            (dict(tcp=["a.test:1"], ttl=0), "ttl_seconds"),
            (dict(tcp=["a.test:1"], ttl=86401), "ttl_seconds"),
            (dict(tcp=["a.test"], ttl=60), "tcp[0]"),
            (dict(domains=["ok.test", "not a domain"], ttl=60), "domains[1]"),
            (dict(cidrs=["198.51.100.1/24"], ttl=60), "cidrs[0]"),
            (dict(ttl=60), None),
        ]
        for kwargs, field in cases:
            with self.subTest(kwargs=kwargs):
                with self.assertRaises(BadRequestError) as cm:
                    client.grants.create(vm_id="vm-b", **kwargs)  # type: ignore[arg-type]
                self.assertEqual(cm.exception.field, field)
        self.assertEqual(client.grants.list(vm_id="vm-b"), [])
        with self.assertRaises(NotFoundError):
            client.grants.create(vm_id="nope", tcp=["a.test:1"], ttl=60)

    def test_arguments_checked_before_sending(self) -> None:
        client = tenant_client("py-grants-args")
        with self.assertRaises(ValueError):
            client.grants.list()
        with self.assertRaises(ValueError):
            client.grants.list(session_id="s", vm_id="v")
        with self.assertRaises(ValueError):
            client.grants.create(vm_id="v", tcp=["a.test:1"], ttl=dt.timedelta(seconds=1.5))
        with self.assertRaises(TypeError):
            client.grants.create(vm_id="v", tcp=["a.test:1"], ttl="10m")  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            client.grants.revoke("..", vm_id="v")


if __name__ == "__main__":
    unittest.main()
