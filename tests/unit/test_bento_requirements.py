"""The Bento's pinned requirements against the lock, read from files: no build, no server.
Building the Bento and serving it by its tag is `tests/integration/test_bento.py`.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from tests.support.paths import ROOT


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_bento_requirements_pin_the_locked_versions() -> None:
    """Each pin is a version uv.lock holds and the one this (locked, Python 3.11) environment
    runs: the lock can hold two versions of a package, one per Python range."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked: dict[str, set[str]] = {}
    for package in lock["package"]:
        if "version" in package:
            locked.setdefault(normalized(package["name"]), set()).add(package["version"])
    pins = {}
    for line in (ROOT / "serving" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalized(name)] = version.strip()
    assert len(pins) >= 10, pins
    drifted = {
        name: (pin, sorted(locked.get(name, ())), metadata.version(name))
        for name, pin in pins.items()
        if pin not in locked.get(name, ()) or metadata.version(name) != pin
    }
    assert not drifted, f"serving/requirements.txt differs from uv.lock: {drifted}"
