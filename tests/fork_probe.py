"""Run in a batch worker by tests/test_preload.py: what the fork server built before forking."""

from __future__ import annotations


def preloaded_sha256() -> str | None:
    from engine.batch import worker

    ruleset = worker._STATE.ruleset
    return ruleset.sha256 if ruleset is not None else None
