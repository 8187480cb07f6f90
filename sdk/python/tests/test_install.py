"""``pip install ./sdk/python`` gives an importable ``egressd`` with the same API.

pip builds the package with its declared backend, the in-tree standard-library one
(_build/backend.py), in an isolated build with no package index: exactly what a user without
network access gets. It installs into a temporary --target from a copy of the source.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import egressd_harness as harness


class InstallTest(unittest.TestCase):
    def test_pip_install(self) -> None:
        self.assertIsNotNone(importlib.util.find_spec("pip"), f"{sys.executable} has no pip")
        with tempfile.TemporaryDirectory(prefix="egressd-sdk-install-") as tmp:
            src = os.path.join(tmp, "src")
            shutil.copytree(
                harness.SDK_DIR, src, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info", "build")
            )
            target = os.path.join(tmp, "site")
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
            env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                 "--target", target, src],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                timeout=300,
            )
            self.assertEqual(proc.returncode, 0, proc.stdout)
            check = (
                "import egressd, sys; from egressd import Client; "
                "assert egressd.__file__.startswith(sys.argv[1]), egressd.__file__; "
                "print(egressd.__version__, Client.__name__)"
            )
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env["PYTHONPATH"] = target
            run = subprocess.run(
                [sys.executable, "-c", check, target], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env=env, cwd=tmp, timeout=60,
            )
            self.assertEqual(run.returncode, 0, run.stdout)
            self.assertTrue(os.path.exists(os.path.join(target, "egressd", "py.typed")))
            dist_infos = [d for d in os.listdir(target) if d.endswith(".dist-info")]
            self.assertEqual(len(dist_infos), 1, dist_infos)
            self.assertTrue(dist_infos[0].startswith("egressd-"), dist_infos)


if __name__ == "__main__":
    unittest.main()
