"""Parts that need no egressd: error mapping, models, the SSE parser, and the transport's
handling of answers egressd itself never sends (500, 503 from /readyz, a proxy's text page,
a redirect, a stream that breaks), served by a stub on 127.0.0.1."""

from __future__ import annotations

import datetime
import http.server
import json
import os
import threading
import time
import unittest
from email.message import Message
from typing import Any, Callable, Dict, List, Optional, Tuple
from unittest import mock

import egressd_harness  # noqa: F401  (puts the SDK on sys.path)

import egressd
from egressd import models
from egressd._sse import ServerSentEvent, parse
from egressd.errors import error_from_response


def api_error(code: str, message: str = "m", field: Optional[str] = None) -> bytes:
    detail: Dict[str, str] = {"code": code, "message": message}
    if field:
        detail["field"] = field
    return json.dumps({"error": detail}).encode()


class ErrorMappingTest(unittest.TestCase):
    TABLE: List[Tuple[int, str, type]] = [
        (400, "bad_request", egressd.BadRequestError),
        (400, "invalid_policy", egressd.InvalidPolicyError),
        (401, "unauthorized", egressd.UnauthorizedError),
        (403, "forbidden", egressd.ForbiddenError),
        (404, "not_found", egressd.NotFoundError),
        (404, "policy_not_set", egressd.PolicyNotSetError),
        (405, "method_not_allowed", egressd.MethodNotAllowedError),
        (409, "conflict", egressd.ConflictError),
        (413, "too_large", egressd.PayloadTooLargeError),
        (415, "unsupported_media", egressd.UnsupportedMediaTypeError),
        (429, "rate_limited", egressd.RateLimitedError),
        (500, "internal", egressd.ServerError),
        (503, "unavailable", egressd.UnavailableError),
    ]

    def test_every_code_has_its_class(self) -> None:
        for status, code, cls in self.TABLE:
            with self.subTest(code=code):
                err = error_from_response(status, api_error(code, "went wrong", "f"))
                self.assertIs(type(err), cls)
                self.assertIsInstance(err, egressd.APIError)
                self.assertIsInstance(err, egressd.EgressdError)
                self.assertEqual((err.status, err.code, err.message, err.field), (status, code, "went wrong", "f"))
                self.assertEqual(str(err), f"f: went wrong ({status} {code})")

    def test_the_table_covers_the_go_clients_codes(self) -> None:
        # client/types.go is the source of the wire codes: each must be mapped here.
        types_go = (egressd_harness.REPO_ROOT / "client" / "types.go").read_text(encoding="utf-8")
        import re

        codes = set(re.findall(r'^\s*Code\w+\s*=\s*"([a-z_]+)"', types_go, re.M))
        self.assertTrue(codes)
        self.assertEqual(codes, {code for _, code, _ in self.TABLE})

    def test_subclasses(self) -> None:
        self.assertTrue(issubclass(egressd.InvalidPolicyError, egressd.BadRequestError))
        self.assertTrue(issubclass(egressd.PolicyNotSetError, egressd.NotFoundError))
        self.assertTrue(issubclass(egressd.UnavailableError, egressd.ServerError))
        self.assertTrue(issubclass(egressd.EgressdConnectionError, ConnectionError))
        self.assertTrue(issubclass(egressd.EgressdConnectionError, egressd.EgressdError))
        self.assertFalse(issubclass(egressd.EgressdConnectionError, egressd.APIError))

    def test_str(self) -> None:
        err = error_from_response(
            400,
            api_error("invalid_policy", "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?", "allowed_cidrs[1]"),
        )
        self.assertEqual(
            str(err), "allowed_cidrs[1]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8? (400 invalid_policy)"
        )
        # A message that starts with its field does not say it twice.
        err = error_from_response(400, api_error("bad_request", "tenant must be 1 to 63 letters", "tenant"))
        self.assertEqual(str(err), "tenant must be 1 to 63 letters (400 bad_request)")
        self.assertIn("BadRequestError(", repr(err))

    def test_unknown_code_falls_back_on_the_status(self) -> None:
        err = error_from_response(404, api_error("gone_fishing"))
        self.assertIs(type(err), egressd.NotFoundError)
        self.assertEqual(err.code, "gone_fishing")
        self.assertIs(type(error_from_response(418, api_error("teapot"))), egressd.APIError)
        self.assertIs(type(error_from_response(502, b"")), egressd.ServerError)

    def test_bodies_that_are_not_egressds(self) -> None:
        err = error_from_response(503, b'{"status": "unavailable", "reason": "store: connection refused"}')
        self.assertIs(type(err), egressd.UnavailableError)
        self.assertEqual((err.message, err.code), ("store: connection refused", "unavailable"))
        err = error_from_response(502, b"<html>Bad Gateway</html>\n<body>...</body>")
        self.assertIs(type(err), egressd.ServerError)
        self.assertEqual((err.message, err.code), ("<html>Bad Gateway</html>", None))
        self.assertEqual(str(err), "<html>Bad Gateway</html> (502)")
        err = error_from_response(500, b"")
        self.assertEqual(err.message, "internal server error")
        err = error_from_response(400, b"x" * 1000)
        self.assertTrue(err.message.endswith("…") and len(err.message) == 201)
        err = error_from_response(400, b"\xff\xfe binary")
        self.assertEqual(err.message, "bad request")
        err = error_from_response(400, b'{"error": "plain words"}')
        self.assertEqual(err.message, "plain words")

    def test_retry_after(self) -> None:
        err = error_from_response(429, api_error("rate_limited"), {"Retry-After": "1"})
        assert isinstance(err, egressd.RateLimitedError)
        self.assertEqual(err.retry_after, 1.0)
        err = error_from_response(429, b"slow down", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        assert isinstance(err, egressd.RateLimitedError)
        self.assertIsNone(err.retry_after)
        self.assertIsNone(error_from_response(429, b"").retry_after)  # type: ignore[attr-defined]


class ModelsTest(unittest.TestCase):
    def test_parse_time(self) -> None:
        utc = datetime.timezone.utc
        self.assertEqual(
            models.parse_time("2026-11-28T19:45:26.76240493Z"),
            datetime.datetime(2026, 11, 28, 19, 45, 26, 762404, tzinfo=utc),
        )
        self.assertEqual(models.parse_time("2026-01-02T03:04:05Z"), datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=utc))
        t = models.parse_time("2026-01-02T03:04:05.5+02:00")
        assert t is not None
        self.assertEqual(t.utcoffset(), datetime.timedelta(hours=2))
        self.assertEqual(t.microsecond, 500000)
        self.assertEqual(models.parse_time("0001-01-01T00:00:00Z"), datetime.datetime(1, 1, 1, tzinfo=utc))
        self.assertIsNone(models.parse_time(None))
        self.assertIsNone(models.parse_time(""))
        with self.assertRaises(ValueError):
            models.parse_time("yesterday")

    def test_format_time(self) -> None:
        t = datetime.datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
        self.assertEqual(models.format_time(t), "2026-01-02T02:04:05.000600Z")
        self.assertEqual(models.format_time(datetime.datetime(2026, 1, 2)), "2026-01-02T00:00:00Z")

    def test_unknown_fields_are_kept(self) -> None:
        wire = {"vm_id": "v", "network": {"mode": "none"}, "sessions": 2, "created_at": "2026-01-02T03:04:05Z",
                "labels": {"team": "x"}}
        vm = egressd.VM.from_dict(wire)
        self.assertEqual(vm.sessions, 2)
        self.assertEqual(vm["labels"], {"team": "x"})
        self.assertEqual(vm.to_dict(), wire)
        d = vm.to_dict()
        d["labels"]["team"] = "changed"
        self.assertEqual(vm["labels"]["team"], "x")  # to_dict() is a copy

    def test_session_socks_url(self) -> None:
        wire = {"session_id": "ses_a", "vm_id": "v", "proxy_url": "http://ses_a:t@127.0.0.1:8471",
                "socks_url": "socks5h://ses_a:t@127.0.0.1:8472", "created_at": "2026-01-02T03:04:05Z"}
        s = egressd.Session.from_dict(wire)
        self.assertEqual(s.socks_url, "socks5h://ses_a:t@127.0.0.1:8472")
        self.assertEqual(s.to_dict(), wire)
        # Without --socks-listen the answer has none.
        self.assertIsNone(egressd.Session.from_dict({"session_id": "ses_a", "proxy_url": "http://x"}).socks_url)
        c = egressd.Client(api_key="k", base_url="http://127.0.0.1:1")
        self.assertIsNone(c.socks_url)
        c._adopt(s)
        self.assertEqual((c.session_id, c.proxy_url, c.socks_url), ("ses_a", wire["proxy_url"], wire["socks_url"]))

    def test_models_are_frozen_mappings(self) -> None:
        p = egressd.Policy.from_dict({"allow_https": True, "scope": "vm", "id": "v", "revision": 3})
        with self.assertRaises(AttributeError):
            p.allow_https = False  # type: ignore[misc]
        self.assertEqual(dict(p), {"allow_https": True, "scope": "vm", "id": "v", "revision": 3})
        self.assertEqual(p.get("missing", "dflt"), "dflt")
        self.assertEqual(len(p), 4)
        self.assertEqual(p.policy_dict()["allowed_domains"], [])

    def test_made_in_python(self) -> None:
        f = egressd.PolicyFields(allow_https=True, allowed_domains=["example.com"])
        self.assertEqual(f.to_dict()["allowed_domains"], ["example.com"])
        self.assertEqual(f["mode"], "enforce")
        v = egressd.Effective()
        self.assertIn("from", v.to_dict()["allow_http"])

    def test_policy_fields_constant(self) -> None:
        self.assertEqual(
            egressd.POLICY_FIELDS,
            ("allow_package_managers", "allow_http", "allow_https", "allowed_domains", "allowed_cidrs",
             "denied_domains", "mode", "allowed_tcp", "http_rules"),
        )

    def test_http_rules_models(self) -> None:
        wire = {"allow_https": True, "http_rules": [{"domain": "api.example.com", "methods": ["GET"], "paths": ["/v1/"]},
                                                    {"domain": "*.example.org", "methods": [], "paths": []}]}
        p = egressd.Policy.from_dict(wire)
        self.assertIsInstance(p.http_rules[0], egressd.HTTPRule)
        self.assertEqual((p.http_rules[0].domain, p.http_rules[0].methods, p.http_rules[0].paths),
                         ("api.example.com", ["GET"], ["/v1/"]))
        self.assertEqual(p.policy_dict()["http_rules"], wire["http_rules"])  # JSON again, ready to send
        self.assertEqual(egressd.Policy.from_dict({}).policy_dict()["http_rules"], [])
        made = egressd.PolicyFields(http_rules=[egressd.HTTPRule(domain="a.example", methods=["POST"])])
        self.assertEqual(made.to_dict()["http_rules"], [{"domain": "a.example", "methods": ["POST"], "paths": []}])
        e = egressd.Effective.from_dict({"http_rules": {"intercepted": ["api.example.com"], "from": ["vm"], "rules": [
            {"layer": "vm", "index": 2, "domain": "api.example.com", "methods": [], "paths": ["/"]}]}})
        self.assertEqual(e.http_rules.intercepted, ["api.example.com"])
        self.assertEqual(e.http_rules.from_, ["vm"])
        r = e.http_rules.rules[0]
        self.assertIsInstance(r, egressd.EffectiveHTTPRule)
        self.assertEqual((r.layer, r.index, r.domain, r.paths), ("vm", 2, "api.example.com", ["/"]))
        self.assertEqual(egressd.Effective().http_rules.rules, [])

    def test_http_rules_body(self) -> None:
        from egressd.egress import policy_body

        body = policy_body(allow_https=True, http_rules=[
            {"domain": "api.example.com", "methods": ("GET", "POST"), "paths": ["/v1/"]},
            egressd.HTTPRule(domain="b.example", paths=["/x"]),
            {"domain": "c.example"},
        ])
        self.assertEqual(body["http_rules"], [
            {"domain": "api.example.com", "methods": ["GET", "POST"], "paths": ["/v1/"]},
            {"domain": "b.example", "methods": [], "paths": ["/x"]},
            {"domain": "c.example"},
        ])
        self.assertEqual(policy_body()["http_rules"], [])
        for bad, msg in [
            ({"domain": "a.example"}, "must be a list of rules"),
            ("a.example", "must be a list of rules"),
            (["a.example"], r"http_rules\[0\] must be a dict"),
            ([{"domain": 7}], r"http_rules\[0\]\.domain must be a string"),
            ([{"domain": "a.example", "methods": "GET"}], r"http_rules\[0\]\.methods must be a list"),
            ([{"domain": "a.example", "paths": ["/", 3]}], r"http_rules\[0\]\.paths\[1\]"),
        ]:
            with self.subTest(bad=bad):
                with self.assertRaisesRegex(TypeError, msg):
                    policy_body(http_rules=bad)  # type: ignore[arg-type]

    def test_allowed_tcp_body_and_models(self) -> None:
        from egressd.egress import policy_body

        self.assertEqual(policy_body()["allowed_tcp"], [])
        body = policy_body(allowed_tcp=("github.com:22", "*.db.example.com:5432"))
        self.assertEqual(body["allowed_tcp"], ["github.com:22", "*.db.example.com:5432"])
        self.assertEqual(list(body), list(egressd.POLICY_FIELDS))  # every field, in the API's order
        for bad, msg in [
            ("github.com:22", "not a single string"),
            (["github.com:22", 22], r"allowed_tcp\[1\] must be a string"),
        ]:
            with self.subTest(bad=bad):
                with self.assertRaisesRegex(TypeError, msg):
                    policy_body(allowed_tcp=bad)  # type: ignore[arg-type]

        p = egressd.Policy.from_dict({"allowed_tcp": ["github.com:22"], "scope": "vm"})
        self.assertEqual(p.allowed_tcp, ["github.com:22"])
        self.assertEqual(p.policy_dict()["allowed_tcp"], ["github.com:22"])
        # A policy answered without the field (an older egressd) reads as an empty list.
        self.assertEqual(egressd.Policy.from_dict({}).allowed_tcp, [])
        self.assertEqual(egressd.Policy.from_dict({"allowed_tcp": None}).allowed_tcp, [])
        e = egressd.Effective.from_dict({"allowed_tcp": {"value": ["github.com:22"], "from": ["session", "vm"]}})
        self.assertEqual((e.allowed_tcp.value, e.allowed_tcp.from_), (["github.com:22"], ["session", "vm"]))
        self.assertEqual(egressd.Effective.from_dict({}).allowed_tcp.value, [])


class SSEParserTest(unittest.TestCase):
    def test_parse(self) -> None:
        stream = [
            b": a comment first\n",
            b"id: 7\n",
            b"event: decision\n",
            b'data: {"seq": 7}\n',
            b"\n",
            b": heartbeat\n",
            b"\n",
            b"data:one\r\n",
            b"data: two\r\n",
            b"retry: 100\n",
            b"\r\n",
            b"id: 9\n",
            b"event: decision\n",
            b"data: cut off by the end",
        ]
        self.assertEqual(
            list(parse(stream)),
            [ServerSentEvent("7", "decision", '{"seq": 7}'), ServerSentEvent(None, "message", "one\ntwo")],
        )

    def test_parse_str_lines_and_events_without_data(self) -> None:
        self.assertEqual(list(parse(["event: x", "", "data", ""])), [ServerSentEvent(None, "message", "")])


# -- a stub egressd on loopback --------------------------------------------------------------

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Stub:
    """An HTTP server on 127.0.0.1 whose answers the test scripts by path."""

    def __init__(self) -> None:
        self.routes: Dict[str, Handler] = {}
        self.requests: List[Tuple[str, str, Message]] = []
        self.bodies: List[bytes] = []  # each request's body, in the order of requests
        stub = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                stub.requests.append((self.command, self.path, self.headers))
                stub.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                route = stub.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(599)
                    return
                route(self)

            do_GET = do_POST = do_DELETE = handle_one  # noqa: N815

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(status: int, body: bytes, ctype: str = "application/json", headers: Optional[Dict[str, str]] = None) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    return handle


class TransportTest(unittest.TestCase):
    def setUp(self) -> None:
        self.stub = Stub()
        self.addCleanup(self.stub.close)
        self.client = egressd.Client("egk_secret", base_url=self.stub.url, timeout=5)

    def test_500_internal(self) -> None:
        self.stub.routes["/v1/vms"] = reply(500, api_error("internal", "internal error; see egressd's log"))
        with self.assertRaises(egressd.ServerError) as ctx:
            self.client.vms.list()
        self.assertEqual(str(ctx.exception), "internal error; see egressd's log (500 internal)")

    def test_503_unavailable(self) -> None:
        self.stub.routes["/readyz"] = reply(503, b'{"status": "unavailable", "reason": "store: ping: closed"}')
        with self.assertRaises(egressd.UnavailableError) as ctx:
            self.client.ready()
        self.assertEqual(str(ctx.exception), "store: ping: closed (503 unavailable)")
        self.stub.routes["/v1/vms"] = reply(503, api_error("unavailable", "the store is not reachable: x"))
        with self.assertRaises(egressd.UnavailableError):
            self.client.vms.list()

    def test_a_proxys_error_page(self) -> None:
        self.stub.routes["/v1/vms"] = reply(502, b"upstream connect error\n", "text/plain")
        with self.assertRaises(egressd.ServerError) as ctx:
            self.client.vms.list()
        self.assertEqual((ctx.exception.status, ctx.exception.code), (502, None))
        self.assertEqual(ctx.exception.message, "upstream connect error")

    def test_redirects_are_not_followed(self) -> None:
        self.stub.routes["/v1/vms"] = reply(302, b"", headers={"Location": "https://elsewhere.example/"})
        with self.assertRaises(egressd.APIError) as ctx:
            self.client.vms.list()
        self.assertEqual(ctx.exception.status, 302)
        self.assertIn("unexpected redirect to https://elsewhere.example/", str(ctx.exception))
        self.assertEqual(len(self.stub.requests), 1)

    def test_rate_limited(self) -> None:
        self.stub.routes["/v1/vms"] = reply(429, api_error("rate_limited", "slow down"), headers={"Retry-After": "2"})
        with self.assertRaises(egressd.RateLimitedError) as ctx:
            self.client.vms.list()
        self.assertEqual(ctx.exception.retry_after, 2.0)

    def test_a_2xx_that_is_not_json(self) -> None:
        self.stub.routes["/v1/vms"] = reply(200, b"<html>hi</html>", "text/html")
        with self.assertRaises(egressd.EgressdError) as ctx:
            self.client.vms.list()
        self.assertEqual(ctx.exception.status, 200)
        self.assertIn("not JSON", str(ctx.exception))

    def test_headers(self) -> None:
        self.stub.routes["/v1/vms"] = reply(201, b'{"vm_id": "v", "network": {"mode": "none"}}')
        self.client.vms.create("v")
        method, path, headers = self.stub.requests[-1]
        self.assertEqual((method, path), ("POST", "/v1/vms"))
        self.assertEqual(headers["Authorization"], "Bearer egk_secret")
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["Accept"], "application/json")
        self.assertTrue(headers["User-Agent"].startswith("egressd-python"))
        c = egressd.Client("egk_secret", base_url=self.stub.url, auth_header="x-api-key")
        c.vms.create("v")
        headers = self.stub.requests[-1][2]
        self.assertEqual(headers["X-API-Key"], "egk_secret")
        self.assertIsNone(headers.get("Authorization"))

    def test_a_base_url_prefix_is_kept(self) -> None:
        self.stub.routes["/egressd/v1/vms"] = reply(200, b'{"vms": []}')
        c = egressd.Client("k", base_url=self.stub.url + "/egressd/")
        self.assertEqual(c.vms.list(), [])

    def test_query_parameters(self) -> None:
        self.stub.routes["/v1/egress/events"] = reply(200, b'{"events": []}')
        since = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        self.client.egress.events(vm_id="a b", decision="deny", since=since, limit=5)
        path = self.stub.requests[-1][1]
        self.assertEqual(path, "/v1/egress/events?vm_id=a+b&decision=deny&since=2026-01-02T03%3A04%3A05Z&limit=5")
        self.client.egress.events(since=42)
        self.assertEqual(self.stub.requests[-1][1], "/v1/egress/events?since=42")

    def test_environment_proxies_are_ignored_for_loopback(self) -> None:
        self.stub.routes["/healthz"] = reply(200, b'{"status": "ok"}')
        dead = f"http://127.0.0.1:{egressd_harness.free_port()}"
        with mock.patch.dict(os.environ, {"http_proxy": dead, "HTTP_PROXY": dead, "no_proxy": "", "NO_PROXY": ""}):
            c = egressd.Client("k", base_url=self.stub.url)
            self.assertEqual(c.health(), {"status": "ok"})

    def test_a_timeout_is_a_connection_error(self) -> None:
        block = threading.Event()
        self.addCleanup(block.set)
        self.stub.routes["/healthz"] = lambda h: block.wait(10)  # type: ignore[func-returns-value]
        c = egressd.Client("k", base_url=self.stub.url, timeout=0.3)
        with self.assertRaises(egressd.EgressdConnectionError) as ctx:
            c.health()
        self.assertIn("timed out", str(ctx.exception))


class FollowReconnectTest(unittest.TestCase):
    """follow_events resumes after the last record with Last-Event-ID when a stream ends."""

    def test_reconnects_with_last_event_id(self) -> None:
        stub = Stub()
        self.addCleanup(stub.close)
        seen_ids: List[Optional[str]] = []

        def stream(h: http.server.BaseHTTPRequestHandler) -> None:
            last = h.headers.get("Last-Event-ID")
            seen_ids.append(last)
            start = int(last or 0) + 1
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Connection", "close")
            h.end_headers()
            # Two records, a comment, and a non-decision event, then the stream ends.
            for seq in (start, start + 1):
                h.wfile.write(f"id: {seq}\nevent: decision\ndata: {json.dumps({'seq': seq, 'decision': 'deny'})}\n\n".encode())
            h.wfile.write(b": 3 records dropped\n\nevent: other\ndata: x\n\n")
            h.wfile.flush()
            h.close_connection = True

        stub.routes["/v1/egress/events"] = stream
        c = egressd.Client("k", base_url=stub.url)
        with mock.patch("egressd.egress._FOLLOW_FIRST_WAIT", 0.01):
            gen = c.egress.follow_events(session_id="s", idle_timeout=5)
            seqs = [next(gen).seq for _ in range(5)]
            gen.close()
        self.assertEqual(seqs, [1, 2, 3, 4, 5])
        self.assertEqual(seen_ids, [None, "2", "4"])
        self.assertIn("follow=true", stub.requests[0][1])
        self.assertIn("session_id=s", stub.requests[0][1])

    def test_gives_up_after_max_reconnects(self) -> None:
        port = egressd_harness.free_port()
        c = egressd.Client("k", base_url=f"http://127.0.0.1:{port}")
        with mock.patch("egressd.egress._FOLLOW_FIRST_WAIT", 0.01):
            with self.assertRaises(egressd.EgressdConnectionError):
                next(c.egress.follow_events(max_reconnects=2))

    def test_rides_out_a_restart_then_gives_up_after_a_while(self) -> None:
        # Nothing listens: every attempt fails. It keeps trying, with growing waits, until
        # give_up_after has passed, and no longer than that (plus one wait).
        port = egressd_harness.free_port()
        c = egressd.Client("k", base_url=f"http://127.0.0.1:{port}")
        attempts: List[float] = []
        real_open = c.egress._http.open

        def counting_open(*args: Any, **kwargs: Any) -> Any:
            attempts.append(time.monotonic())
            return real_open(*args, **kwargs)

        with mock.patch.object(c.egress._http, "open", counting_open), \
                mock.patch("egressd.egress._FOLLOW_FIRST_WAIT", 0.01), \
                mock.patch("egressd.egress._FOLLOW_LONGEST_WAIT", 0.04):
            with self.assertRaises(egressd.EgressdConnectionError):
                next(c.egress.follow_events(give_up_after=0.5))
        self.assertGreater(len(attempts), 5)  # not a fixed handful of tries
        self.assertGreaterEqual(attempts[-1] - attempts[0], 0.4)

    def test_an_api_error_is_raised_at_once(self) -> None:
        stub = Stub()
        self.addCleanup(stub.close)
        stub.routes["/v1/egress/events"] = reply(401, api_error("unauthorized", "the API key is not valid"))
        c = egressd.Client("k", base_url=stub.url)
        with self.assertRaises(egressd.UnauthorizedError):
            next(c.egress.follow_events())
        self.assertEqual(len(stub.requests), 1)

    def test_a_stream_that_is_not_one(self) -> None:
        stub = Stub()
        self.addCleanup(stub.close)
        stub.routes["/v1/egress/events"] = reply(200, b'{"events": []}')
        with self.assertRaises(egressd.EgressdError) as ctx:
            next(egressd.Client("k", base_url=stub.url).egress.follow_events())
        self.assertIn("not an event stream", str(ctx.exception))


class PlacementTest(unittest.TestCase):
    """Netns VMs placed on nodes: what is sent, and the 202 answers egressd gives while a node
    has not made or removed a VM's network (a single egressd without --transparent gives none)."""

    PENDING = {"vm_id": "agent-1", "network": {"mode": "netns", "node": "gw-b", "state": "pending"},
               "sessions": 0, "created_at": "2026-01-02T03:04:05Z"}

    def setUp(self) -> None:
        self.stub = Stub()
        self.addCleanup(self.stub.close)
        self.client = egressd.Client("egk_secret", base_url=self.stub.url, timeout=5)

    def test_the_network_mapping_is_sent_as_it_is(self) -> None:
        self.stub.routes["/v1/vms"] = reply(202, json.dumps(self.PENDING).encode())
        network = {"mode": "netns", "node": "gw-b", "node_selector": {"zone": "eu-1", "gpu": "true"}}
        vm = self.client.vms.create("agent-1", network=network)
        self.assertEqual(json.loads(self.stub.bodies[-1]), {"vm_id": "agent-1", "network": network})
        self.assertEqual((vm.network.mode, vm.network.node, vm.network.state), ("netns", "gw-b", "pending"))
        self.assertEqual((vm.network.netns, vm.network.path), ("", ""))
        self.client.vms.create(network="netns")
        self.assertEqual(json.loads(self.stub.bodies[-1]), {"network": {"mode": "netns"}})

    def test_a_ready_network(self) -> None:
        ready = {"vm_id": "agent-2", "network": {"mode": "netns", "node": "gw-a", "state": "ready", "netns": "egressd-agent-2",
                 "path": "/run/netns/egressd-agent-2", "address": "100.96.0.6", "gateway": "100.96.0.5"}}
        self.stub.routes["/v1/vms"] = reply(201, json.dumps(ready).encode())
        vm = self.client.vms.create("agent-2", network={"mode": "netns"})
        self.assertEqual((vm.network.state, vm.network.path, vm.network.address), ("ready", "/run/netns/egressd-agent-2", "100.96.0.6"))
        self.assertEqual(vm.network.node_selector, {})
        self.assertEqual(vm.to_dict(), ready)

    def test_a_failed_network_is_an_error(self) -> None:
        self.stub.routes["/v1/vms"] = reply(503, api_error("unavailable", "node gw-a could not make the network: x", "network"))
        with self.assertRaises(egressd.UnavailableError) as ctx:
            self.client.vms.create(network="netns")
        self.assertIn("could not make the network", ctx.exception.message)

    def test_delete_while_the_node_removes_it(self) -> None:
        deleting = dict(self.PENDING, network={"mode": "netns", "node": "gw-b", "state": "deleting"})
        self.stub.routes["/v1/vms/agent-1"] = reply(202, json.dumps(deleting).encode())
        vm = self.client.vms.delete("agent-1")
        assert vm is not None
        self.assertEqual((vm.vm_id, vm.network.state, vm.network.node), ("agent-1", "deleting", "gw-b"))
        self.assertEqual(self.stub.requests[-1][:2], ("DELETE", "/v1/vms/agent-1"))

        def no_content(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(204)
            h.end_headers()

        self.stub.routes["/v1/vms/agent-1"] = no_content
        self.assertIsNone(self.client.vms.delete("agent-1"))

    def test_nodes(self) -> None:
        wire = {"nodes": [
            {"id": "gw-a", "roles": ["api", "gateway", "transparent"], "address": "198.18.0.2:8470",
             "labels": {"zone": "eu-1"}, "sandbox_cidr": "100.96.0.0/20", "last_heartbeat": "2026-01-02T03:04:05Z",
             "revision": 42, "vm_count": 3, "state": "up"},
            {"id": "gw-b", "roles": ["gateway"], "last_heartbeat": "2026-01-02T03:00:00Z", "revision": 40,
             "vm_count": 0, "state": "down"},
        ]}
        self.stub.routes["/v1/nodes"] = reply(200, json.dumps(wire).encode())
        a, b = self.client.nodes.list()
        self.assertEqual(self.stub.requests[-1][:2], ("GET", "/v1/nodes"))
        self.assertIsInstance(a, egressd.Node)
        self.assertEqual((a.id, a.roles, a.labels, a.sandbox_cidr), ("gw-a", ["api", "gateway", "transparent"], {"zone": "eu-1"}, "100.96.0.0/20"))
        self.assertEqual((a.revision, a.vm_count, a.state), (42, 3, "up"))
        self.assertEqual(a.last_heartbeat, datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
        self.assertEqual((b.labels, b.sandbox_cidr, b.address, b.state), ({}, "", "", "down"))
        self.assertEqual(a.to_dict(), wire["nodes"][0])


class PackageTest(unittest.TestCase):
    def test_public_names(self) -> None:
        for name in egressd.__all__:
            self.assertTrue(hasattr(egressd, name), name)
        self.assertEqual(egressd.DEFAULT_BASE_URL, "http://127.0.0.1:8470")
        self.assertTrue(egressd.__version__)

    def test_only_the_standard_library(self) -> None:
        import ast
        import sys

        stdlib = getattr(sys, "stdlib_module_names", None)
        if stdlib is None:
            self.skipTest("sys.stdlib_module_names needs Python 3.10")
        pkg = egressd_harness.SDK_DIR / "egressd"
        for path in sorted(pkg.glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names: List[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for n in names:
                    with self.subTest(file=path.name, module=n):
                        self.assertIn(n.split(".")[0], stdlib)

    def test_docstrings(self) -> None:
        import inspect

        for name in egressd.__all__:
            obj = getattr(egressd, name)
            if inspect.isclass(obj):
                with self.subTest(name=name):
                    self.assertTrue(inspect.getdoc(obj), name)
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and not attr.startswith("_"):
                        with self.subTest(name=f"{name}.{attr}"):
                            self.assertTrue(inspect.getdoc(member), f"{name}.{attr}")


if __name__ == "__main__":
    unittest.main()
