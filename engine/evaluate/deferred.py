"""An evaluator built the first time a case needs it, not when its Screener is.

A vectorised Screener decides its cohorts by column (engine.evaluate.vectorised); durable-rules
sees only the rows that compiler leaves to the per-row path (facts that contradict each other, a
feature it does not cover) and single cases. Building durable-rules' ruleset costs about 0.17 s
of CPU with a cold layout cache (0.06 s warm) and 20 MB of memory, in every batch worker, sweep
process and test that builds a Screener, while a cohort decided wholly by column never needs it.
So it is built on first use, once, under a lock: the service and Dask may call from several
threads, and a second durable-rules ruleset would only cost memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from engine.derive import Facts
from engine.evaluate.base import Evaluator
from engine.models import RuleOutcome
from engine.rules.ruleset import Ruleset


class DeferredEvaluator:
    """The evaluator `build()` returns, built when a case is first evaluated (Evaluator)."""

    def __init__(self, ruleset: Ruleset, build: Callable[[], Evaluator]) -> None:
        self.ruleset = ruleset
        self._build = build
        self._built: Evaluator | None = None
        self._failed: Exception | None = None  # a build that failed fails the same way again
        self._lock = threading.Lock()

    @property
    def is_built(self) -> bool:
        """Whether a case has needed the evaluator yet (it exists only then)."""
        return self._built is not None

    @property
    def built(self) -> Evaluator:
        """The evaluator, built now if no case has needed it yet (once, whichever thread asks)."""
        found = self._built
        if found is None:
            with self._lock:
                if self._failed is not None:  # not built again (and again) per request
                    raise self._failed
                found = self._built
                if found is None:
                    try:
                        found = self._built = self._build()
                    except Exception as exc:
                        self._failed = exc
                        raise
        return found

    def evaluate(self, facts: Facts) -> list[RuleOutcome]:
        return self.built.evaluate(facts)

    def evaluate_many(self, many: Sequence[Facts]) -> list[list[RuleOutcome]]:
        # a chunk whose every row the vectorised engine decided hands over none
        return self.built.evaluate_many(many) if many else []
