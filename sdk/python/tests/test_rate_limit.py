"""429: an egressd started with --api-rate-limit 1 (one request a second, bursts of three)."""

from __future__ import annotations

import time
import unittest
from typing import Optional

import egressd_harness as harness

from egressd import RateLimitedError

SERVER: Optional[harness.EgressdServer] = None


def setUpModule() -> None:
    global SERVER
    SERVER = harness.EgressdServer(rate_limit=1).start()


def tearDownModule() -> None:
    if SERVER is not None:
        SERVER.stop()


class RateLimitTest(unittest.TestCase):
    def test_429_with_retry_after(self) -> None:
        assert SERVER is not None
        c = SERVER.client()
        err: Optional[RateLimitedError] = None
        for _ in range(20):  # the burst is 3: far fewer than 20 requests get through
            try:
                c.vms.list()
            except RateLimitedError as e:
                err = e
                break
        self.assertIsNotNone(err, "20 requests in a row were never rate limited")
        assert err is not None
        self.assertEqual((err.status, err.code), (429, "rate_limited"))
        self.assertEqual(err.retry_after, 1.0)
        self.assertTrue(str(err).endswith("(429 rate_limited)"), str(err))
        # Retry-After is honest: after it, the key is served again.
        time.sleep(err.retry_after)
        self.assertIsInstance(c.vms.list(), list)

    def test_health_is_not_limited(self) -> None:
        assert SERVER is not None
        c = SERVER.client()
        for _ in range(10):
            self.assertEqual(c.health(), {"status": "ok"})


if __name__ == "__main__":
    unittest.main()
