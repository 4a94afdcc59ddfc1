"""The condition language: a whitelist parser that returns a typed tree or a RuleFileError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.errors import RuleFileError
from engine.rules.condition import (
    And,
    Arith,
    Compare,
    Cond,
    Const,
    FieldRef,
    Known,
    Member,
    Not,
    Or,
    Truth,
    arith,
    parse_condition,
    to_text,
)
from engine.rules.logic import compile_kleene

F = FIELDS_BY_NAME


def parse(text: str) -> Cond:
    return parse_condition(text, F)


def test_arithmetic_is_normalised_with_a_field_alone_on_the_left() -> None:
    assert parse("pelvic_incidence_deg - lumbar_lordosis_deg > 20") == Compare(
        ">", "pelvic_incidence_deg", Arith("+", FieldRef("lumbar_lordosis_deg"), Const(20))
    )
    assert parse("20 < bmi") == Compare(">", "bmi", Const(20))


def test_chained_comparison_is_a_conjunction() -> None:
    assert parse("25 <= surgeon_mis_cases < 72") == And(
        (
            Compare(">=", "surgeon_mis_cases", Const(25)),
            Compare("<", "surgeon_mis_cases", Const(72)),
        )
    )


def test_known_forms() -> None:
    assert parse("sva_mm is known") == Known("sva_mm")
    assert parse("sva_mm is unknown") == Known("sva_mm", negated=True)
    assert parse("known(sva_mm)") == Known("sva_mm")
    assert parse("sva_mm is not known") == Known("sva_mm", negated=True)


def test_bare_boolean_field_means_true() -> None:
    assert parse("not sepsis") == Not(Compare("==", "sepsis", Const(True)))


def test_membership() -> None:
    assert parse('region not in ["cervical", "thoracic"]') == Member(
        "region", ("cervical", "thoracic"), negated=True
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", "function calls are not allowed"),
        ("eval('1')", "function calls are not allowed"),
        ("bmi.real > 1", "attribute access"),
        ("[x for x in bmi]", "not a condition"),
        ("bmi if sepsis else 1", "not a condition"),
        ("bmi ** 2 > 3", "Pow is not allowed"),
        ("bmi / 2 > 3", "division is not allowed"),
        ("bmi > 2 > 'a'", "not a number"),
        ("age_years", "is a integer field, not a condition"),
        ("diagnosis in []", "is empty"),
        ("sepsis in [true]", "not 'in'"),
        ("bmi is 3", "'is' is only allowed"),
        ("bmi", "not a condition"),
        ("x" * 5000, "longer than"),
        ("2 * bmi > 3 * sva_mm", "put one field alone"),
        ("1 < 2", "put one field alone"),
        ("(" * 300 + "sepsis" + ")" * 300, ""),
    ],
)
def test_outside_the_whitelist_is_refused(text: str, message: str) -> None:
    with pytest.raises(RuleFileError) as info:
        parse(text)
    assert message in str(info.value)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=80))
def test_any_string_gives_a_tree_or_a_rule_file_error(text: str) -> None:
    with contextlib.suppress(RuleFileError):
        parse(text)


TOKENS = st.sampled_from(
    [
        "bmi",
        "sepsis",
        "diagnosis",
        "levels",
        "mis_technique",
        "sva_mm",
        "==",
        "!=",
        "<",
        ">=",
        "in",
        "not",
        "and",
        "or",
        "(",
        ")",
        "[",
        "]",
        ",",
        '"fracture"',
        '"llif"',
        "30",
        "-2.5",
        "+",
        "-",
        "*",
        "is",
        "known",
        "unknown",
        "true",
        "false",
        "known(",
        "__import__",
        ".",
        "lambda",
        ":",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(TOKENS, min_size=1, max_size=12))
def test_token_soup_gives_a_tree_or_a_rule_file_error(tokens: list[str]) -> None:
    with contextlib.suppress(RuleFileError):
        parse(" ".join(tokens))


NUMERIC = [n for n, s in F.items() if s.type in (FieldType.integer, FieldType.number)]
ENUMS = [n for n, s in F.items() if s.type is FieldType.enum]
BOOLS = [n for n, s in F.items() if s.type is FieldType.boolean]
numbers = st.one_of(
    st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: x != 0)
)


def expressions(depth: int = 2) -> st.SearchStrategy[object]:
    leaf = st.one_of(st.builds(Const, numbers), st.builds(FieldRef, st.sampled_from(NUMERIC)))
    if depth == 0:
        return leaf
    return st.one_of(
        leaf,
        st.builds(  # built as the parser builds them: constants folded
            arith, st.sampled_from(["+", "-", "*"]), expressions(depth - 1), expressions(depth - 1)
        ),
    )


def enum_compare(draw: st.DrawFn) -> Cond:
    name = draw(st.sampled_from(ENUMS))
    return Compare(
        draw(st.sampled_from(["==", "!="])), name, Const(draw(st.sampled_from(F[name].values)))
    )


leaves = st.one_of(
    st.builds(
        Compare,
        st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
        st.sampled_from(NUMERIC),
        expressions(),
    ),
    st.composite(lambda draw: enum_compare(draw))(),
    st.builds(lambda n, v: Compare("==", n, Const(v)), st.sampled_from(BOOLS), st.booleans()),
    st.composite(
        lambda draw: Member(
            (name := draw(st.sampled_from(ENUMS))),
            tuple(
                draw(st.lists(st.sampled_from(F[name].values), min_size=1, max_size=4, unique=True))
            ),
            draw(st.booleans()),
        )
    )(),
    st.builds(Known, st.sampled_from([n for n in F if n != "case_id"]), st.booleans()),
    st.builds(Truth, st.booleans()),
)
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda items: And(tuple(items)), st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda items: Or(tuple(items)), st.lists(inner, min_size=2, max_size=3)),
        st.builds(Not, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=2000, deadline=None)
@given(conditions)
def test_parse_of_unparse_is_the_same_tree(cond: Cond) -> None:
    assert parse(to_text(cond)) == cond


def test_kleene_truth_tables() -> None:
    unknown, true, false = "bmi > 30", "sepsis", "not sepsis"
    values = {"sepsis": True}
    table = {
        f"({false}) and ({unknown})": False,
        f"({true}) and ({unknown})": None,
        f"({true}) or ({unknown})": True,
        f"({false}) or ({unknown})": None,
        f"not ({unknown})": None,
        "bmi is known": False,
        "bmi is unknown": True,
    }
    for text, expected in table.items():
        assert compile_kleene(parse(text))(values, {}) is expected, text


def test_unknown_enum_is_decided_over_the_values_left_possible() -> None:
    cond = parse('mis_technique in ["tubular_discectomy", "endoscopic_discectomy"]')
    narrowed = {"mis_technique": frozenset({"tubular_discectomy", "endoscopic_discectomy"})}
    assert compile_kleene(cond)({}, narrowed) is True
    assert compile_kleene(parse('mis_technique == "llif"'))({}, narrowed) is False
    assert compile_kleene(parse('mis_technique == "tubular_discectomy"'))({}, narrowed) is None
    assert compile_kleene(parse('mis_technique == "llif"'))({}, {}) is None


def test_narrow_drops_values_the_constraints_rule_out() -> None:
    from engine.rules.logic import narrow

    possible = {
        "mis_technique": frozenset({"tubular_discectomy", "endoscopic_discectomy", "other"})
    }
    scope = parse('mis_technique in ["tubular_discectomy", "llif"] or mis_technique == "mis_tlif"')
    assert to_text(narrow(scope, possible)) == 'mis_technique in ["tubular_discectomy"]'
    assert narrow(parse('mis_technique == "llif"'), possible) == Truth(False)
    assert narrow(parse('mis_technique == "llif"'), {}) == parse('mis_technique == "llif"')


def test_arithmetic_on_constants_is_folded() -> None:
    """durable-rules never matches an expression that reads no field (found in review)."""
    assert parse("sva_mm - 50 > 45") == Compare(">", "sva_mm", Const(95))
    assert parse("bmi > 25 + 5") == Compare(">", "bmi", Const(30))
    assert parse("-sva_mm > 5") == Compare("<", "sva_mm", Const(-5))
