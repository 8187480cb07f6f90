"""A PEP 517 build backend that uses only the standard library.

The SDK is pure Python with no dependencies, so building it needs nothing but zipfile: with
this backend ``pip install ./sdk/python`` works where no package index can be reached (the
sandboxes egressd protects are such places) and needs no setuptools or wheel.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "egressd"


def _project() -> dict:
    """Reads name, version and requires-python from pyproject.toml (tomllib needs 3.11)."""
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    section = text.split("[project]", 1)[1].split("\n[", 1)[0]
    fields = dict(re.findall(r'^(\w[\w-]*)\s*=\s*"([^"]*)"', section, re.M))
    return {k: fields[k] for k in ("name", "version", "description", "requires-python")}


def _metadata(p: dict) -> str:
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {p['name']}\nVersion: {p['version']}\nSummary: {p['description']}\n"
        f"Requires-Python: {p['requires-python']}\nLicense: Apache-2.0\n"
        "Description-Content-Type: text/markdown\n\n" + readme
    )


def _files():
    """The package's files, as (path in the archive, path on disk)."""
    pkg = os.path.join(ROOT, PACKAGE)
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py") or name == "py.typed":
            yield f"{PACKAGE}/{name}", os.path.join(pkg, name)


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    p = _project()
    dist = p["name"].replace("-", "_")
    info = f"{dist}-{p['version']}.dist-info"
    name = f"{dist}-{p['version']}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as whl:
        def add(arcname: str, data: bytes) -> None:
            whl.writestr(arcname, data)
            record.append(_record_line(arcname, data))

        for arcname, path in _files():
            add(arcname, open(path, "rb").read())
        add(f"{info}/METADATA", _metadata(p).encode())
        add(f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: egressd-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        record.append(f"{info}/RECORD,,\n")
        whl.writestr(f"{info}/RECORD", "".join(record))
    return name


def build_sdist(sdist_directory, config_settings=None):
    p = _project()
    base = f"{p['name']}-{p['version']}"
    name = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for rel in ("pyproject.toml", "README.md", "_build/backend.py", "_build/__init__.py"):
            tar.add(os.path.join(ROOT, rel), f"{base}/{rel}")
        for arcname, path in _files():
            tar.add(path, f"{base}/{arcname}")
    return name
