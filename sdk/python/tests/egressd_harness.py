"""Runs the real egressd binary for the SDK's tests.

It builds ``./cmd/egressd`` once per test process (``go build`` in the repository root, found
from this file), starts it on free loopback ports with a throwaway data directory, waits for
``/healthz``, reads ``<data-dir>/admin.key``, and stops it (SIGTERM, then SIGKILL after 10 s)
when the test module ends. Only 127.0.0.1 is used.

Importing this module also puts the SDK (``sdk/python``) first on ``sys.path``, so the tests
run against the working tree's package rather than an installed one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
from pathlib import Path
from typing import List, Optional

TESTS_DIR = Path(__file__).resolve().parent
SDK_DIR = TESTS_DIR.parent
REPO_ROOT = SDK_DIR.parent.parent

if str(SDK_DIR) not in sys.path:
    sys.path.insert(0, str(SDK_DIR))

# Under CI a missing tool is a failure, not a skip (DESIGN §10).
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_build_lock = threading.Lock()
_build_dir: Optional[str] = None
_binary: Optional[str] = None


def skip_or_fail(reason: str) -> None:
    """Skip the test (module) with reason, or fail it when running under CI."""
    if IN_CI:
        raise AssertionError(f"{reason} (CI=true: failing instead of skipping)")
    raise unittest.SkipTest(reason)


def _cleanup_build() -> None:
    if _build_dir:
        shutil.rmtree(_build_dir, ignore_errors=True)


def egressd_binary() -> str:
    """Build ./cmd/egressd once per process and return its path."""
    global _build_dir, _binary
    with _build_lock:
        if _binary:
            return _binary
        go = shutil.which("go")
        if go is None:
            skip_or_fail("the Go toolchain (go) is not on PATH; it builds egressd for these tests")
        _build_dir = tempfile.mkdtemp(prefix="egressd-sdk-bin-")
        atexit.register(_cleanup_build)
        out = os.path.join(_build_dir, "egressd")
        proc = subprocess.run(
            [go, "build", "-o", out, "./cmd/egressd"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"go build ./cmd/egressd failed:\n{proc.stdout}")
        _binary = out
        return out


class _PortTaken(Exception):
    """egressd found a port taken at start."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env() -> dict:
    # EGRESSD_* variables of the developer's shell would change flags; proxies must not apply.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EGRESSD_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }


class EgressdServer:
    """One running egressd.

    Attributes:
        url: the API's base URL, ``http://127.0.0.1:<port>``.
        proxy_addr: the explicit proxy's ``127.0.0.1:<port>``.
        admin_key: the admin API key read from ``<data_dir>/admin.key``.
        data_dir: its data directory (inside a temporary directory removed by stop()).
    """

    def __init__(self, *extra_args: str, rate_limit: float = 0) -> None:
        self._tmp = tempfile.mkdtemp(prefix="egressd-sdk-test-")
        self.data_dir = os.path.join(self._tmp, "data")
        self.api_addr = f"127.0.0.1:{free_port()}"
        self.proxy_addr = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.api_addr}"
        self.admin_key = ""
        self.args: List[str] = [
            "--api-listen", self.api_addr,
            "--proxy-listen", self.proxy_addr,
            "--data-dir", self.data_dir,
            "--api-rate-limit", f"{rate_limit:g}",
            *extra_args,
        ]
        self._log_path = os.path.join(self._tmp, "egressd.log")
        self._proc: Optional[subprocess.Popen] = None

    def start(self) -> "EgressdServer":
        """Start egressd and wait (15 s at most) until /healthz answers 200.

        free_port's ports were free a moment ago; another process may take one before egressd
        binds it, so that collision is retried on new ports, a few times at most.
        """
        for attempt in range(5):
            try:
                return self._start_once()
            except _PortTaken:
                self.api_addr = f"127.0.0.1:{free_port()}"
                self.proxy_addr = f"127.0.0.1:{free_port()}"
                self.url = f"http://{self.api_addr}"
                self.args[1], self.args[3] = self.api_addr, self.proxy_addr
        self._fail("egressd could not bind free ports in 5 attempts")
        return self

    def _start_once(self) -> "EgressdServer":
        binary = egressd_binary()
        log = open(self._log_path, "wb")
        try:
            self._proc = subprocess.Popen(
                [binary, *self.args], stdout=log, stderr=subprocess.STDOUT, env=_clean_env(), cwd=self._tmp
            )
        finally:
            log.close()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if "address already in use" in self.log():
                    self._proc = None
                    raise _PortTaken()
                self._fail(f"egressd exited with {self._proc.returncode} at start")
            try:
                with opener.open(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.02)
        else:
            self._fail("egressd did not answer /healthz in 15 s")
        with open(os.path.join(self.data_dir, "admin.key"), encoding="utf-8") as f:
            self.admin_key = f.read().strip()
        return self

    def _fail(self, what: str) -> None:
        log = self.log()
        self.stop()
        raise RuntimeError(f"{what}:\n{log}")

    def log(self) -> str:
        """What egressd has written so far."""
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop egressd (SIGTERM, SIGKILL after 10 s) and remove its temporary directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def client(self, **kwargs):  # type: ignore[no-untyped-def]
        """An egressd.Client of this server with the admin key (or kwargs' api_key)."""
        from egressd import Client

        kwargs.setdefault("api_key", self.admin_key)
        return Client(base_url=self.url, **kwargs)
