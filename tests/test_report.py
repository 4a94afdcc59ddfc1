"""The clinician's text report: one screen by default, everything with --details, nothing raw."""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path

import pytest
from rich.console import Console

from engine.evaluate.reference import ReferenceEvaluator
from engine.io.cases import read_case
from engine.models import Result
from engine.report.text import Traces, render_text, technique_groups
from engine.report.trace import trace_rule
from engine.rules.loader import load_ruleset
from engine.screen import prepare, screen_values
from tests.conftest import ROOT, RULES_DIR

EXAMPLES = sorted((ROOT / "cases" / "examples").glob("*.yaml"))
RULESET = load_ruleset(RULES_DIR)
EVALUATOR = ReferenceEvaluator(RULESET)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MAX_LINES = 45


def screen_file(path: Path) -> tuple[Result, Traces]:
    case_id, values = read_case(str(path))
    result = screen_values(case_id, values, RULESET, EVALUATOR).result
    facts, _ = prepare(case_id, values, RULESET)
    traces = {rule.id: trace_rule(rule, facts) for rule in RULESET.rules}
    return result, traces


def screen_set(values: dict[str, object]) -> tuple[Result, Traces]:
    result = screen_values("T-1", values, RULESET, EVALUATOR).result  # type: ignore[arg-type]
    facts, _ = prepare("T-1", values, RULESET)  # type: ignore[arg-type]
    return result, {rule.id: trace_rule(rule, facts) for rule in RULESET.rules}


def report(result: Result, width: int = 100, *, terminal: bool = False, **options: object) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, force_terminal=terminal, no_color=not terminal, highlight=False
    )
    render_text(result, console, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_default_report_of_every_example_fits_one_screen(path: Path) -> None:
    result, _ = screen_file(path)
    lines = report(result).splitlines()
    assert len(lines) < MAX_LINES, f"{len(lines)} lines"
    assert all(len(line) <= 100 for line in lines)
    assert lines[1].startswith("Verdict: ")
    assert result.verdict.value in lines[1]
    assert lines[-1].startswith("Screening aid")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_details_carry_every_rationale_and_source(path: Path) -> None:
    result, traces = screen_file(path)
    text = flat(report(result, width=2000, details=True, traces=traces))
    for finding in [*result.findings, *result.conditional]:
        assert flat(finding.rationale) in text, finding.rule_id
        for source in finding.sources:
            assert flat(source.citation) in text, finding.rule_id
    assert flat(result.disclaimer) in text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_author_notes_and_citation_checks_never_reach_a_report(path: Path) -> None:
    result, traces = screen_file(path)
    text = flat(report(result, width=2000, details=True, traces=traces))
    for rule in RULESET.rules:
        if rule.meta.notes:
            assert flat(rule.meta.notes) not in text, rule.id
    assert "evidence V" not in text
    assert "verified" not in text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_default_report_never_prints_a_raw_condition(path: Path) -> None:
    result, _ = screen_file(path)
    text = report(result, width=200)
    for raw in ("==", ' in ["', "is known", "mis_technique in"):
        assert raw not in text


def test_red_flags_not_yet_excluded_come_first_even_under_urgent_review() -> None:
    sparse, _ = screen_set({"age_years": 45, "diagnosis": "disc_herniation"})
    text = report(sparse)
    assert sparse.verdict.value == "insufficient_data"
    assert text.index("Red flags not yet excluded: Cauda equina syndrome") > 0
    detailed = report(sparse, details=True)
    assert "Red flags not yet excluded: supply cauda_equina_syndrome (RED-001)" in detailed
    assert text.index("Red flags not yet excluded") < text.index("Findings")
    # a red flag has fired; another not yet excluded is still said, second only to the verdict
    urgent, _ = screen_set({"cauda_equina_syndrome": True, "lowest_level": "L4-L5"})
    assert urgent.verdict.value == "urgent_review"
    assert any(n.severity.value == "red_flag" for n in urgent.not_evaluable)
    text = report(urgent)
    assert 0 < text.index("Red flags not yet excluded") < text.index("Findings")


def test_considerations_are_grouped_by_technique_the_case_still_allows() -> None:
    sparse, _ = screen_set({"age_years": 45, "diagnosis": "disc_herniation"})
    text = report(sparse, width=200)
    line = next(li for li in text.splitlines() if "If endoscopic discectomy:" in li)
    assert "caution ACC-010, ACC-011" in line
    decompression, _ = screen_set(
        {"diagnosis": "spinal_stenosis", "planned_procedure": "decompression"}
    )
    groups, apart = technique_groups(decompression)
    assert set(groups) <= {"tubular_decompression", "endoscopic_decompression", "other"}
    assert groups
    assert not apart
    assert "endoscopic discectomy" not in report(decompression, width=200)


def test_ranked_questions_follow_next_questions_and_name_the_possible_verdicts() -> None:
    sparse, _ = screen_set({"age_years": 45, "diagnosis": "disc_herniation"})
    text = report(sparse, width=200)
    from engine.report.words import field_label, verdicts_words

    numbered = re.findall(r"^  (\d+)\. ([^:]+):", text, flags=re.MULTILINE)
    deciding = sparse.deciding_questions
    assert [name for _, name in numbered] == [field_label(n) for n in deciding[: len(numbered)]]
    assert "it could still be: " + verdicts_words(sparse.possible_verdicts) in flat(text)
    detailed = report(sparse, width=200, details=True)
    numbered = re.findall(r"^  (\d+)\. (\w+):", detailed, flags=re.MULTILINE)
    assert [name for _, name in numbered] == deciding[: len(numbered)]
    assert "verdicts still possible: " + ", ".join(v.value for v in sparse.possible_verdicts) in (
        flat(detailed)
    )


def test_details_trace_why_a_rule_fired_and_why_one_is_open() -> None:
    result, traces = screen_file(ROOT / "cases/examples/high-grade-spondylolisthesis-l5-s1.yaml")
    text = report(result, width=200, details=True, traces=traces)
    assert re.search(r"true\s+meyerding_grade >= 3\s+\(meyerding_grade = 3\)", text)
    sparse, sparse_traces = screen_set({"age_years": 45, "diagnosis": "disc_herniation"})
    text = report(sparse, width=200, details=True, traces=sparse_traces)
    assert re.search(
        r"unknown\s+cauda_equina_syndrome == true\s+\(cauda_equina_syndrome unknown", text
    )
    assert "Legend:" in text
    assert "Legend:" not in report(sparse)
    assert "Legend:" in report(sparse, legend=True)


def test_colour_only_on_a_terminal() -> None:
    result, _ = screen_set({"cauda_equina_syndrome": True})
    assert not ANSI.search(report(result))
    assert ANSI.search(report(result, terminal=True))


def test_a_hostile_case_id_is_printed_as_text() -> None:
    result, _ = screen_set({"bmi": 25})
    hostile = result.model_copy(update={"case_id": "[bold red]x[/bold red]"})
    assert "Case [bold red]x[/bold red]" in report(hostile)


def test_one_bad_file_among_several_is_reported_and_the_others_screened(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("case_id: B-1\nslip_pct: 3\n")
    good = [
        str(ROOT / "cases/examples/stenosis-l4-l5.yaml"),
        str(ROOT / "cases/examples/cauda-equina-l5-s1.yaml"),
    ]
    done = CliRunner().invoke(app, ["screen", good[0], str(bad), good[1], "--format", "brief"])
    assert done.exit_code == 2
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["EX-002", "EX-003"]
    assert f"error: {bad}: case_id B-1: unknown field 'slip_pct'" in done.stderr
    assert "1 of 3 case files could not be screened" in done.stderr
    # exit 2 wins over --fail-on: a file was not screened
    failing = CliRunner().invoke(app, ["screen", good[1], str(bad), "--fail-on", "urgent_review"])
    assert failing.exit_code == 2


def test_rules_show_names_constraints_and_derived_attributes() -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    shown = CliRunner().invoke(app, ["rules", "show", "CON-001"])
    assert shown.exit_code == 0, shown.stderr
    assert "narrows: pregnant" in shown.stdout
    assert 'when sex == "male"' in shown.stdout
    derived = CliRunner().invoke(app, ["rules", "show", "der-004"])
    assert derived.exit_code == 0, derived.stderr
    assert "field: tlics_score_derived" in derived.stdout
    assert "points: tlics_plc: intact 0, indeterminate 2, injured 3" in derived.stdout
    listed = CliRunner().invoke(app, ["rules", "list", "--all", "--format", "json"])
    kinds = {row.get("kind", "rule") for row in __import__("json").loads(listed.stdout)}
    assert kinds == {"rule", "constraint", "derived"}
    missing = CliRunner().invoke(app, ["rules", "show", "CON-999"])
    assert missing.exit_code == 2


# --- what a clinician types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "typed", "meant"),
    [
        ("sex", "Male", "male"),
        ("sex", "M", "male"),
        ("sex", "f", "female"),
        ("lowest_level", "l4-l5", "L4-L5"),
        ("lowest_level", "L4/L5", "L4-L5"),
        ("lowest_level", "L4-5", "L4-L5"),
        ("lowest_level", "l5 s1", "L5-S1"),
        ("diagnosis", "Disc herniation", "disc_herniation"),
        ("diagnosis", "tumour", "tumor"),
        ("mis_technique", "MIS TLIF", "mis_tlif"),
    ],
)
def test_obvious_spellings_are_read_as_the_value_they_mean(
    field: str, typed: str, meant: str
) -> None:
    from engine.io.cases import validate_case

    # a case file and a cohort row alike (issue 27: one normaliser for every entry point)
    _, values = validate_case({"case_id": "T-1", field: typed}, "test")
    assert values[field] == meant


@pytest.mark.parametrize(
    ("field", "typed", "hint"),
    [
        ("sex", "femal", "(did you mean 'female'?)"),
        ("lowest_level", "L4-L7", "(did you mean 'L4-L5'?)"),
        (
            "mis_technique",
            "endoscopic",
            "(ambiguous: one of endoscopic_discectomy, endoscopic_decompression)",
        ),
        ("planned_procedure", "d", "(ambiguous: one of decompression, discectomy, debridement)"),
    ],
)
def test_a_wrong_value_suggests_the_nearest_or_lists_the_choices(
    field: str, typed: str, hint: str
) -> None:
    from engine.errors import CaseInputError
    from engine.io.cases import validate_case

    with pytest.raises(CaseInputError) as raised:
        validate_case({"case_id": "T-1", field: typed}, "test")
    assert hint in str(raised.value.lines())


def test_common_field_aliases_get_a_did_you_mean_and_identifiers_stay_withheld() -> None:
    from engine.errors import CaseInputError
    from engine.io.cases import validate_case

    with pytest.raises(CaseInputError) as raised:
        validate_case({"case_id": "T-1", "age": 40}, "test")
    assert "unknown field 'age'; did you mean 'age_years'?" in str(raised.value.lines())
    with pytest.raises(CaseInputError) as raised:
        validate_case({"case_id": "T-1", "diagnosis": "jane.doe@example.org"}, "test")
    assert "jane.doe" not in str(raised.value.lines())


# --- help that teaches ----------------------------------------------------------------------------

COMMANDS = [
    ["screen"],
    ["batch"],
    ["synth"],
    ["rules", "list"],
    ["rules", "show"],
    ["rules", "check"],
    ["rules", "test"],
    ["rules", "docs"],
    ["schema", "case"],
    ["schema", "result"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_has_an_example_and_word_types(command: list[str]) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    done = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert done.exit_code == 0
    assert f"Example: miss-screen {' '.join(command)}" in done.stdout
    options = done.stdout.split("Options")[-1]
    assert "<str>" not in options
    assert "<path>" not in options
    assert "list[str]" not in options


def test_batch_help_keeps_the_dask_extra() -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    done = CliRunner().invoke(app, ["batch", "--help"], env={"COLUMNS": "200"})
    unwrapped = re.sub(r"-\s+", "-", " ".join(done.stdout.split()))  # plain help wraps at hyphens
    assert "pip install 'miss-screen[dask]'" in unwrapped


# --- the default report speaks the clinician's words (issue 28 item 5) ---------------------------

RULE_SYNTAX = re.compile(r"==|!=|>=|<=|\bnot_(?:evaluable|fired|applicable)\b")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_default_report_names_no_field_and_shows_no_rule_syntax(path: Path) -> None:
    """Labels, not field names; derived values in words; no condition text. (`--details` keeps
    the field names for those who want them: checked below.)"""
    from engine.dictionary import FIELDS_BY_NAME

    result, _ = screen_file(path)
    text = flat(report(result))
    named = sorted(n for n in FIELDS_BY_NAME if "_" in n and re.search(rf"\b{n}\b", text))
    assert named == [], path.stem
    assert RULE_SYNTAX.search(text) is None, RULE_SYNTAX.search(text)


def test_details_keep_field_names_and_wrap_the_condition_tree_at_its_indent() -> None:
    """A trace line too long for the width continues under its own text, not at the margin."""
    result, traces = screen_file(ROOT / "cases/examples/adult-deformity-sva-unknown.yaml")
    text = report(result, width=70, details=True, traces=traces)
    assert "sva_mm" in text
    trace = re.compile(r"^(\s+(?:\w+:)?\s+)(?:true|false|unknown)\s+")
    lines = text.splitlines()
    wrapped = 0
    for line, following in itertools.pairwise(lines):
        match = trace.match(line)
        if not match or not following.strip() or trace.match(following):
            continue
        indent = len(following) - len(following.lstrip())
        if indent > match.end(1):  # not a new row of the report
            assert indent == match.end(), (line, following)
            wrapped += 1
    assert wrapped  # the width forced some trace lines to wrap


def test_a_deciding_question_says_why_it_is_asked_from_the_rule_file() -> None:
    """With the rule set's reasons (as the CLI passes them), each numbered question says why it
    is asked: its worst open rule's `asks_because`, said once ('as for N' after); the cautions
    not yet excluded read the same way. A result alone falls back to the caution messages."""
    sparse, _ = screen_set({"age_years": 45, "diagnosis": "disc_herniation"})
    reasons = RULESET.asked_because
    text = flat(report(sparse, width=200, reasons=reasons))
    numbered = re.findall(r"\d+\. [^:]+: [a-z, ]+ — (.*?)(?= \d+\. | then: |$)", text)
    assert numbered
    because = {r.meta.asks_because for r in RULESET.rules if r.meta.asks_because}
    said = [n for n in numbered if not n.startswith("as for ")]
    assert said
    assert all(n in because for n in said)
    assert len(said) == len(set(said))  # each reason said once
    red = RULESET.by_id["RED-001"].meta.asks_because
    assert red is not None
    assert red in text
    assert red not in flat(report(sparse, width=200))  # no reasons given: none made up
    detailed = flat(report(sparse, width=200, reasons=reasons, details=True))
    assert red not in detailed.split("Questions that decide the verdict")[1].split("then:")[0]


def test_the_cli_report_explains_questions_with_the_rule_files_reasons(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    case = tmp_path / "c.yaml"
    case.write_text("case_id: c\nage_years: 45\ndiagnosis: disc_herniation\n")
    out = CliRunner().invoke(app, ["screen", str(case)])
    assert out.exit_code == 0, out.output
    red = RULESET.by_id["RED-001"].meta.asks_because
    assert red is not None
    assert red in flat(out.stdout)
