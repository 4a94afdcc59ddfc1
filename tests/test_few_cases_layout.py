"""The few-cases durable-rules layout (`screen`, issue 29 item 4) gives the expanded one's outcomes.

`miss-screen screen` builds durable-rules with each status pattern expanded as little as
durable-rules takes (engine/evaluate/layout.py FEW_CASES_LIMITS): about a third of the rules, so
a cold start spends less in `create_ruleset`; batches and the service keep the expanded layout.
Only the cost may differ: these tests hold the two layouts to the same result on every golden and
anatomy case and to the same outcome of every rule on a synthetic cohort, check that `screen`
really uses the smaller layout, and that a damaged or foreign cache entry for it is ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.derive import build_facts
from engine.errors import CaseInputError
from engine.evaluate import cache
from engine.evaluate.conjunctions import whole
from engine.evaluate.durable import DurableEvaluator
from engine.io.cases import validate_case
from engine.models import Result
from engine.screener import Screener
from engine.synth import generate_rows
from tests.conftest import ROOT, RULESET
from tests.test_anatomy import CASES as ANATOMY
from tests.test_anatomy import anatomy_case
from tests.test_engines_differential import GOLDENS

EXAMPLE = ROOT / "cases" / "examples" / "disc-herniation-l4-l5.yaml"


@pytest.fixture(scope="module")
def both() -> tuple[Screener, Screener]:
    """The expanded-layout screener and the few-cases one, on the bundled rules."""
    few = Screener.from_ruleset(RULESET, few_cases=True)
    return Screener.from_ruleset(RULESET), few


def _results(screener: Screener, cases: list[dict[str, object]]) -> list[str]:
    found = []
    for case in cases:
        try:
            found.append(screener.screen(case).model_dump_json())
        except CaseInputError as error:  # an input error must be the same error too
            found.append(f"input error: {error}")
    return found


def _first_differences(labels: list[str], want: list[str], got: list[str]) -> list[str]:
    return [label for label, a, b in zip(labels, want, got, strict=True) if a != b][:5]


@pytest.mark.timeout(300)
def test_every_golden_case_gives_the_same_result_on_both_layouts(
    both: tuple[Screener, Screener],
) -> None:
    expanded, few = both
    cases = [{"case_id": g.case_id, **g.case} for g in GOLDENS]
    labels = [f"{g.rule_id}::{g.kind}::{g.name}" for g in GOLDENS]
    want, got = _results(expanded, cases), _results(few, cases)
    assert _first_differences(labels, want, got) == []
    assert sum(isinstance(Result.model_validate_json(r), Result) for r in want) > 300


@pytest.mark.timeout(600)
def test_every_anatomy_case_gives_the_same_result_on_both_layouts(
    both: tuple[Screener, Screener],
) -> None:
    expanded, few = both
    cases = [{"case_id": f"A-{n}", **anatomy_case(*combo)} for n, combo in enumerate(ANATOMY)]
    labels = [f"{level} x{levels} {dx} {procedure}" for level, levels, dx, procedure in ANATOMY]
    assert len(cases) > 3000
    assert _first_differences(labels, _results(expanded, cases), _results(few, cases)) == []


@pytest.mark.timeout(300)
def test_every_rule_outcome_is_the_same_on_both_layouts_over_a_cohort() -> None:
    """Rule by rule, not only the verdict: 3,000 synthetic cases with values missing."""
    facts = []
    for n, row in enumerate(generate_rows(3000, 29, missing=0.3, corrupt=0.0)):
        try:
            _, values = validate_case(dict(row), "<synth>", row=n)
        except CaseInputError:  # a row the generator made invalid: not a case
            continue
        facts.append(build_facts(values, RULESET))
    assert len(facts) > 2000
    expanded = DurableEvaluator(RULESET).evaluate_many(facts)
    few = DurableEvaluator(RULESET, few_cases=True).evaluate_many(facts)
    assert few == expanded


@pytest.mark.timeout(120)
def test_the_few_cases_layout_is_smaller_and_keeps_parts_whole() -> None:
    """What it is for: far fewer durable-rules rules to build, some with `$or` kept whole."""
    expanded = DurableEvaluator(RULESET).layout
    few = DurableEvaluator(RULESET, few_cases=True).layout
    assert len(few.targets) * 2 < len(expanded.targets)
    assert sum(map(len, few.texts)) * 3 < sum(map(len, expanded.texts)) * 2
    kept_whole = [
        test
        for rules in few.rulesets
        for rule in rules.values()
        for test in rule["all"][0]["m"]["$and"]
        if whole(test)
    ]
    assert kept_whole
    # every status pattern the expanded layout stands for, the few-cases one stands for too
    stands_for = {pair for pairs in few.targets.values() for pair in pairs}
    assert stands_for == {pair for pairs in expanded.targets.values() for pair in pairs}


@pytest.mark.timeout(120)
def test_the_two_layouts_have_their_own_cache_entries_and_handles(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV, str(tmp_path))
        few = DurableEvaluator(RULESET, few_cases=True)
        expanded = DurableEvaluator(RULESET)
    assert cache.layout_key(RULESET.sha256, "few") != cache.layout_key(RULESET.sha256)
    assert (tmp_path / f"layout-{cache.layout_key(RULESET.sha256, 'few')}.json").is_file()
    assert (tmp_path / f"layout-{cache.layout_key(RULESET.sha256)}.json").is_file()
    assert set(few.handles).isdisjoint(expanded.handles)


@pytest.mark.hostile
@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", ["garbage", "truncated", "expanded layout", "other rule"])
def test_a_damaged_or_foreign_few_cases_entry_is_ignored(tmp_path: Path, damage: str) -> None:
    """A few-cases entry that is not byte for byte what this code wrote for these rules is
    recomputed: garbage, a cut-off file, the expanded layout's file under the few-cases name
    (its key is the other one), and a valid file whose targets were moved to another rule."""
    facts = [
        build_facts(validate_case(dict(row), "<synth>")[1], RULESET)
        for row in generate_rows(200, 7, missing=0.2, corrupt=0.0)
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV, str(tmp_path))
        want = DurableEvaluator(RULESET, few_cases=True)
        DurableEvaluator(RULESET)
        few_path = tmp_path / f"layout-{cache.layout_key(RULESET.sha256, 'few')}.json"
        expanded_path = tmp_path / f"layout-{cache.layout_key(RULESET.sha256)}.json"
        text = few_path.read_text()
        if damage == "garbage":
            few_path.write_bytes(b"\x00\xffnot json{")
        elif damage == "truncated":
            few_path.write_text(text[: len(text) // 2])
        elif damage == "expanded layout":
            few_path.write_text(expanded_path.read_text())
        else:
            data = json.loads(text)
            name = next(iter(data["targets"]))
            data["targets"][name] = [[len(RULESET.rules) + 5, 2]]  # a rule that does not exist
            few_path.write_text(json.dumps(data))
        again = DurableEvaluator(RULESET, few_cases=True)
    assert again.layout.texts == want.layout.texts
    assert again.layout.targets == want.layout.targets
    assert again.evaluate_many(facts) == DurableEvaluator(RULESET).evaluate_many(facts)
    assert json.loads(few_path.read_text())["targets"] == {
        name: [list(pair) for pair in pairs] for name, pairs in want.layout.targets.items()
    }


@pytest.mark.timeout(300)
def test_the_screen_command_builds_the_few_cases_layout(tmp_path: Path) -> None:
    """`screen` as the program writes (and so reads) the few-cases entry, and no other."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        cache.CACHE_ENV: str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "screen", str(EXAMPLE), "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["case_id"] == "EX-001"
    written = {p.name for p in tmp_path.glob("layout-*.json")}
    assert written == {f"layout-{cache.layout_key(RULESET.sha256, 'few')}.json"}
