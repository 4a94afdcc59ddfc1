"""`rules test --coverage`: three-valued coverage of scope and condition over golden cases."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from engine.cli import app
from engine.dictionary import FIELDS_BY_NAME
from engine.research.coverage import coverage, leaves
from engine.rules.condition import parse_condition, to_text
from engine.rules.ruleset import Ruleset
from tests.conftest import RULESET

runner = CliRunner()


def test_leaves_are_the_atomic_tests_each_once() -> None:
    cond = parse_condition(
        'diagnosis == "fracture" and (levels >= 3 or not (levels >= 3)) and sva_mm is known',
        FIELDS_BY_NAME,
    )
    assert [to_text(leaf) for leaf in leaves(cond)] == [
        'diagnosis == "fracture"',
        "levels >= 3",
        "sva_mm is known",
    ]


def test_golden_kinds_show_up_as_states_of_the_whole_condition() -> None:
    ruleset: Ruleset = RULESET
    found = {c.rule_id: c for c in coverage(ruleset)}
    assert set(found) == {r.id for r in ruleset.rules}
    for rule in ruleset.rules:
        cases = rule.meta.cases
        assert cases is not None
        whole = next(p for p in found[rule.id].parts if p.where == "condition")
        if cases.fires:
            assert "true" in whole.seen, rule.id
        if cases.not_evaluable and rule.scope is None:
            assert "unknown" in whole.seen, rule.id


def test_removing_the_unknown_golden_cases_leaves_unknown_never_seen() -> None:
    ruleset: Ruleset = RULESET
    rule = ruleset.by_id["ACC-007"]
    assert rule.meta.cases is not None
    stripped = rule.meta.model_copy(
        update={"cases": rule.meta.cases.model_copy(update={"not_evaluable": []})}
    )
    edited = type(rule)(meta=stripped, path=rule.path, scope=rule.scope, when=rule.when)
    others = tuple(edited if r.id == "ACC-007" else r for r in ruleset.rules)
    changed = Ruleset(
        ruleset.name,
        ruleset.version,
        ruleset.directory,
        others,
        ruleset.derived,
        ruleset.constraints,
        ruleset.policy,
    )
    before = next(c for c in coverage(ruleset) if c.rule_id == "ACC-007")
    after = next(c for c in coverage(changed) if c.rule_id == "ACC-007")
    assert "unknown" in before.parts[0].seen
    assert "unknown" in after.parts[0].never


def test_cli_text_and_json() -> None:
    text = runner.invoke(app, ["rules", "test", "--coverage"])
    assert text.exit_code == 0, text.output
    assert "rules have every part of scope and condition seen true, false and unknown" in (
        text.output
    )
    data = json.loads(
        runner.invoke(app, ["rules", "test", "--coverage", "--format", "json"]).output
    )
    assert len(data["coverage"]) == len(RULESET.rules)
    assert all(
        set(p) == {"where", "part", "seen", "never"} for c in data["coverage"] for p in c["parts"]
    )
