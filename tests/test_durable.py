"""durable-rules limits met at load time: match stack, JSON numbers, handle reuse, stamp."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import durable_rules_engine as dre
import pytest

from engine.derive import InconsistentInput, build_facts
from engine.dictionary import FIELDS_BY_NAME
from engine.errors import CaseInputError, RuleFileError
from engine.evaluate import durable as durable_module
from engine.evaluate.durable import (
    DurableEvaluator,
    check_slot_ids,
    compared_with_fields,
    rename,
    value_codes,
)
from engine.evaluate.layout import (
    CompiledRule,
    check_attributes,
    compile_rules,
    conjunctions,
    fnv1a_32,
    layout,
    to_durable_json,
)
from engine.evaluate.network import Node, add_pattern, limit_problems, stack_bound
from engine.evaluate.patterns import SLOTS, STACK_BUDGET, EngineError
from engine.evaluate.reference import ReferenceEvaluator
from engine.io.cases import validate_case
from engine.models import RuleStatus
from engine.rules.condition import parse_condition
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset
from engine.synth import generate_rows
from tests.conftest import RULES_DIR, RULESET

RULE_TEMPLATE = """\
id: ACC-{n:03d}
name: bmi-over-{n}
version: 1.0.0
category: access
severity: info
when: 'bmi > {threshold} and (diagnosis in ["fracture", "tumor"] or levels >= 2)'
message: Synthetic rule {n}.
rationale: Synthetic rule for the durable-rules stack limit test.
evidence: M
provisional: true
sources: [{{citation: "synthetic"}}]
cases:
  fires: [{{name: high, case: {{bmi: 89, levels: 3}}}}]
  does_not_fire: [{{name: low, case: {{bmi: 11, levels: 3}}}}]
  not_evaluable: [{{name: unknown, case: {{levels: 3}}, missing: [bmi]}}]
"""


def _empty_rule_base(root: Path) -> Path:
    """A rules directory with the bundled ruleset and policy files and no rules yet."""
    root.mkdir()
    for name in ("ruleset.yaml", "policy.yaml"):
        shutil.copy(RULES_DIR / name, root / name)
    (root / "access").mkdir()
    return root


@pytest.fixture(scope="module")
def wide_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 rules that all fire together for a heavy case: far beyond 64 simultaneous matches."""
    root = _empty_rule_base(tmp_path_factory.mktemp("wide") / "rules")
    for n in range(1, 121):
        text = RULE_TEMPLATE.format(n=n, threshold=10 + n * 0.5)
        (root / "access" / f"ACC-{n:03d}-bmi-over-{n}.yaml").write_text(text)
    return root


def _conjunctions(ruleset: Ruleset) -> list[dict[str, Any]]:
    return [{"$and": tests} for tests, _ in conjunctions(ruleset, compile_rules(ruleset).rules)]


def test_one_flat_ruleset_would_hit_error_303(wide_rules: Path) -> None:
    """The limit is real: all conjunctions directly under the guard overflow the match stack."""
    ruleset = load_ruleset(wide_rules)
    flat = {
        f"r{n}": {"all": [{"m": {"$and": [{"kind": "case"}, pattern]}}]}
        for n, pattern in enumerate(_conjunctions(ruleset))
    }
    root = Node(("", "root", ""))
    guard = root.child(("kind", "$eq", '"case"'))
    for pattern in _conjunctions(ruleset):
        add_pattern(guard, pattern)
    assert stack_bound(root) > 64  # the model predicts the failure ...
    handle = dre.create_ruleset("wide-flat", json.dumps(flat))
    with pytest.raises(Exception, match="303"):  # ... and durable-rules confirms it
        dre.assert_fact(
            handle,
            json.dumps(
                {
                    "kind": "case",
                    "sid": "0",
                    "id": 1,
                    "bmi": 89.0,
                    "levels": 3,
                    "diagnosis": "fracture",
                }
            ),
        )


def test_grouped_layout_screens_the_heavy_case(wide_rules: Path) -> None:
    ruleset = load_ruleset(wide_rules)
    plan = layout(conjunctions(ruleset, compile_rules(ruleset).rules))
    assert all(bound <= STACK_BUDGET for bound in plan.bounds)
    durable, reference = DurableEvaluator(ruleset), ReferenceEvaluator(ruleset)
    facts = build_facts({"bmi": 89.0, "levels": 3, "diagnosis": "fracture"}, ruleset)
    outcomes = durable.evaluate(facts)
    assert outcomes == reference.evaluate(facts)
    assert all(o.status == "fired" for o in outcomes)


def test_stack_bound_follows_durable_rules_walk() -> None:
    def bound(*patterns: dict[str, object]) -> int:
        root = Node(("", "root", ""))
        for pattern in patterns:
            add_pattern(root, pattern)  # type: ignore[arg-type]
        return stack_bound(root)

    assert bound({"a": 1}) == 1
    assert bound({"a": 1}, {"b": 2}) == 2  # two children of the root can both match
    assert bound({"a": 1}, {"a": 2}) == 1  # one attribute equals one value
    assert bound({"$and": [{"a": 1}, {"b": 2}]}, {"$and": [{"a": 1}, {"c": 3}]}) == 2  # merged
    assert bound({"$or": [{"$gt": {"x": 1}}, {"$lt": {"y": 1}}]}) == 2


def test_the_model_finds_next_lists_durable_rules_refuses() -> None:
    root = Node(("", "root", ""))
    for i in range(130):
        add_pattern(root, {"$or": [{"a": 1}, {"$nex": {f"f{i}": 1}}]})
    assert limit_problems(root)


def test_bundled_rules_fit_one_ruleset_within_the_stack_budget() -> None:
    compiled = compile_rules(RULESET).rules
    plan = layout(conjunctions(RULESET, compiled))
    assert len(plan.rulesets) == 1
    assert all(bound <= STACK_BUDGET for bound in plan.bounds)
    assert set(plan.rulesets[0]) == set(plan.targets)
    # every status pattern of every rule is stood for by some durable-rules rule
    expected = {(rule.index, bit) for rule in compiled for bit in rule.patterns}
    assert {target for targets in plan.targets.values() for target in targets} == expected


def test_floats_are_written_so_durable_rules_can_read_them() -> None:
    assert to_durable_json({"x": 1e-05, "y": 2.5, "z": True, "s": "L5-S1"}) == (
        '{"x":1.0e-05,"y":2.5,"z":true,"s":"L5-S1"}'
    )
    evaluator = DurableEvaluator(RULESET)
    facts = build_facts({"slip_percent": 1e-05, "diagnosis": "spondylolisthesis"}, RULESET)
    assert evaluator.evaluate(facts) == ReferenceEvaluator(RULESET).evaluate(facts)


def test_fnv_hash_matches_durable_rules() -> None:
    """Reference values of 32-bit FNV-1a, the hash durable-rules gives attribute names."""
    assert fnv1a_32("") == 0x811C9DC5
    assert fnv1a_32("a") == 0xE40C292C
    assert fnv1a_32("foobar") == 0xBF9CF968


def test_colliding_attribute_names_are_refused() -> None:
    # "costarring" and "liquid" are a known FNV-1a 32-bit collision
    assert fnv1a_32("costarring") == fnv1a_32("liquid")
    with pytest.raises(EngineError, match="share a 32-bit hash"):
        check_attributes(["costarring", "liquid"])


def test_too_many_attributes_are_refused() -> None:
    with pytest.raises(EngineError, match="attributes per fact"):
        check_attributes([f"field_{i}" for i in range(300)])


def test_a_condition_too_complex_for_one_pattern_is_a_rule_error(tmp_path: Path) -> None:
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    rule = copy / "access" / "ACC-008-llif-blocked-at-l5-s1.yaml"
    clauses = " or ".join(f"(bmi > {i} and levels > {i})" for i in range(1, 16))
    rule.write_text(
        rule.read_text().replace("when: 'lowest_level == \"L5-S1\"'", f"when: '{clauses}'")
    )
    with pytest.raises(RuleFileError, match=r"need 1\d and/or operators"):
        DurableEvaluator(load_ruleset(copy))


def test_handles_are_built_once_per_process() -> None:
    assert DurableEvaluator(RULESET).handles == DurableEvaluator(RULESET).handles


def test_every_conjunction_carries_the_case_guard_a_group_test_and_no_or() -> None:
    plan = layout(conjunctions(RULESET, compile_rules(RULESET).rules))
    for text in plan.texts:  # what durable-rules gets
        for rule in json.loads(text).values():
            guard, group, *tests = rule["all"][0]["m"]["$and"]
            assert guard == {"kind": "case"}
            assert group["$neq"]["kind"].startswith("g")
            assert tests
            assert all(len(test) == 1 and next(iter(test)) not in ("$and", "$or") for test in tests)


def test_stamp_is_stable_and_changes_with_a_threshold(tmp_path: Path) -> None:
    assert load_ruleset(RULES_DIR).sha256 == RULESET.sha256
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    rule = next((copy / "radiation").glob("RAD-005-*.yaml"))
    rule.write_text(rule.read_text().replace("bmi >= 40", "bmi >= 41"))
    assert load_ruleset(copy).sha256 != RULESET.sha256


ARITHMETIC_RULES = [
    "sva_mm - 50 > 45",
    "bmi > 25 + 5",
    "asa_class > levels",
    "pelvic_incidence_deg - lumbar_lordosis_deg > 20",
    "2 * levels > asa_class + 1",
    "(asa_class >= 1) and (asa_class > levels)",
    "not (coronal_cobb_deg > sva_mm * 2)",
]


def test_arithmetic_and_field_to_field_rules_agree_with_the_reference(tmp_path: Path) -> None:
    """Constant arithmetic must be folded, and a missing `$m` field must not match (review)."""
    root = _empty_rule_base(tmp_path / "rules")
    for n, when in enumerate(ARITHMETIC_RULES, start=1):
        text = RULE_TEMPLATE.format(n=n, threshold=0).replace(
            'when: \'bmi > 0 and (diagnosis in ["fracture", "tumor"] or levels >= 2)\'',
            f"when: '{when}'",
        )
        (root / "access" / f"ACC-{n:03d}-bmi-over-{n}.yaml").write_text(text)
    ruleset = load_ruleset(root)
    durable, reference = DurableEvaluator(ruleset), ReferenceEvaluator(ruleset)
    fields = [
        "sva_mm",
        "bmi",
        "asa_class",
        "levels",
        "pelvic_incidence_deg",
        "lumbar_lordosis_deg",
        "coronal_cobb_deg",
    ]
    values = {
        "sva_mm": [-10.0, 0.0, 95.0, 120.0],
        "bmi": [20.0, 30.0, 35.0],
        "asa_class": [1, 3, 5],
        "levels": [1, 3],
        "pelvic_incidence_deg": [40.0, 70.0],
        "lumbar_lordosis_deg": [30.0, 50.0],
        "coronal_cobb_deg": [10.0, 80.0],
    }
    import random

    rng = random.Random(5)  # noqa: S311  # test data, not secrets
    checked = 0
    for _ in range(600):
        case = {f: rng.choice(values[f]) for f in fields if rng.random() < 0.7}
        facts = build_facts(case, ruleset)
        assert durable.evaluate(facts) == reference.evaluate(facts), case
        checked += 1
    assert checked == 600
    facts = build_facts({"asa_class": 3}, ruleset)  # levels missing: the `$m` case of the review
    assert {o.status for o in durable.evaluate(facts) if o.rule_id == "ACC-003"} == {
        "not_evaluable"
    }


def test_a_batch_that_fails_while_draining_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch is drained and retracted before its actions are read, so a failure reading them
    leaves nothing behind: the next batch (same slot ids) is screened correctly."""
    evaluator = DurableEvaluator(RULESET)
    reference = ReferenceEvaluator(RULESET)
    facts = [
        build_facts(
            {"diagnosis": "disc_herniation", "levels": n % 3 + 1, "age_years": 30 + n}, RULESET
        )
        for n in range(SLOTS + 6)  # two batches
    ]
    monkeypatch.setattr(evaluator, "_names", {})  # every action name is now unknown
    with pytest.raises(EngineError, match="did not define"):
        evaluator.evaluate_many(facts)
    monkeypatch.undo()
    assert evaluator.evaluate_many(facts) == [reference.evaluate(f) for f in facts]


def test_slot_ids_hash_apart() -> None:
    """Slot ids are compared by 32-bit hash in durable-rules: they must all differ."""
    check_slot_ids(SLOTS)
    hashes = {fnv1a_32(str(slot)) for slot in range(1, SLOTS + 1)}
    assert len(hashes) == SLOTS


def test_a_failure_inside_durable_rules_stops_the_evaluator(
    monkeypatch: pytest.MonkeyPatch, wide_rules: Path
) -> None:
    """If durable-rules itself fails mid-batch its state may be locked, and later batches would
    silently match nothing: every evaluator on those handles refuses to continue instead."""
    ruleset = load_ruleset(wide_rules)  # its own handles: the shared ones stay usable
    evaluator = DurableEvaluator(ruleset)
    facts = build_facts({"bmi": 80, "levels": 3}, ruleset)

    def fail(*_: object) -> None:
        raise RuntimeError("simulated engine failure")

    monkeypatch.setattr(dre, "complete_and_start_action", fail)
    with pytest.raises(EngineError, match="simulated engine failure"):
        evaluator.evaluate(facts)
    monkeypatch.undo()
    for again in (evaluator, DurableEvaluator(ruleset)):
        with pytest.raises(EngineError, match="failed earlier"):
            again.evaluate(facts)


def test_renaming_touches_attribute_names_only() -> None:
    """Aliases replace attribute names (keys and `$m` references), never values or operators."""
    aliases = {"diagnosis": "_0", "levels": "_1", "bmi": "_2"}
    pattern = {
        "$and": [
            {"diagnosis": "levels"},  # a value that happens to look like a field name
            {"$gt": {"levels": {"$add": {"$l": {"$m": "bmi"}, "$r": 2}}}},
            {"$nex": {"bmi": 1}},
            {"kind": "case"},
        ]
    }
    assert rename(pattern, aliases) == {
        "$and": [
            {"_0": "levels"},
            {"$gt": {"_1": {"$add": {"$l": {"$m": "_2"}, "$r": 2}}}},
            {"$nex": {"_2": 1}},
            {"kind": "case"},
        ]
    }


def test_facts_travel_under_short_names_and_come_back_whole() -> None:
    evaluator = DurableEvaluator(RULESET)
    facts = build_facts(
        {"diagnosis": "disc_herniation", "levels": 2, "bmi": 31.5, "diabetes": True}, RULESET
    )
    body = evaluator.body(facts)
    assert '"diagnosis"' not in body  # short names on the wire
    assert '"_' in body
    sent = evaluator.encode(facts)
    assert {k: v for k, v in sent.items() if not k.startswith("__ro__")} == {
        k: v for k, v in facts.values.items() if k in RULESET.fields_read
    }


def test_every_cohort_fact_travels_whole_with_its_types_first_time_and_from_kept_texts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """body() splices kept texts: enumerated values made at start, numbers kept as they come
    (up to a bound, past which they are made each time); each way gives the fact back."""
    monkeypatch.setattr(durable_module, "FACT_TEXTS", 400)  # reached within the cohort
    evaluator = DurableEvaluator(RULESET)
    cases = []
    for number, row in enumerate(generate_rows(1500, seed=5), 1):
        try:
            cases.append(build_facts(validate_case(row, "synthetic", row=number)[1], RULESET))
        except (CaseInputError, InconsistentInput):
            continue
    for _ in range(2):
        for facts in cases:
            sent = evaluator.encode(facts)
            expected = {k: v for k, v in facts.values.items() if k in RULESET.fields_read}
            shown = {k: v for k, v in sent.items() if not k.startswith("__ro__")}
            assert shown == expected
            assert {k: type(v) for k, v in shown.items()} == {
                k: type(v) for k, v in expected.items()
            }
    assert len(evaluator._texts) >= 400  # the bound was reached: later numbers made each time


def test_a_negative_zero_and_a_zero_each_travel_with_their_own_sign() -> None:
    """-0.0 == 0.0 (one dict key), but their texts differ: neither is kept for the other."""
    evaluator = DurableEvaluator(RULESET)
    for sva in (0.0, -0.0, 0.0, -0.0):
        facts = build_facts({"sva_mm": sva, "levels": 2}, RULESET)
        assert repr(evaluator.encode(facts)["sva_mm"]) == repr(sva)


def test_enum_and_boolean_constants_travel_as_codes() -> None:
    """Codes replace the constants compared with coded fields, never `$ex`/`$nex`'s dummy 1."""
    codes = value_codes(["diagnosis", "diabetes", "levels"])
    assert codes[("diabetes", False)] == 0
    assert codes[("diabetes", True)] == 1
    assert ("levels", 1) not in codes  # numbers keep their values
    position = FIELDS_BY_NAME["diagnosis"].values.index("fracture")
    pattern = {
        "$and": [
            {"diagnosis": "fracture"},
            {"$neq": {"diabetes": True}},
            {"$ex": {"diabetes": 1}},
            {"$nex": {"diagnosis": 1}},
            {"levels": 1},
        ]
    }
    assert rename(pattern, {}, codes) == {
        "$and": [
            {"diagnosis": position},
            {"$neq": {"diabetes": 1}},
            {"$ex": {"diabetes": 1}},
            {"$nex": {"diagnosis": 1}},
            {"levels": 1},
        ]
    }


def test_fields_compared_with_fields_keep_their_values() -> None:
    """A field-to-field comparison (`$m`) compares values across fields: no codes there."""
    text = 'sex == "male" and not (pelvic_incidence_deg > lumbar_lordosis_deg + 10)'
    cond = parse_condition(text, FIELDS_BY_NAME)
    assert compared_with_fields([cond]) == {"pelvic_incidence_deg", "lumbar_lordosis_deg"}


def test_a_rule_unknown_when_nothing_fires_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Untouched rules take a shared default outcome, which cannot name a case's missing data:
    a rule whose condition would be unknown with no pattern matching is refused at load."""
    import engine.evaluate.durable as durable

    real = durable.compile_rules

    def folded(ruleset: Any) -> Any:
        compiled = real(ruleset)
        first = compiled.rules[0]  # "not evaluable" folded to always true
        unknown = (RuleStatus.not_evaluable, None)
        compiled.rules[0] = CompiledRule(first.index, {}, unknown)
        return compiled

    monkeypatch.setattr(durable, "compile_rules", folded)
    monkeypatch.setenv("MISS_SCREEN_CACHE_DIR", "")  # compiled now, not read from the cache
    with pytest.raises(EngineError, match="unknown when none of its patterns fires"):
        DurableEvaluator(RULESET)


def test_status_patterns_are_exclusive_and_a_clash_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A case matches at most one status pattern of a rule; were two to match (a compiler
    bug), the evaluator says so instead of picking one."""
    evaluator = DurableEvaluator(RULESET)
    facts = build_facts({"diagnosis": "disc_herniation", "levels": 1, "bmi": 42.0}, RULESET)
    assert evaluator.evaluate(facts) == ReferenceEvaluator(RULESET).evaluate(facts)
    clashing = {
        name: (*targets, *((index, 16 if bit != 16 else 8) for index, bit in targets))
        for name, targets in evaluator._names.items()
    }
    monkeypatch.setattr(evaluator, "_names", clashing)
    with pytest.raises(EngineError, match="matched two statuses at once"):
        evaluator.evaluate(facts)


def test_rules_with_the_same_condition_share_one_durable_rules_rule(tmp_path: Path) -> None:
    root = _empty_rule_base(tmp_path / "rules")
    for n in (1, 2):
        text = RULE_TEMPLATE.format(n=n, threshold=30)
        (root / "access" / f"ACC-{n:03d}-bmi-over-{n}.yaml").write_text(text)
    ruleset = load_ruleset(root)
    plan = layout(conjunctions(ruleset, compile_rules(ruleset).rules))
    assert all(len(targets) == 2 for targets in plan.targets.values())
    assert {index for targets in plan.targets.values() for index, _ in targets} == {0, 1}
    facts = build_facts({"bmi": 35.0, "levels": 3}, ruleset)
    outcomes = DurableEvaluator(ruleset).evaluate(facts)
    assert [o.status for o in outcomes] == ["fired", "fired"]
    assert outcomes == ReferenceEvaluator(ruleset).evaluate(facts)


def _one_rule_base(tmp_path: Path, scope: str | None, when: str) -> Ruleset:
    root = _empty_rule_base(tmp_path / "rules")
    text = RULE_TEMPLATE.format(n=1, threshold=30).replace(
        'when: \'bmi > 30 and (diagnosis in ["fracture", "tumor"] or levels >= 2)\'',
        (f"scope: '{scope}'\n" if scope else "") + f"when: '{when}'",
    )
    (root / "access" / "ACC-001-bmi-over-1.yaml").write_text(text)
    return load_ruleset(root)


def test_a_rule_base_with_nothing_to_match_still_screens(tmp_path: Path) -> None:
    """A condition that folds to a constant leaves durable-rules no conjunction at all."""
    ruleset = _one_rule_base(tmp_path, None, "bmi > 30 or true")
    durable = DurableEvaluator(ruleset)
    assert durable.layout.rulesets == []
    facts = build_facts({"levels": 3}, ruleset)
    assert [o.status for o in durable.evaluate(facts)] == ["fired"]
    assert durable.evaluate(facts) == ReferenceEvaluator(ruleset).evaluate(facts)


def test_a_wide_and_stays_one_pattern_and_agrees_with_the_reference(tmp_path: Path) -> None:
    """ "Unknown" of an `and` of k comparisons has 2^k - 1 conjunctions: past the limit the
    status pattern stays whole (with its `$or`s), as the rule reads."""
    fields = ["bmi", "levels", "asa_class", "sva_mm", "coronal_cobb_deg", "pelvic_incidence_deg"]
    fields += ["lumbar_lordosis_deg", "slip_percent", "age_years"]
    when = " and ".join(f"{field} > 2" for field in fields)  # 9 comparisons: 511 conjunctions
    ruleset = _one_rule_base(tmp_path, "levels >= 2 and asa_class >= 2", when)
    durable, reference = DurableEvaluator(ruleset), ReferenceEvaluator(ruleset)
    whole = [r for r in durable.layout.rulesets[0].values() if "$or" in json.dumps(r)]
    assert whole  # some status pattern was kept whole
    import random

    rng = random.Random(9)  # noqa: S311  # test data, not secrets
    cases = [
        build_facts({f: rng.choice([1, 5]) for f in fields if rng.random() < 0.8}, ruleset)
        for _ in range(400)
    ]
    statuses = {o.status for outcomes in durable.evaluate_many(cases) for o in outcomes}
    assert durable.evaluate_many(cases) == [reference.evaluate(f) for f in cases]
    assert {"fired", "not_fired", "not_evaluable", "not_applicable", "conditional"} <= statuses
