"""Every ```python block of sdk/python/README.md runs as written against a real egressd.

Each block runs alone in a fresh interpreter (``python -c``), as a user pasting it into a
file would, with EGRESSD_URL and EGRESSD_API_KEY set to the test server's and the SDK of this
working tree on PYTHONPATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest
from typing import List, Optional, Tuple

import egressd_harness as harness

README = harness.SDK_DIR / "README.md"
SERVER: Optional[harness.EgressdServer] = None


def setUpModule() -> None:
    global SERVER
    SERVER = harness.EgressdServer().start()


def tearDownModule() -> None:
    if SERVER is not None:
        SERVER.stop()


def python_blocks(text: str) -> List[Tuple[str, str]]:
    """The ```python blocks of a Markdown text, each with the heading it sits under."""
    blocks = []
    heading = "(top)"
    in_block = False
    lines: List[str] = []
    for line in text.splitlines():
        if in_block:
            if line.strip() == "```":
                blocks.append((heading, "\n".join(lines) + "\n"))
                in_block = False
            else:
                lines.append(line)
        elif re.match(r"^```python\s*$", line):
            in_block, lines = True, []
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    if in_block:
        raise AssertionError(f"README.md: the python block under {heading!r} is not closed")
    return blocks


class ReadmeExamplesTest(unittest.TestCase):
    def test_the_hosted_products_examples_are_there(self) -> None:
        headings = [h for h, _ in python_blocks(README.read_text(encoding="utf-8"))]
        for name in ("AI agent sandbox", "Fully isolated", "Internal network only"):
            self.assertIn(name, headings)

    def test_every_python_block_runs(self) -> None:
        assert SERVER is not None
        blocks = python_blocks(README.read_text(encoding="utf-8"))
        self.assertGreaterEqual(len(blocks), 3)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESSD_")}
        env.update(
            EGRESSD_URL=SERVER.url,
            EGRESSD_API_KEY=SERVER.admin_key,
            PYTHONPATH=os.pathsep.join(filter(None, [str(harness.SDK_DIR), env.get("PYTHONPATH")])),
        )
        for heading, code in blocks:
            with self.subTest(block=heading):
                proc = subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=60,
                )
                self.assertEqual(
                    proc.returncode, 0, f"the README block under {heading!r} failed:\n{code}\n--- output:\n{proc.stdout}"
                )
                if os.environ.get("EGRESSD_SDK_SHOW_README_OUTPUT"):
                    print(f"\n--- {heading}:\n{proc.stdout}", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
