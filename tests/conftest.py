"""Shared fixtures: the bundled ruleset loaded once, and one evaluator of each kind."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

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
