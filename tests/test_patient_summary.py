"""The patient summary (issue 30): for every bundled example, plain (Flesch-Kincaid grade 8 or
lower, textstat), balanced (every fired benefit, limit and caution, nothing that did not fire),
anonymous (no rule id, field name or case id), red flags first, warning signs while a red flag is
open, and one printed page; then its faces (CLI, Result, web form), its words file and hostile
input."""

from __future__ import annotations

import csv
import dataclasses
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import textstat
import yaml
from fastapi.testclient import TestClient
from markupsafe import escape
from pypdf import PdfReader
from typer.testing import CliRunner

from engine import Screener
from engine.cli import app
from engine.dictionary import SETTING_FIELDS
from engine.errors import RuleFileError, UsageError
from engine.evaluate.reference import ReferenceEvaluator
from engine.io.cases import read_case
from engine.models import Category, Result, SafetyNet, Scalar, Severity, SourceRef
from engine.report.patient import (
    PatientSummary,
    as_sentence,
    build_patient_summary,
    patient_summary,
    relevant_fields,
    render_patient_html,
    render_patient_text,
    source_of,
)
from engine.report.patient_words import load_patient_words
from engine.rules.ruleset import Ruleset
from engine.screen import screen_values
from engine.service.app import ServiceConfig, create_app
from tests.conftest import ROOT, RULES_DIR, RULESET
from tests.test_case_html import Assets, pdf_text
from tests.test_html_report import run_chromium

pytestmark = pytest.mark.timeout(300)

EXAMPLES = sorted((ROOT / "cases" / "examples").glob("*.yaml"))
EVALUATOR = ReferenceEvaluator(RULESET)
WORDS = load_patient_words(RULES_DIR)
MAX_GRADE = 8.0
RULE_ID = re.compile(r"\b(?:ACC|CPX|RAD|EQP|EVD|BEN|RED|IND|DER|CON)-\d{3}\b")
FIELD_NAME = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
runner = CliRunner()


def screened(path: Path, ruleset: Ruleset = RULESET) -> tuple[Result, dict[str, Scalar]]:
    case_id, values = read_case(str(path))
    evaluator = EVALUATOR if ruleset is RULESET else ReferenceEvaluator(ruleset)
    return screen_values(case_id, values, ruleset, evaluator).result, values


def section_items(summary: PatientSummary, key: str) -> list[str]:
    return [item for s in summary.sections if s.key == key for item in s.items]


class VisibleText(HTMLParser):
    """The words a reader of the page sees, in reading order: no style, no head, no markup."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hidden += tag in ("head", "style")
        self.parts.append("\n")  # a tag never joins two words

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in ("head", "style")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = VisibleText()
    parser.feed(page)
    return "".join(parser.parts)


def unwrapped(text: str) -> str:
    return " ".join(text.split())


def patient_text(rule_id: str) -> str:
    text = RULESET.by_id[rule_id].meta.patient
    assert text is not None, rule_id
    return unwrapped(text)


# --- every bundled example ------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_is_plain_anonymous_and_balanced(path: Path) -> None:
    result, values = screened(path)
    summary = build_patient_summary(result, RULESET, case=values)
    text = render_patient_text(summary)
    page = render_patient_html(summary)
    # plain: the reading grade of exactly what is printed, the text and the page's visible
    # words, as textstat splits them (at . ! ? only: headings and list items read as sentences)
    sentences = [summary.title, *(s.heading for s in summary.sections)]
    sentences += [item for s in summary.sections if not s.inline for item in s.items]
    for unit in sentences:  # each a sentence of its own (short words: one paragraph)
        assert not unit or unit[-1] in ".?!", (path.stem, unit)
    for shown in (text, visible_text(page)):
        grade = textstat.flesch_kincaid_grade(shown)
        assert grade <= MAX_GRADE, (path.stem, grade)
    # anonymous and free of engine words, in the text and the page alike
    for shown in (text, page):
        assert not RULE_ID.search(shown), RULE_ID.search(shown)
        assert not FIELD_NAME.search(
            unwrapped(re.sub(r"<style>.*?</style>", "", shown, flags=re.S))
        ), path.stem
        assert result.case_id not in shown
    # balanced: each fired finding is said where it belongs, and only the fired ones
    fired = {f.rule_id: f for f in result.findings}
    benefits = [r for r, f in fired.items() if f.category is Category.benefit]
    red = [r for r, f in fired.items() if f.severity is Severity.red_flag]
    limits = [r for r in fired if r not in benefits and r not in red]
    assert section_items(summary, "benefits") == list(dict.fromkeys(map(patient_text, benefits)))
    assert section_items(summary, "talk") == list(dict.fromkeys(map(patient_text, limits)))
    assert section_items(summary, "urgent") == list(dict.fromkeys(map(patient_text, red)))
    fired_texts = {patient_text(r) for r in fired}
    flat = unwrapped(text)
    for rule in RULESET.rules:
        said = rule.meta.patient
        if rule.id not in fired and said is not None and unwrapped(said) not in fired_texts:
            assert unwrapped(said) not in flat, f"{path.stem}: {rule.id} did not fire"
    # a red flag that fired comes first, before anything else the page says
    keys = [s.key for s in summary.sections]
    if red:
        assert keys[0] == "urgent"
        assert flat.index(WORDS.urgent.heading.upper()) < flat.index(WORDS.looked_at.heading)
    else:
        assert "urgent" not in keys


@pytest.mark.timeout(600)
def test_synthetic_cases_all_summarise_plainly_and_balanced() -> None:
    """500 synthetic cases (engine/synth, 30 % of values missing, bad rows skipped): every one
    has a summary (no rule or field without words), with no rule id or field name, each fired
    finding said once in its place, and warning signs exactly when a red flag is open."""
    from engine.errors import CaseInputError
    from engine.synth import generate_rows

    screener = Screener.from_ruleset(RULESET, engine="reference")
    summarised = 0
    for row in generate_rows(500, seed=30, missing=0.3, corrupt=0.0):
        try:
            case_id, values = screener.validate(row)
            result = screener.screening(case_id, values).result
        except CaseInputError:
            continue  # contradicting values: screened by no face, so summarised by none
        summary = build_patient_summary(result, RULESET, case=values)
        text = render_patient_text(summary)
        assert not RULE_ID.search(text), case_id
        assert not FIELD_NAME.search(unwrapped(text)), case_id
        said = [*section_items(summary, "urgent"), *section_items(summary, "benefits")]
        said += section_items(summary, "talk")
        assert sorted(set(said)) == sorted({patient_text(f.rule_id) for f in result.findings})
        assert any(s.key == "safety-net" for s in summary.sections) == bool(open_red_flags(result))
        for rule_id in open_red_flags(result):  # every warning sign, however merged
            net = RULESET.by_id[rule_id].meta.safety_net
            assert net is not None, rule_id
            for symptom in net.symptoms:
                assert as_sentence(symptom) in section_items(summary, "safety-net"), case_id
        summarised += 1
    assert summarised >= 400


def open_red_flags(result: Result) -> list[str]:
    ids = [n.rule_id for n in result.not_evaluable if n.severity is Severity.red_flag]
    return ids + [c.rule_id for c in result.conditional if c.severity is Severity.red_flag]


def test_an_open_red_flag_lists_its_warning_signs_and_their_source() -> None:
    """Every example with a red flag still open lists each of its rule's warning signs and
    cites its source; one without an open red flag lists none (the bundled examples hold both)."""
    seen_open = seen_closed = 0
    for path in EXAMPLES:
        result, values = screened(path)
        summary = build_patient_summary(result, RULESET, case=values)
        nets = [s for s in summary.sections if s.key == "safety-net"]
        open_ids = open_red_flags(result)
        if not open_ids:
            assert nets == [], path.stem
            seen_closed += 1
            continue
        seen_open += 1
        (net,) = nets
        assert summary.sections.index(net) <= 1  # after a fired red flag only
        for rule_id in open_ids:
            safety = RULESET.by_id[rule_id].meta.safety_net
            assert safety is not None, rule_id
            for symptom in safety.symptoms:
                assert as_sentence(symptom) in net.items, (path.stem, symptom)
            for source in safety.sources:
                assert source.citation in [s.citation for s in net.sources], (path.stem, rule_id)
        text = unwrapped(render_patient_text(summary))
        assert net.source_lead in text
        page = render_patient_html(summary)
        for source in net.sources:
            assert f"{source.short}: <{source.href}>." in text  # who, and where to read it
            assert source.href is not None  # (a source without one prints its full citation)
            assert f'title="{escape(source.citation)}">{escape(source.short)}</a>' in page
    assert seen_open >= 2
    assert seen_closed >= 10


def test_open_questions_are_said_in_words_and_hospital_questions_go_to_the_team() -> None:
    result, values = screened(ROOT / "cases/examples/adult-deformity-sva-unknown.yaml")
    summary = build_patient_summary(result, RULESET, case=values)
    assert result.deciding_questions == ["sva_mm"]
    assert section_items(summary, "check") == [WORDS.fields["sva_mm"]]
    bare = screen_values(
        "c",
        {"diagnosis": "spinal_stenosis", "planned_procedure": "decompression", "levels": 1},
        RULESET,
        EVALUATOR,
    ).result
    asked = build_patient_summary(bare, RULESET, case={"levels": 1})
    team = section_items(asked, "ask-team")
    open_settings = [
        n
        for n in dict.fromkeys(
            [*bare.next_questions, *(m for c in bare.open_cautions for m in c.missing)]
        )
        if n in SETTING_FIELDS
    ]
    assert open_settings, "the case should leave a setting of the hospital open"
    assert team == list(dict.fromkeys(WORDS.fields[n] for n in open_settings))
    assert not set(team) & set(section_items(asked, "check"))


def test_what_was_looked_at_names_the_fields_given_that_rules_read() -> None:
    """With the case: every field it gives that a rule reads, in words, and nothing else (sex is
    given but read by no rule); without it (Result.patient_summary alone) the page says the
    list may be incomplete."""
    result, values = screened(ROOT / "cases/examples/stenosis-l4-l5.yaml")
    summary = build_patient_summary(result, RULESET, case=values)
    (looked,) = [s for s in summary.sections if s.key == "looked-at"]
    relevant = relevant_fields(RULESET)
    expected = dict.fromkeys(WORDS.fields[n] for n in values if n in relevant)
    assert sorted(looked.items) == sorted(expected)
    assert "sex" in values
    assert "sex" not in relevant
    assert looked.lead == WORDS.looked_at.lead
    alone = build_patient_summary(result, RULESET)
    (partial,) = [s for s in alone.sections if s.key == "looked-at"]
    assert partial.lead == WORDS.looked_at.lead_partial
    assert set(partial.items) < set(looked.items)


def test_every_field_a_rule_reads_has_words() -> None:
    """Each case field a rule reads, directly or through a derived attribute, has patient words
    (a field without them would stop the summary of a case that gives it)."""
    missing = sorted(relevant_fields(RULESET) - set(WORDS.fields))
    assert missing == []
    assert {"age_years", "lowest_level", "planned_procedure"} <= relevant_fields(RULESET)
    for words in WORDS.fields.values():
        assert not FIELD_NAME.search(words), words
        assert not RULE_ID.search(words), words


# --- the printed page -----------------------------------------------------------------------------

# A4 is narrower than Letter and Letter shorter than A4: a page that fits 210 x 279.4 mm fits both
SMALLEST_PAPER = "@page { size: 210mm 279.4mm; }"


def print_page(name: str, page: str, tmp_path: Path) -> tuple[int, str]:
    """The page printed by Chromium on the smallest paper: its page count and its text."""
    html = tmp_path / f"{name}.html"
    html.write_text(page.replace("</style>", SMALLEST_PAPER + "\n</style>", 1), encoding="utf-8")
    pdf = tmp_path / f"{name}.pdf"
    done = run_chromium(
        tmp_path / f"profile-{name}",
        "--no-pdf-header-footer",
        f"--print-to-pdf={pdf}",
        html.as_uri(),
    )
    assert done.returncode == 0, done.stderr
    return len(PdfReader(pdf).pages), pdf_text(pdf)


def print_pages(path: Path, tmp_path: Path) -> tuple[int, str]:
    result, values = screened(path)
    page = patient_summary(result, RULESET, output_format="html", case=values)
    return print_page(path.stem, page, tmp_path)


def test_every_example_prints_on_one_page_in_large_type(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:  # the machine is shared
        printed = list(pool.map(lambda p: print_pages(p, tmp_path), EXAMPLES))
    for path, (pages, text) in zip(EXAMPLES, printed, strict=True):
        assert pages == 1, f"{path.stem}: {pages} pages"
        assert unwrapped(WORDS.disclaimer) in text, path.stem
        assert screened(path)[0].case_id not in text, path.stem
    page = patient_summary(screened(EXAMPLES[0])[0], RULESET, output_format="html")
    sizes = [float(pt) for pt in re.findall(r"font(?:-size)?:\s*([\d.]+)pt", page)]
    assert sizes
    assert min(sizes) >= 12
    assert not re.search(r"font(?:-size)?:\s*[\d.]+(?:px|em|rem|%)", page)


def fullest_cohort_cases(count: int = 3) -> list[tuple[str, Result, dict[str, Scalar]]]:
    """The cases of the 500-row synthetic cohort whose summaries are longest: by printed text
    and by number of items (the most benefits, limits, warning signs and open questions fired at
    once), found afresh each run so a regenerated cohort is searched too."""
    from engine.errors import CaseInputError

    screener = Screener.from_ruleset(RULESET, engine="reference")
    sized: list[tuple[int, int, str, Result, dict[str, Scalar]]] = []
    with (ROOT / "cases" / "cohort" / "synthetic-500.csv").open(newline="") as rows:
        for row in csv.DictReader(rows):
            try:
                case_id, values = screener.validate({k: v for k, v in row.items() if v != ""})
                result = screener.screening(case_id, values).result
            except CaseInputError:
                continue  # contradicting values: screened by no face, so summarised by none
            summary = build_patient_summary(result, RULESET, case=values)
            items = sum(len(s.items) for s in summary.sections)
            sized.append((len(render_patient_text(summary)), items, case_id, result, values))
    assert len(sized) >= 400
    longest = sorted(sized, key=lambda s: s[0])[-count:]
    most = sorted(sized, key=lambda s: s[1])[-count:]
    chosen = {s[2]: s for s in [*longest, *most]}
    return [(case_id, s[3], s[4]) for case_id, s in chosen.items()]


def empty_case() -> Result:
    """The web form at step one with nothing filled in: every red flag open, every question."""
    return screen_values("step-one", {}, RULESET, EVALUATOR).result


def assert_one_page(pages: list[tuple[str, str]], tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:  # the machine is shared
        printed = list(pool.map(lambda named: print_page(*named, tmp_path), pages))
    for (name, _), (count, text) in zip(pages, printed, strict=True):
        assert count == 1, f"{name}: {count} pages"
        assert unwrapped(WORDS.disclaimer) in unwrapped(text), name


def test_the_empty_form_prints_on_one_page(tmp_path: Path) -> None:
    """The web form's first step with nothing filled in: all five red flags open (every
    warning sign listed), every question open. It printed two pages while every open question
    was listed and "found no special reason" was said of a case with nothing given."""
    result = empty_case()
    assert len(open_red_flags(result)) == len(
        [r for r in RULESET.rules if r.meta.severity is Severity.red_flag]
    )
    page = patient_summary(result, RULESET, output_format="html", case={})
    client = TestClient(create_app(ServiceConfig(screener=Screener.from_ruleset(RULESET))))
    served = client.post("/patient", data={})
    assert served.status_code == 200
    assert served.text == page  # the form's page at step one is this page
    assert_one_page([("empty", page)], tmp_path)


@pytest.mark.timeout(600)
def test_the_fullest_cohort_summaries_print_on_one_page(tmp_path: Path) -> None:
    """The longest summaries of the synthetic cohort (the most findings, warning signs and
    questions at once: two red flags open, three benefits, five limits). They printed two pages
    until a question heading and its answer shared a line and shared warning signs were worded
    alike. A summary of two pages would hand the patient half of it."""
    pages = [
        (case_id, patient_summary(result, RULESET, output_format="html", case=values))
        for case_id, result, values in fullest_cohort_cases()
    ]
    assert len(pages) >= 3
    assert_one_page(pages, tmp_path)


def test_every_warning_sign_of_every_open_red_flag_is_printed() -> None:
    """However the warning signs are merged or laid out, each symptom of each open red flag is
    on the page and in the text, and each of its sources is named: none dropped silently."""
    result = empty_case()
    text = unwrapped(patient_summary(result, RULESET, case={}))
    page = unwrapped(visible_text(patient_summary(result, RULESET, output_format="html")))
    for rule_id in open_red_flags(result):
        net = RULESET.by_id[rule_id].meta.safety_net
        assert net is not None, rule_id
        for symptom in net.symptoms:
            assert as_sentence(symptom) in text, (rule_id, symptom)
            assert as_sentence(symptom) in page, (rule_id, symptom)
        for source in net.sources:
            assert source_of(source).short in text, (rule_id, source.citation)
            assert source_of(source).short in page, (rule_id, source.citation)


def test_the_page_is_self_contained_and_the_same_every_time() -> None:
    result, values = screened(ROOT / "cases/examples/fracture-polytrauma-neurology-unknown.yaml")
    page = patient_summary(result, RULESET, output_format="html", case=values)
    assert page == patient_summary(result, RULESET, output_format="html", case=values)
    parser = Assets()
    parser.feed(page)
    assert parser.scripts == 0
    assert parser.fetching == []
    assert "@import" not in page
    assert "url(" not in page
    assert "@media print" in page


# --- the faces ------------------------------------------------------------------------------------


def test_cli_prints_the_summary_and_writes_the_page(tmp_path: Path) -> None:
    case = str(ROOT / "cases/examples/stenosis-l4-l5.yaml")
    result, values = screened(Path(case))
    done = runner.invoke(app, ["screen", case, "--for", "patient"])
    assert done.exit_code == 0, done.stderr
    assert done.stdout == patient_summary(result, RULESET, case=values)
    out = tmp_path / "summary.html"
    done = runner.invoke(
        app, ["screen", case, "--for", "patient", "--format", "html", "--out", str(out)]
    )
    assert done.exit_code == 0, done.stderr
    assert done.stdout == ""
    assert out.read_text() == patient_summary(result, RULESET, output_format="html", case=values)
    clinician = runner.invoke(app, ["screen", case])
    assert runner.invoke(app, ["screen", case, "--for", "clinician"]).stdout == clinician.stdout
    assert "Case EX-002" in clinician.stdout


def test_cli_summarises_a_fhir_bundle_and_keeps_fail_on(tmp_path: Path) -> None:
    """--fhir --for patient: the summary of the mapped case, without the clinician's provenance
    lines (which name fields); --fail-on still sets the exit code from the verdict."""
    bundle = str(ROOT / "cases/fhir/stenosis-l4-l5.json")
    done = runner.invoke(
        app, ["screen", "--fhir", bundle, "--reference-date", "2026-03-02", "--for", "patient"]
    )
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith(WORDS.title)
    assert "Where the values came from" not in done.stdout
    assert not FIELD_NAME.search(done.stdout)
    urgent = str(ROOT / "cases/examples/cauda-equina-l5-s1.yaml")
    failed = runner.invoke(
        app, ["screen", urgent, "--for", "patient", "--fail-on", "urgent_review"]
    )
    assert failed.exit_code == 1
    assert WORDS.urgent.heading.upper() in failed.stdout


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--format", "json"], "--for patient writes text or html"),
        (["--format", "brief"], "--for patient writes text or html"),
        (["--details"], "--details belongs to the clinician's report"),
        ([str(ROOT / "cases/examples/disc-herniation-l4-l5.yaml")], "one case"),
    ],
)
def test_cli_refuses_what_the_summary_cannot_be(extra: list[str], said: str) -> None:
    case = str(ROOT / "cases/examples/stenosis-l4-l5.yaml")
    done = runner.invoke(app, ["screen", case, "--for", "patient", *extra])
    assert done.exit_code == 2
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_result_method_is_the_same_summary_and_its_import_is_lazy() -> None:
    result, values = screened(ROOT / "cases/examples/stenosis-l4-l5.yaml")
    assert result.patient_summary(case=values) == patient_summary(result, RULESET, case=values)
    assert result.patient_summary("html") == patient_summary(result, output_format="html")
    other = result.model_copy(
        update={"ruleset": result.ruleset.model_copy(update={"sha256": "0" * 64})}
    )
    with pytest.raises(UsageError, match="give the rules it was screened with"):
        other.patient_summary()
    with pytest.raises(UsageError, match="text or html"):
        result.patient_summary("json")  # type: ignore[arg-type]  # the check under test
    probe = "import sys, engine.models; print('engine.report.patient' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_web_form_prints_the_summary_at_any_step() -> None:
    client = TestClient(create_app(ServiceConfig(screener=Screener.from_ruleset(RULESET))))
    start = client.get("/")
    assert 'formaction="/patient"' in start.text
    assert "Print a summary for the patient" in start.text
    first = {"age_years": "70", "diagnosis": "spinal_stenosis", "lowest_level": "L4-L5"}
    page = client.post("/patient", data=first)
    assert page.status_code == 200
    assert "<script" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'id="check"' in page.text  # questions open: what the surgeon still needs to check
    assert WORDS.check.heading in page.text
    assert "web-form" not in page.text
    bad = client.post("/patient", data={"age_years": "300"})
    assert bad.status_code == 422
    assert "Age" in bad.text


# --- words files, translations, missing texts --------------------------------------------------


def copy_words(tmp_path: Path, language: str, change: dict[str, Any]) -> Path:
    data = yaml.safe_load((RULES_DIR / "patient" / "en.yaml").read_text())
    data.update({"language": language, **change})
    folder = tmp_path / "rules" / "patient"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{language}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    return tmp_path / "rules"


def test_a_translation_is_one_file_and_gives_every_rule_text(tmp_path: Path) -> None:
    result, values = screened(
        ROOT / "cases/examples/infection-spondylodiscitis-abscess-not-excluded.yaml"
    )
    shown = [f.rule_id for f in result.findings] + open_red_flags(result)
    rules = {
        r: {"patient": f"Texte simple numero {i} pour vous.", "safety_net": None}
        for i, r in enumerate(shown)
    }
    for r in open_red_flags(result):
        net = RULESET.by_id[r].meta.safety_net
        assert net is not None
        rules[r]["safety_net"] = [f"signe {j}" for j in range(len(net.symptoms))]
    folder = copy_words(tmp_path, "fr", {"title": "Parler avec votre chirurgien", "rules": rules})
    moved = dataclasses.replace(RULESET, directory=str(folder))
    assert moved.sha256 == RULESET.sha256  # the words are not part of the rule set's hash
    text = patient_summary(result, moved, case=values, language="fr")
    assert "Parler avec votre chirurgien" in text
    assert "Signe 0." in text  # a warning sign is printed as a sentence
    for rule_id in shown:
        english = RULESET.by_id[rule_id].meta.patient
        assert english is None or unwrapped(english) not in unwrapped(text)
    del rules[shown[0]]
    copy_words(tmp_path, "fr", {"rules": rules})
    with pytest.raises(RuleFileError, match=f"{shown[0]} has no patient text \\(fr\\)"):
        patient_summary(result, moved, case=values, language="fr")


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"titel": "x"}, "unknown key"),
        ({"fields": {"slip_pct": "your slip"}}, "not a case field"),
        ({"fields": {"case_id": "your number"}}, "not a case field"),
        ({"rules": {"../etc": {"patient": "nothing at all here"}}}, "a rule id is expected"),
        ({"language": "de"}, "the file name says xx"),
        ({"made_by": "miss-screen {tool_version.__class__}"}, "braces may hold only"),
        ({"made_by": "miss-screen {version}"}, "braces may hold only"),
    ],
)
def test_a_bad_words_file_is_named_with_its_line(
    tmp_path: Path, change: dict[str, Any], said: str
) -> None:
    folder = copy_words(tmp_path, "xx", change)
    with pytest.raises(RuleFileError, match=re.escape(said)) as caught:
        load_patient_words(folder, "xx")
    assert caught.value.path is not None
    assert caught.value.path.endswith("xx.yaml")


@pytest.mark.hostile
@pytest.mark.parametrize("language", ["../../etc/passwd", "en/../en", "", "EN", "e n"])
def test_a_language_is_never_a_path(language: str) -> None:
    with pytest.raises(UsageError, match="language must look like"):
        load_patient_words(RULES_DIR, language)


def with_meta(ruleset: Ruleset, rule_id: str, **update: Any) -> Ruleset:
    rules = tuple(
        dataclasses.replace(r, meta=r.meta.model_copy(update=update)) if r.id == rule_id else r
        for r in ruleset.rules
    )
    return dataclasses.replace(ruleset, rules=rules)


def test_a_rule_without_a_patient_text_stops_the_summary() -> None:
    """Never a finding silently left out, nor a clinical message shown to the patient."""
    path = ROOT / "cases/examples/stenosis-l4-l5.yaml"
    bare = with_meta(RULESET, "RAD-004", patient=None)
    result, values = screened(path, bare)
    with pytest.raises(RuleFileError, match="RAD-004 has no patient text") as caught:
        patient_summary(result, bare, case=values)
    assert caught.value.path is not None
    assert "RAD-004" in caught.value.path
    netless = with_meta(RULESET, "RED-003", safety_net=None)
    result, values = screened(
        ROOT / "cases/examples/infection-spondylodiscitis-abscess-not-excluded.yaml", netless
    )
    with pytest.raises(RuleFileError, match="RED-003 is a red flag without warning signs"):
        patient_summary(result, netless, case=values)


@pytest.mark.hostile
def test_a_case_id_that_names_someone_never_appears() -> None:
    _, values = read_case(str(ROOT / "cases/examples/cauda-equina-l5-s1.yaml"))
    for case_id in ["Jane.Doe-1961", "07700900123", "MRN-0012345", "John_Smith"]:
        result = screen_values(case_id, values, RULESET, EVALUATOR).result
        for output_format in ("text", "html"):
            page = patient_summary(
                result, RULESET, output_format=output_format, case={"case_id": case_id, **values}
            )
            assert case_id not in page
            assert not any(part in page for part in re.split(r"[._-]", case_id) if len(part) > 3)


@pytest.mark.hostile
def test_every_text_is_escaped_in_the_page() -> None:
    hostile = '<script>alert("x")</script> & <img src=x onerror=y>'
    path = ROOT / "cases/examples/infection-spondylodiscitis-abscess-not-excluded.yaml"
    ruleset = with_meta(RULESET, "BEN-005", patient=hostile)
    ruleset = with_meta(
        ruleset,
        "RED-003",
        safety_net=SafetyNet(
            symptoms=[hostile],
            sources=[
                SourceRef(citation=hostile, url='javascript:alert("x")'),
                SourceRef(citation="a source", url='https://a.example/"><b>'),
            ],
        ),
    )
    result, values = screened(path, ruleset)
    page = patient_summary(result, ruleset, output_format="html", case=values)
    assert "<script" not in page
    assert "<img" not in page
    assert "<b>" not in page
    assert str(escape(hostile)) in page
    assert 'href="javascript:' not in page
    parser = Assets()
    parser.feed(page)
    assert parser.scripts == 0
    assert parser.fetching == []


def test_the_disclaimer_says_the_page_is_never_an_order_to_operate() -> None:
    """Every output says it is a screening aid for a conversation, never an order to operate:
    the patient's page too, whatever its wording file is edited to (the English one here)."""
    said = " ".join(WORDS.disclaimer.split()).lower()
    assert "never" in said
    assert "order to have an operation" in said
    assert "not a diagnosis" in said
