"""Secrets and the CA against a real egressd: ``client.secrets`` and ``client.ca_pem()``."""

from __future__ import annotations

import re
import ssl
import unittest
from typing import Optional

import egressd_harness as harness

import egressd
from egressd import BadRequestError, ConflictError, NotFoundError

SERVER: Optional[harness.EgressdServer] = None

PLACEHOLDER = re.compile(r"^egressd-secret-([A-Za-z0-9_-]+)-[a-z2-7]{24}$")


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


class SecretsTest(unittest.TestCase):
    def test_lifecycle(self) -> None:
        client = tenant_client("py-secrets-lifecycle")
        values = ["sk-py-first-1234", "sk-py-second-5678"]
        s = client.secrets.create(name="openai", value=values[0], domains=["API.OpenAI.test", "*.openai.test"])
        self.assertIsInstance(s, egressd.Secret)
        m = PLACEHOLDER.match(s.placeholder)
        self.assertIsNotNone(m, s.placeholder)
        self.assertEqual(m.group(1), "openai")
        self.assertEqual(s.domains, ["*.openai.test", "api.openai.test"])
        self.assertIsNotNone(s.created_at)
        self.assertNotIn("value", s)

        self.assertEqual([x.name for x in client.secrets.list()], ["openai"])
        self.assertEqual(client.secrets.get("openai").placeholder, s.placeholder)

        rotated = client.secrets.rotate("openai", values[1])
        self.assertEqual(rotated.placeholder, s.placeholder)
        self.assertEqual(rotated.domains, s.domains)
        narrowed = client.secrets.set_domains("openai", ["api.openai.test"])
        self.assertEqual((narrowed.placeholder, narrowed.domains), (s.placeholder, ["api.openai.test"]))
        both = client.secrets.rotate("openai", values[0], domains="b.openai.test")
        self.assertEqual(both.domains, ["b.openai.test"])

        client.secrets.delete("openai")
        with self.assertRaises(NotFoundError):
            client.secrets.get("openai")
        with self.assertRaises(NotFoundError):
            client.secrets.delete("openai")
        self.assertEqual(client.secrets.list(), [])

        # No answer of the run held a value (the models keep the wire object: to_dict).
        for model in (s, rotated, narrowed, both):
            for v in values:
                self.assertNotIn(v, repr(model.to_dict()))
        self.assertNotIn(values[0], SERVER.log() if SERVER else "")

    def test_bad_input_names_the_field(self) -> None:
        client = tenant_client("py-secrets-bad")
        cases = [
            (dict(name="bad name", value="v", domains=["a.test"]), "name"),
            (dict(name="n", value="", domains=["a.test"]), "value"),
            (dict(name="n", value="v\n", domains=["a.test"]), "value"),
            (dict(name="n", value="v", domains=[]), "domains"),
            (dict(name="n", value="v", domains=["a.test", "not a domain"]), "domains[1]"),
        ]
        for kwargs, field in cases:
            with self.subTest(kwargs=kwargs):
                with self.assertRaises(BadRequestError) as cm:
                    client.secrets.create(**kwargs)
                self.assertEqual(cm.exception.field, field)
                self.assertNotIn("sk-", str(cm.exception))
        client.secrets.create(name="taken", value="v", domains=["a.test"])
        with self.assertRaises(ConflictError):
            client.secrets.create(name="taken", value="w", domains=["a.test"])
        with self.assertRaises(NotFoundError):
            client.secrets.rotate("missing", "v")
        with self.assertRaises(ValueError):
            client.secrets.get("..")

    def test_tenants_do_not_see_each_other(self) -> None:
        a, b = tenant_client("py-secrets-a"), tenant_client("py-secrets-b")
        a.secrets.create(name="tok", value="va", domains=["a.test"])
        with self.assertRaises(NotFoundError):
            b.secrets.get("tok")
        with self.assertRaises(NotFoundError):
            b.secrets.rotate("tok", "stolen")
        self.assertEqual(b.secrets.list(), [])
        b.secrets.create(name="tok", value="vb", domains=["b.test"])
        self.assertEqual(a.secrets.get("tok").domains, ["a.test"])


class CATest(unittest.TestCase):
    def test_ca_pem(self) -> None:
        assert SERVER is not None
        pem = egressd.Client(api_key=None, base_url=SERVER.url).ca_pem()  # no key needed
        self.assertTrue(pem.startswith("-----BEGIN CERTIFICATE-----"), pem[:40])
        # It is a certificate Python's ssl module takes as a root.
        ctx = ssl.create_default_context(cadata=pem)
        self.assertEqual(len(ctx.get_ca_certs()), 1)
        subject = dict(x[0] for x in ctx.get_ca_certs()[0]["subject"])
        self.assertTrue(subject["commonName"].startswith("egressd sandbox CA "), subject)
        self.assertEqual(SERVER.client().ca_pem(), pem)


if __name__ == "__main__":
    unittest.main()
