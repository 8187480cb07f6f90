"""Suggestions: denials through a session's proxy_url, then session_suggestion(),
vm_suggestion() and apply_suggestion(), and the next request passes.

egressd runs with --public-cidrs 127.0.0.0/26; the web server on 127.0.0.11 stands for a
public one (DESIGN §10). Plain-HTTP requests by address are IP literals, which no entry but a
CIDR allows: the suggestion lists them as not allowable. The denied names are under .test and
refused by name without a lookup.
"""

from __future__ import annotations

import http.server
import threading
import time
import unittest
from typing import Optional

import egressd_harness as harness
from test_events import _Hello, through_proxy

from egressd import BadRequestError, Client, NotFoundError, Suggestion

WEB_IP = "127.0.0.11"  # inside --public-cidrs, not an address egressd listens on
SERVER: Optional[harness.EgressdServer] = None
WEB: Optional[http.server.ThreadingHTTPServer] = None


def setUpModule() -> None:
    global SERVER, WEB
    WEB = http.server.ThreadingHTTPServer((WEB_IP, 0), _Hello)
    threading.Thread(target=WEB.serve_forever, daemon=True).start()
    try:
        SERVER = harness.EgressdServer("--public-cidrs", "127.0.0.0/26").start()
    except BaseException:
        WEB.shutdown()
        raise


def tearDownModule() -> None:
    if SERVER is not None:
        SERVER.stop()
    if WEB is not None:
        WEB.shutdown()
        WEB.server_close()


def wait_for_denials(client: Client, n: int) -> Suggestion:
    """Poll the suggestion until it has read n denials (5 s at most)."""
    deadline = time.monotonic() + 5
    while True:
        s = client.egress.session_suggestion()
        if s.decisions >= n or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


class SuggestTest(unittest.TestCase):
    def test_suggest_and_apply(self) -> None:
        assert SERVER is not None and WEB is not None
        client = SERVER.client()
        client.egress.set_session(allow_https=True, allowed_domains=["ok.example.test"])
        assert client.proxy_url is not None
        for host in ("a.svc.example.test", "b.svc.example.test", "c.svc.example.test", "one.test"):
            self.assertEqual(through_proxy(client.proxy_url, f"http://{host}/"), 403)
        port = WEB.server_address[1]
        self.assertEqual(through_proxy(client.proxy_url, f"http://{WEB_IP}:{port}/"), 403)

        s = wait_for_denials(client, 5)
        self.assertIsInstance(s, Suggestion)
        self.assertEqual((s.scope, s.id, s.policy_set, s.changed), ("session", client.session_id, True, True))
        self.assertEqual(s.vm_id, client.vm_id)
        self.assertEqual([(f.entry, f.covers) for f in s.flags], [("allow_http", 4)])
        self.assertEqual(
            [(e.entry, e.covers, e.names) for e in s.allowed_domains],
            [
                ("*.example.test", 3, ["a.svc.example.test", "b.svc.example.test", "c.svc.example.test"]),
                ("one.test", 1, []),
            ],
        )
        self.assertEqual(s.allowed_tcp, [])
        self.assertEqual([(n.reason, n.ip, n.covers) for n in s.not_allowable], [("ip_literal", WEB_IP, 1)])
        self.assertTrue(s.not_allowable[0].explanation)
        assert s.policy is not None
        self.assertEqual(s.policy.allowed_domains, ["*.example.test", "ok.example.test", "one.test"])
        self.assertTrue(s.policy.allow_http and s.policy.allow_https)
        self.assertEqual(s["decisions"], s.decisions)  # dict access to the wire object

        # since: a seq past every record reads nothing.
        last = client.egress.events(session_id=client.session_id)[-1].seq
        self.assertEqual(client.egress.session_suggestion(since=last).decisions, 0)
        with self.assertRaises(BadRequestError):
            client.egress.session_suggestion(since="yesterday")

        # The VM has no policy: the session's denials are the session layer's.
        v = client.egress.vm_suggestion()
        self.assertEqual((v.scope, v.changed, v.policy_set), ("vm", False, False))
        self.assertEqual([(o.layer, o.covers) for o in v.other_layers], [("session", 5)])

        stored = client.egress.apply_suggestion(s)
        assert stored is not None
        self.assertEqual(stored.allowed_domains, ["*.example.test", "ok.example.test", "one.test"])
        self.assertIsNone(client.egress.apply_suggestion(v))  # nothing to change, nothing set

        # Asked again, every old denial is allowed now but the IP literal.
        again = client.egress.session_suggestion()
        self.assertEqual((again.changed, again.already_allowed), (False, 4))

    def test_other_tenant_and_missing(self) -> None:
        assert SERVER is not None
        client = SERVER.client()
        client.egress.set_session(allow_https=True)
        admin = SERVER.client()
        other = Client(admin.api_keys.create("someone-else").key, base_url=SERVER.url)
        with self.assertRaises(NotFoundError):
            other.egress.session_suggestion(session_id=client.session_id)
        with self.assertRaises(NotFoundError):
            other.egress.vm_suggestion(vm_id=client.vm_id)


if __name__ == "__main__":
    unittest.main()
