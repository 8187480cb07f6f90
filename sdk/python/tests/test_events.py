"""Decision records: traffic through a session's proxy_url, then events() and follow_events().

egressd runs with --public-cidrs 127.0.0.0/26, so that a test HTTP server on 127.0.0.10 can
stand for a public one (DESIGN §10): nothing leaves the machine. (127.0.0.1 would not do:
egressd listens there, and its own addresses are hard denied.) The denied request names a
host under .test, which egressd refuses by name without looking it up.
"""

from __future__ import annotations

import datetime
import http.server
import threading
import time
import unittest
import urllib.error
import urllib.request
from typing import Callable, List, Optional

import egressd_harness as harness

from egressd import BadRequestError, Client, Event

WEB_IP = "127.0.0.10"  # inside --public-cidrs, and not an address egressd listens on
SERVER: Optional[harness.EgressdServer] = None
WEB: Optional[http.server.ThreadingHTTPServer] = None


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"hello from the fake internet\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass


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


def through_proxy(proxy_url: str, url: str) -> int:
    """GET url through the session's proxy as a sandbox would; the HTTP status."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy_url}))
    try:
        with opener.open(url, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        with err:
            if err.code == 403:
                assert err.headers["X-Egress-Decision"] == "deny", dict(err.headers)
            return err.code


def wait_for(fetch: Callable[[], List[Event]], ok: Callable[[List[Event]], bool]) -> List[Event]:
    """Poll fetch until ok says yes (5 s at most): records are written as traffic is decided."""
    deadline = time.monotonic() + 5
    while True:
        events = fetch()
        if ok(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


class EventsTest(unittest.TestCase):
    client: Client
    web_url: str

    @classmethod
    def setUpClass(cls) -> None:
        assert SERVER is not None and WEB is not None
        cls.client = SERVER.client()
        cls.web_port = WEB.server_address[1]
        cls.web_url = f"http://{WEB_IP}:{cls.web_port}/"
        cls.client.egress.set_session(allowed_cidrs=[WEB_IP + "/32"])
        assert cls.client.proxy_url is not None
        cls.started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
        assert through_proxy(cls.client.proxy_url, cls.web_url) == 200
        assert through_proxy(cls.client.proxy_url, "http://denied.example.test/") == 403

    def session_events(self, **filters) -> List[Event]:  # type: ignore[no-untyped-def]
        return self.client.egress.events(session_id=self.client.session_id, **filters)

    def test_allowed_and_denied_records(self) -> None:
        events = wait_for(
            self.session_events,
            lambda evs: any(e.decision == "deny" for e in evs) and any(e.kind == "close" for e in evs),
        )
        deny = [e for e in events if e.decision == "deny"]
        self.assertEqual(len(deny), 1, events)
        d = deny[0]
        self.assertIsInstance(d, Event)
        self.assertEqual((d.host, d.port, d.kind, d.transport), ("denied.example.test", 80, "request", "tcp"))
        self.assertEqual((d.session_id, d.vm_id, d.tenant), (self.client.session_id, self.client.vm_id, "default"))
        self.assertEqual((d.layer, d.mode), ("session", "enforce"))
        self.assertTrue(d.reason and d.rule)
        self.assertIsInstance(d.time, datetime.datetime)
        self.assertGreater(d.seq, 0)
        self.assertEqual(d["host"], "denied.example.test")

        allowed = [e for e in events if e.decision == "allow" and e.kind == "connect"]
        self.assertEqual(len(allowed), 1, events)
        a = allowed[0]
        self.assertEqual((a.ip, a.port, a.reason), (WEB_IP, self.web_port, "allowed_cidrs"))
        closes = [e for e in events if e.kind == "close"]
        self.assertEqual(len(closes), 1, events)
        self.assertGreater(closes[0].bytes_down, 0)
        self.assertTrue(closes[0].close_reason)
        # Oldest first.
        self.assertEqual([e.seq for e in events], sorted(e.seq for e in events))

    def test_filters(self) -> None:
        wait_for(self.session_events, lambda evs: any(e.kind == "close" for e in evs))
        everything = self.session_events()
        self.assertEqual({e.decision for e in self.session_events(decision="deny")}, {"deny"})
        self.assertEqual({e.decision for e in self.session_events(decision="allow")}, {"allow"})
        self.assertEqual({e.kind for e in self.session_events(kind="connect")}, {"connect"})
        by_vm = self.client.egress.events(vm_id=self.client.vm_id)
        self.assertEqual([e.seq for e in by_vm], [e.seq for e in everything])
        self.assertEqual(self.client.egress.events(session_id="ses_nobody"), [])

        newest = self.session_events(limit=1)
        self.assertEqual([e.seq for e in newest], [everything[-1].seq])
        after_first = self.session_events(since=everything[0].seq)
        self.assertEqual([e.seq for e in after_first], [e.seq for e in everything[1:]])
        page = self.session_events(since=everything[0].seq, limit=1)
        self.assertEqual([e.seq for e in page], [everything[1].seq])
        since_time = self.session_events(since=self.started)
        self.assertEqual([e.seq for e in since_time], [e.seq for e in everything])
        future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        self.assertEqual(self.session_events(since=future), [])

    def test_bad_filter(self) -> None:
        with self.assertRaises(BadRequestError) as ctx:
            self.client.egress.events(decision="maybe")
        self.assertEqual(ctx.exception.field, "decision")
        with self.assertRaises(BadRequestError) as ctx:
            next(self.client.egress.follow_events(kind="everything"))
        self.assertEqual(ctx.exception.field, "kind")

    def own_session(self) -> Client:
        """A client with a session of its own, so that its records do not mix with the others'."""
        assert SERVER is not None
        c = SERVER.client()
        c.egress.set_session(allow_https=True)
        return c

    def test_follow_events(self) -> None:
        c = self.own_session()
        assert c.proxy_url is not None
        self.assertEqual(through_proxy(c.proxy_url, "http://buffered.example.test/"), 403)
        wait_for(lambda: c.egress.events(session_id=c.session_id), lambda evs: len(evs) > 0)
        stream = c.egress.follow_events(session_id=c.session_id, decision="deny", idle_timeout=10, max_reconnects=0)
        try:
            buffered = next(stream)  # from the buffer
            self.assertEqual(buffered.host, "buffered.example.test")
            # A live one: made after the stream is open.
            self.assertEqual(through_proxy(c.proxy_url, "http://live.example.test/"), 403)
            live = next(stream)
            self.assertEqual((live.host, live.decision), ("live.example.test", "deny"))
            self.assertGreater(live.seq, buffered.seq)
        finally:
            stream.close()

    def test_follow_only_new_records(self) -> None:
        c = self.own_session()
        assert c.proxy_url is not None
        self.assertEqual(through_proxy(c.proxy_url, "http://old.example.test/"), 403)
        wait_for(lambda: c.egress.events(session_id=c.session_id), lambda evs: len(evs) > 0)
        stream = c.egress.follow_events(
            session_id=c.session_id, kind="request", decision="deny", limit=0,
            idle_timeout=10, max_reconnects=0,
        )
        got: List[Event] = []
        opened = threading.Event()

        def read() -> None:
            opened.set()
            got.append(next(stream))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        opened.wait(5)
        # The stream may open after this request: retry, bounded, until the reader has one.
        for i in range(20):
            through_proxy(c.proxy_url, f"http://new-{i}.example.test/")
            reader.join(0.25)
            if not reader.is_alive():
                break
        reader.join(10)
        self.assertFalse(reader.is_alive())
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].host.startswith("new-"), got[0])
        stream.close()


if __name__ == "__main__":
    unittest.main()
