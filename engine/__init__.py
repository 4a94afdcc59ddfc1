"""miss-screen: is minimally invasive spine surgery worth discussing? Rule-based screening.

`from engine import Screener` is the Python API (engine/screener.py); it is imported on first
use, so `import engine` and the CLI's start-up stay light. `engine.__version__` is the installed
distribution's version, written once in pyproject.toml and read from the package metadata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

DISTRIBUTION = "miss-screen"  # the name pip knows the package by (pyproject.toml [project] name)
__all__ = ["DISTRIBUTION", "InputError", "Screener", "__version__"]

if TYPE_CHECKING:
    from engine.screener import InputError, Screener

    __version__: str


def _installed_version() -> str:
    """The version pip installed; a checkout run without installing has none to report.

    Read from the metadata's header lines: `importlib.metadata.version` parses the whole file
    with the email parser, README included (67 kB; about 10M instructions, 0.6 % of a cold
    `screen`); the header ends at the first empty line. Metadata without a `Version:` line
    there is left to importlib.metadata.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        found = distribution(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"  # PEP 440's local form: never mistaken for a release
    text = found.read_text("METADATA") or found.read_text("PKG-INFO") or ""
    for line in text.partition("\n\n")[0].splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "version" and value.strip():
            return value.strip()
    return found.version


def __getattr__(name: str) -> Any:
    if name in ("Screener", "InputError"):
        # imported by name, so that the import graph (import-linter) does not see the package
        # top depending on the layer above everything it re-exports
        return getattr(importlib.import_module("engine.screener"), name)
    if name == "__version__":
        # looked up once, on first use (about 10 ms of reading metadata), then a plain attribute
        globals()["__version__"] = found = _installed_version()
        return found
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
