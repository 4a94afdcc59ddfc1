"""Shared fixtures: the bundled ruleset loaded once, and one evaluator of each kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.evaluate.base import Evaluator
from engine.evaluate.durable import DurableEvaluator
from engine.evaluate.reference import ReferenceEvaluator
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset

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
