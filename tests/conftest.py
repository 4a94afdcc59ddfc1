"""Shared fixtures: the bundled ruleset loaded once, and one evaluator of each kind."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from engine.evaluate.base import Evaluator
from engine.evaluate.durable import DurableEvaluator
from engine.evaluate.reference import ReferenceEvaluator
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset

# durable-rules layouts are cached on disk (engine/evaluate/cache.py): the tests and the CLI
# processes they start use a cache of their own, empty when the session starts, never ~/.cache
_CACHE = tempfile.mkdtemp(prefix="miss-screen-test-cache-")
os.environ["MISS_SCREEN_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
RULESET = load_ruleset(RULES_DIR)
EVALUATORS: dict[str, Evaluator] = {
    "durable": DurableEvaluator(RULESET),
    "reference": ReferenceEvaluator(RULESET),
}


@pytest.fixture(scope="session")
def ruleset() -> Ruleset:
    return RULESET


@pytest.fixture(scope="session")
def evaluators() -> dict[str, Evaluator]:
    return EVALUATORS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The questions each web-form consultation answered (tests/test_form_browser.py), in the
    run's own summary, passed or not."""
    rows = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            props = dict(getattr(report, "user_properties", ()))
            if getattr(report, "when", "") == "call" and "questions_answered" in props:
                name = report.nodeid.split("::", 1)[-1]
                outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
                rows.append(
                    f"{props['questions_answered']:>2} questions  {props['verdict']:<21} "
                    f"{outcome:<7} {name}: {props['questions']}"
                )
    if rows:
        terminalreporter.section("web form: questions answered per consultation")
        for row in rows:
            terminalreporter.write_line(row)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow run only when the -m expression names `slow` (-m slow,
    -m "faults and slow"). Not an addopts -m "not slow": a -m given on the command line
    replaces that one, so `pytest -m faults` would run every slow test too."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
