"""The printable one-case HTML page: self-contained, escaped, and printed to PDF by headless
Chromium for every bundled example (the PDF must carry the verdict and the disclaimer)."""

from __future__ import annotations

import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

from markupsafe import escape
from pypdf import PdfReader
from typer.testing import CliRunner

from engine.cli import app
from engine.evaluate.reference import ReferenceEvaluator
from engine.io.cases import read_case
from engine.models import Result
from engine.report.case_html import render_case_html
from engine.report.text import VERDICT_WORDS
from engine.rules.loader import load_ruleset
from engine.screen import screen_values
from tests.conftest import ROOT, RULES_DIR
from tests.test_html_report import run_chromium

EXAMPLES = sorted((ROOT / "cases" / "examples").glob("*.yaml"))
RULESET = load_ruleset(RULES_DIR)
EVALUATOR = ReferenceEvaluator(RULESET)
runner = CliRunner()


def screen(path: Path) -> Result:
    case_id, values = read_case(str(path))
    return screen_values(case_id, values, RULESET, EVALUATOR).result


class Assets(HTMLParser):
    """Every tag and attribute that could fetch or run something."""

    def __init__(self) -> None:
        super().__init__()
        self.fetching: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        for name, value in attrs:
            if name in ("src", "srcset") or (tag == "link" and name == "href"):
                self.fetching.append(f"{tag} {name}={value}")


def test_page_is_self_contained_and_the_same_every_time() -> None:
    result = screen(ROOT / "cases/examples/stenosis-l4-l5.yaml")
    page = render_case_html(result)
    assert page == render_case_html(result)
    parser = Assets()
    parser.feed(page)
    assert parser.scripts == 0
    assert parser.fetching == []
    assert "@import" not in page
    assert "url(" not in page
    assert "@media print" in page


def test_a_hostile_case_id_renders_as_text() -> None:
    result = screen(ROOT / "cases/examples/stenosis-l4-l5.yaml")
    hostile = result.model_copy(update={"case_id": "<script>alert(1)</script>"})
    page = render_case_html(hostile)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_sources_are_links_and_every_rationale_is_there() -> None:
    result = screen(ROOT / "cases/examples/disc-herniation-l4-l5.yaml")
    page = render_case_html(result)
    for finding in [*result.findings, *result.conditional]:
        assert str(escape(finding.rationale)) in page, finding.rule_id
        for source in finding.sources:
            if source.doi:
                assert f'href="https://doi.org/{source.doi}"' in page
    assert result.ruleset.sha256 in page


def test_cli_writes_the_page_with_out(tmp_path: Path) -> None:
    out = tmp_path / "case.html"
    done = runner.invoke(
        app,
        [
            "screen",
            str(ROOT / "cases/examples/stenosis-l4-l5.yaml"),
            "--format",
            "html",
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.stderr
    assert done.stdout == ""
    assert "MIS WORTH DISCUSSING, WITH CAUTION" in out.read_text()
    two = runner.invoke(app, ["screen", *map(str, EXAMPLES[:2]), "--format", "html"])
    assert two.exit_code == 2
    assert "one case" in two.stderr


def pdf_text(pdf: Path) -> str:
    text = " ".join(page.extract_text() for page in PdfReader(pdf).pages)
    return " ".join(unicodedata.normalize("NFKC", text).split())  # ligatures: "ﬂ" is "fl"


def print_to_pdf(path: Path, tmp_path: Path) -> str:
    page = tmp_path / f"{path.stem}.html"
    page.write_text(render_case_html(screen(path)), encoding="utf-8")
    pdf = tmp_path / f"{path.stem}.pdf"
    profile = tmp_path / f"profile-{path.stem}"
    done = run_chromium(profile, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    assert done.returncode == 0, done.stderr
    return pdf_text(pdf)


def test_every_example_prints_to_pdf_with_its_verdict(tmp_path: Path) -> None:
    # two browsers at a time: the machine is shared; each run is bounded by run_chromium's timeout
    with ThreadPoolExecutor(max_workers=2) as pool:
        texts = list(pool.map(lambda p: print_to_pdf(p, tmp_path), EXAMPLES))
    for path, text in zip(EXAMPLES, texts, strict=True):
        result = screen(path)
        assert VERDICT_WORDS[result.verdict][0].upper() in text, path.stem
        assert result.case_id in text, path.stem
        assert "the treating surgeon decides" in text, path.stem
        assert re.search(r"sha256 [0-9a-f]{12}", text), path.stem


def test_the_page_says_why_each_question_is_asked_and_the_verdict_in_words() -> None:
    """With the rule set's reasons, each deciding question and open caution carries its rules'
    `asks_because` (escaped); a page with no deciding question names the verdict in words."""
    from engine.report.words import VERDICT_PHRASES

    sparse = screen_values(
        "c", {"age_years": 45, "diagnosis": "disc_herniation"}, RULESET, EVALUATOR
    ).result
    reasons = RULESET.asked_because
    page = render_case_html(sparse, reasons=reasons)
    red = RULESET.by_id["RED-001"].meta.asks_because
    assert red is not None
    assert str(escape(red)) in page
    assert str(escape(red)) not in render_case_html(sparse)
    for caution in sparse.open_cautions:
        assert str(escape(reasons[caution.rule_id])) in page
    settled = screen_values(
        "d",
        {
            "age_years": 45,
            "diagnosis": "disc_herniation",
            "lowest_level": "L4-L5",
            "levels": 1,
            "planned_procedure": "discectomy",
            "cauda_equina_syndrome": False,
            "progressive_neuro_deficit": False,
            "mis_equipment_available": True,
        },
        RULESET,
        EVALUATOR,
    ).result
    assert settled.deciding_questions == []
    assert f"None: {escape(VERDICT_PHRASES[settled.verdict])} stands." in render_case_html(settled)


def test_finding_values_read_as_labels_in_the_page_the_form_and_the_card() -> None:
    """A finding's values are said with the dictionary's labels ('Slip (%): 62'), never as
    field names ('slip_percent = 62'), in the printable page, the web form and the card."""
    from engine.report.markdown import result_markdown
    from engine.service.form import _finding_line

    result = screen(ROOT / "cases/examples/high-grade-spondylolisthesis-l5-s1.yaml")
    finding = next(f for f in result.findings if f.rule_id == "ACC-007")
    assert "slip_percent" in finding.values
    from engine.report.words import value_words

    slip = value_words(finding.values["slip_percent"])  # 62, not 62.0
    page = render_case_html(result)
    assert f"Slip (%): {slip}" in page
    assert "slip_percent =" not in page
    assert f"Slip (%): {slip}" in _finding_line(finding).line
    card = result_markdown(result)
    assert f"Slip (%): {slip}" in card
    assert "slip\\_percent" not in card
