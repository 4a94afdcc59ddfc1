"""The optional extras of the package, and one error line naming the one a feature lacks.

A core install (`pip install miss-screen`) screens cases and batches CSV, JSONL and Parquet. The
rest comes in extras (pyproject.toml [project.optional-dependencies]); their modules are imported
only where a feature needs them, so a command that does not use them never pays for or fails on
them. A feature asks for its extra with `require(extra, feature)` before any work; a missing
module that slips past that (an import deep in a code path) is still named by `extra_of`, which
the command line uses to turn ModuleNotFoundError into the same line.
"""

from __future__ import annotations

import importlib

from engine.errors import UsageError

# extra -> the modules it brings that the code imports (pyproject.toml holds the packages)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "report": ("matplotlib",),
    "research": ("scipy", "statsmodels"),
    "fhir": ("fhir.resources",),
    "service": ("fastapi", "uvicorn", "jwt", "fhir.resources"),
    "notebook": ("pandas", "polars"),
    "dask": ("dask.dataframe", "distributed", "pandas"),
}

# a missing top-level module -> the extra to name when no feature said which it needed: the
# first above that brings it (the smallest: fhir before service, notebook before dask)
_FIRST_EXTRA = {
    module.partition(".")[0]: extra
    for extra, modules in reversed(EXTRA_MODULES.items())
    for module in modules
}


class MissingExtra(UsageError):
    """A feature was asked for whose optional dependencies are not installed (exit 2)."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'miss-screen[{extra}]'"
        )
        self.extra = extra


def require(extra: str, feature: str) -> None:
    """Import the modules of `extra` now, or raise MissingExtra naming it and `feature`."""
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise MissingExtra(feature, extra, exc.name or module) from None


def extra_of(exc: ModuleNotFoundError) -> str | None:
    """The extra that brings the module `exc` could not find, if it is an optional one."""
    return _FIRST_EXTRA.get((exc.name or "").partition(".")[0])
