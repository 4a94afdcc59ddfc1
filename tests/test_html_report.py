"""The batch HTML report: exact numbers by id, escaping, determinism, no external assets, and a
real headless Chromium that renders a non-blank page whose DOM carries the summary's numbers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from engine.batch.summary import (
    AttritionStep,
    BatchSummary,
    Duplicate,
    FieldMissingness,
    InputStamp,
    Reconciliation,
    RuleCounts,
    RunStamp,
)
from engine.models import DISCLAIMER, Category, RulesetStamp, Severity, Verdict
from engine.report.html import render_html
from tests.conftest import ROOT

STATUSES = ("fired", "conditional", "not_evaluable", "not_applicable", "not_fired")
CHROMIUM_TIMEOUT_S = 60


def _rule(
    rule_id: str, name: str, category: Category, severity: Severity, **counts: int
) -> RuleCounts:
    return RuleCounts(rule_id=rule_id, name=name, category=category, severity=severity, **counts)


def _missing(field: str, missing: int, blocks_verdict: int) -> FieldMissingness:
    return FieldMissingness(
        field=field,
        missing=missing,
        missing_pct=round(100 * missing / 988, 1),
        blocks_verdict=blocks_verdict,
    )


def build_summary() -> BatchSummary:
    """A hand-built summary of 1000 rows: 988 screened, 12 rejected, counts that add up."""
    return BatchSummary(
        stamp=RunStamp(
            tool_version="0.1.0",
            ruleset=RulesetStamp(
                name="miss-screen-core",
                version="0.1.0",
                sha256="3f1c2a9be07d4c5e8a61f0b2d9c47e15a8b36d2f90c1e4a7b5d8f6029e3c1a44",
            ),
            inputs=[
                InputStamp(
                    path="cohorts/lumbar-2019-2023.csv",
                    format="csv",
                    sha256="9a0e5d1c7b3f48e2a6c9d0f1b2e3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5",
                    rows=1000,
                )
            ],
            started="2025-03-14T09:26:53Z",
            duration_s=41.7,
            workers=4,
            executor="process",
            site={
                "mis_equipment_available": True,
                "navigation_available": False,
                "surgeon_mis_cases": {"mis_tlif": 80, "endoscopic_discectomy": 5},
            },
        ),
        reconciliation=Reconciliation(
            rows_read=1000, rows_screened=988, rows_rejected=12, balanced=True
        ),
        verdicts={
            Verdict.urgent_review: 23,
            Verdict.not_favoured: 141,
            Verdict.insufficient_data: 302,
            Verdict.discuss_with_caution: 217,
            Verdict.worth_discussing: 305,
        },
        rules=[
            _rule(
                "RED-001",
                "cauda-equina-syndrome",
                Category.red_flag,
                Severity.red_flag,
                fired=17,
                not_fired=871,
                not_evaluable=100,
            ),
            _rule(
                "RED-003",
                "spinal-epidural-abscess",
                Category.red_flag,
                Severity.red_flag,
                fired=6,
                not_fired=900,
                not_evaluable=82,
            ),
            _rule(
                "ACC-003",
                "severe-sagittal-imbalance",
                Category.access,
                Severity.major,
                fired=58,
                not_fired=402,
                not_applicable=311,
                not_evaluable=217,
            ),
            _rule(
                "ACC-007",
                "high-grade-spondylolisthesis",
                Category.access,
                Severity.major,
                fired=41,
                not_fired=612,
                not_applicable=296,
                not_evaluable=39,
            ),
            _rule(
                "ACC-008",
                "llif-blocked-at-l5-s1",
                Category.access,
                Severity.major,
                fired=12,
                not_fired=96,
                not_applicable=541,
                conditional=339,
            ),
            _rule(
                "CPX-001",
                "mis-tlif-learning-curve",
                Category.complexity,
                Severity.caution,
                fired=133,
                not_fired=220,
                not_applicable=600,
                not_evaluable=35,
            ),
            _rule(
                "RAD-004",
                "obesity-fluoroscopy-without-navigation",
                Category.radiation,
                Severity.caution,
                fired=88,
                not_fired=700,
                not_applicable=150,
                not_evaluable=50,
            ),
            _rule(
                "BEN-001",
                "mis-tlif-blood-loss-and-stay",
                Category.benefit,
                Severity.info,
                fired=276,
                not_fired=0,
                not_applicable=712,
            ),
        ],
        attrition=[
            AttritionStep(verdict=Verdict.urgent_review, count=23, remaining=965),
            AttritionStep(verdict=Verdict.not_favoured, count=141, remaining=824),
            AttritionStep(verdict=Verdict.insufficient_data, count=302, remaining=522),
            AttritionStep(verdict=Verdict.discuss_with_caution, count=217, remaining=305),
            AttritionStep(verdict=Verdict.worth_discussing, count=305, remaining=0),
        ],
        # 17 fields, so that two fall outside the top 15 by blocks_verdict
        missingness=[
            _missing("sva_mm", 402, 188),
            _missing("pelvic_incidence_deg", 377, 131),
            _missing("lumbar_lordosis_deg", 350, 127),
            _missing("slip_percent", 129, 39),
            _missing("cauda_equina_syndrome", 100, 61),
            _missing("epidural_abscess", 82, 44),
            _missing("coronal_cobb_deg", 260, 35),
            _missing("dexa_t_score", 611, 28),
            _missing("progressive_neuro_deficit", 90, 22),
            _missing("intradural_pathology", 70, 17),
            _missing("herniation_migration_grade", 55, 11),
            _missing("curve_flexible", 301, 9),
            _missing("sins_score", 40, 6),
            _missing("tlics_score", 31, 4),
            _missing("bmi", 50, 2),
            _missing("surgeon_mis_cases", 530, 0),
            _missing("smoker", 120, 0),
        ],
        rejected_by_field={"bmi": 5, "sva_mm": 4, "age_years": 2, "levels": 1},
        duplicates=[Duplicate(case_id="S-0193", rows=[18, 1842])],
        ignored_columns=["mrn_hash"],
        disclaimer=DISCLAIMER,
        insufficient_only_site=57,
    )


@pytest.fixture
def summary() -> BatchSummary:
    return build_summary()


@pytest.fixture(scope="module")
def page() -> str:
    """The report of `build_summary()`, rendered once for the tests that only read it."""
    return render_html(build_summary())


# --- reading the page -------------------------------------------------------------------------


class _IdText(HTMLParser):
    """The text and attributes of every element with an id, and any id used twice."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"})

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.duplicate_ids: list[str] = []
        self._open: list[tuple[str, str | None]] = []

    def _record(self, attrs: list[tuple[str, str | None]]) -> str | None:
        values = dict(attrs)
        element_id = values.get("id")
        if element_id is not None:
            if element_id in self.attrs:
                self.duplicate_ids.append(element_id)
            self.attrs[element_id] = values
            self.text[element_id] = ""
        return element_id

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element_id = self._record(attrs)
        if tag not in self.VOID:
            self._open.append((tag, element_id))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._record(attrs)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth][0] == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id is not None:
                self.text[element_id] += data


def parse_ids(html: str) -> _IdText:
    parser = _IdText()
    parser.feed(html)
    parser.close()
    return parser


def text_by_id(html: str) -> dict[str, str]:
    return {k: " ".join(v.split()) for k, v in parse_ids(html).text.items()}


def assert_summary_numbers(found: dict[str, str], summary: BatchSummary) -> None:
    """Every number of the summary sits, exactly, in the element with its id."""
    rec = summary.reconciliation
    expected = {
        "rows-read": str(rec.rows_read),
        "rows-screened": str(rec.rows_screened),
        "rows-rejected": str(rec.rows_rejected),
        "tool-version": summary.stamp.tool_version,
        "ruleset-name": summary.stamp.ruleset.name,
        "ruleset-version": summary.stamp.ruleset.version,
        "ruleset-sha256": summary.stamp.ruleset.sha256,
        "started": summary.stamp.started,
        "duration-s": str(summary.stamp.duration_s),
        "workers": str(summary.stamp.workers),
        "executor": summary.stamp.executor,
        "engine": summary.stamp.engine,
    }
    for i, stamp in enumerate(summary.stamp.inputs):
        expected[f"input-{i}-path"] = stamp.path
        expected[f"input-{i}-rows"] = str(stamp.rows)
        expected[f"input-{i}-sha256"] = stamp.sha256
    for verdict in Verdict:
        expected[f"verdict-{verdict.value}-count"] = str(summary.verdicts.get(verdict, 0))
    for rule in summary.rules:
        for status in STATUSES:
            expected[f"rule-{rule.rule_id}-{status}"] = str(getattr(rule, status))
    for step in summary.attrition:
        expected[f"attrition-{step.verdict.value}-count"] = str(step.count)
        expected[f"attrition-{step.verdict.value}-remaining"] = str(step.remaining)
    for field in summary.missingness:
        expected[f"missing-{field.field}-count"] = str(field.missing)
        expected[f"missing-{field.field}-pct"] = str(field.missing_pct)
        expected[f"missing-{field.field}-blocks"] = str(field.blocks_verdict)
    for name, count in summary.rejected_by_field.items():
        expected[f"rejected-{name}"] = str(count)
    for i, dup in enumerate(summary.duplicates):
        expected[f"duplicate-{i}-case-id"] = dup.case_id
        expected[f"duplicate-{i}-rows"] = ", ".join(str(row) for row in dup.rows)
    for i, column in enumerate(summary.ignored_columns):
        expected[f"ignored-{i}"] = column
    expected["insufficient-only-site-count"] = str(summary.insufficient_only_site)
    actual = {key: found.get(key) for key in expected}
    assert actual == expected


# --- unit tests -------------------------------------------------------------------------------


def test_same_summary_gives_byte_identical_html(page: str, summary: BatchSummary) -> None:
    assert render_html(summary) == page
    assert render_html(BatchSummary.model_validate_json(summary.model_dump_json())) == page


def test_html_is_identical_in_another_process(
    page: str, summary: BatchSummary, tmp_path: Path
) -> None:
    summary_file = tmp_path / "summary.json"
    summary_file.write_text(summary.model_dump_json())
    code = (
        "import sys; from pathlib import Path; from engine.batch.summary import BatchSummary; "
        "from engine.report.html import render_html; "
        "sys.stdout.write(render_html(BatchSummary.model_validate_json("
        "Path(sys.argv[1]).read_text())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code, str(summary_file)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert other.stdout == page


def test_every_summary_number_is_in_the_element_with_its_id(page: str) -> None:
    assert_summary_numbers(text_by_id(page), build_summary())


def test_per_technique_site_setting_is_shown_by_technique(page: str) -> None:
    assert "mis_tlif 80, endoscopic_discectomy 5" in page


def test_verdict_percentages_are_of_screened_rows(page: str) -> None:
    found = text_by_id(page)
    # 23, 141, 302, 217 and 305 of 988 screened rows, worked out by hand
    assert [found[f"verdict-{v.value}-pct"] for v in Verdict] == [
        "2.3",
        "14.3",
        "30.6",
        "22.0",
        "30.9",
    ]
    assert found["verdict-total"] == "988"


def test_balanced_run_is_marked_balanced(page: str) -> None:
    parsed = parse_ids(page)
    assert parsed.attrs["reconciliation-status"]["data-balanced"] == "true"
    assert " ".join(parsed.text["reconciliation-status"].split()) == "✓ balanced"


@pytest.mark.parametrize(
    ("rows_rejected", "flag"),
    [(11, False), (11, True), (12, False)],
    ids=["numbers-and-flag-disagree", "flag-says-balanced-numbers-do-not", "flag-says-not"],
)
def test_unbalanced_run_is_marked_not_balanced(
    summary: BatchSummary, rows_rejected: int, flag: bool
) -> None:
    rec = summary.reconciliation.model_copy(
        update={"rows_rejected": rows_rejected, "balanced": flag}
    )
    html = render_html(summary.model_copy(update={"reconciliation": rec}))
    parsed = parse_ids(html)
    assert parsed.attrs["reconciliation-status"]["data-balanced"] == "false"
    assert "NOT balanced" in parsed.text["reconciliation-status"]
    assert "Do not use these results" in html


def test_top_fields_by_blocks_verdict_come_first_and_the_rest_are_folded(page: str) -> None:
    top, folded = page.split('<details id="missingness-rest">')
    order = re.findall(r'id="missing-([a-z0-9_]+)-blocks"', top)
    assert order == [
        "sva_mm",
        "pelvic_incidence_deg",
        "lumbar_lordosis_deg",
        "cauda_equina_syndrome",
        "epidural_abscess",
        "slip_percent",
        "coronal_cobb_deg",
        "dexa_t_score",
        "progressive_neuro_deficit",
        "intradural_pathology",
        "herniation_migration_grade",
        "curve_flexible",
        "sins_score",
        "tlics_score",
        "bmi",
    ]
    assert re.findall(r'id="missing-([a-z0-9_]+)-blocks"', folded) == [
        "surgeon_mis_cases",
        "smoker",
    ]


def test_case_ids_and_columns_are_escaped(summary: BatchSummary) -> None:
    hostile = summary.model_copy(
        update={
            "duplicates": [Duplicate(case_id="<script>alert(1)</script>", rows=[3, 9])],
            "ignored_columns": ['"><img onerror=alert(2)>'],
        }
    )
    html = render_html(hostile)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "<img" not in html
    found = text_by_id(html)
    assert found["duplicate-0-case-id"] == "<script>alert(1)</script>"
    assert found["ignored-0"] == '"><img onerror=alert(2)>'


def test_a_duplicate_across_inputs_names_each_rows_input_escaped(summary: BatchSummary) -> None:
    """With several inputs each duplicated row is shown with its input's name (escaped); a
    summary written before rows named their input (no `inputs`) shows the rows alone."""
    first = summary.stamp.inputs[0]
    hostile = first.model_copy(update={"path": "b<i>x</i>.csv"})
    stamp = summary.stamp.model_copy(update={"inputs": [first, hostile]})
    both = summary.model_copy(
        update={
            "stamp": stamp,
            "duplicates": [
                Duplicate(case_id="A-1", rows=[3, 9], inputs=[0, 1]),
                Duplicate(case_id="B-2", rows=[4, 5]),  # an older summary's entry
            ],
        }
    )
    html = render_html(both)
    found = text_by_id(html)
    assert found["duplicate-0-rows"] == f"{first.path} row 3, b<i>x</i>.csv row 9"
    assert "b&lt;i&gt;x&lt;/i&gt;.csv row 9" in html
    assert found["duplicate-1-rows"] == "4, 5"


def test_page_needs_nothing_from_outside(page: str) -> None:
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"<script\b", page, re.I)
    assert not re.search(r"<link\b", page, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", page, re.I)
    assert "<?xml" not in page
    assert "<!DOCTYPE svg" not in page


def test_charts_are_inline_svg_with_unique_ids_and_labels(page: str) -> None:
    assert page.count("<svg ") == 4
    assert parse_ids(page).duplicate_ids == []
    verdict_chart = page[page.index('<svg role="img" aria-label="Cases by verdict"') :]
    verdict_chart = verdict_chart[: verdict_chart.index("</svg>")]
    # text is drawn as paths; matplotlib keeps each string as a comment beside it
    for label in ("verdict", "cases", "302", "305", "urgent_review"):
        assert f"<!-- {label} -->" in verdict_chart, label


def test_empty_run_renders_without_charts() -> None:
    empty = build_summary().model_copy(
        update={
            "reconciliation": Reconciliation(
                rows_read=0, rows_screened=0, rows_rejected=0, balanced=True
            ),
            "verdicts": {},
            "rules": [],
            "attrition": [],
            "missingness": [],
            "rejected_by_field": {},
            "duplicates": [],
            "ignored_columns": [],
        }
    )
    html = render_html(empty)
    found = text_by_id(html)
    assert "<svg" not in html
    assert found["verdict-worth_discussing-count"] == "0"
    assert found["verdict-worth_discussing-pct"] == "n/a"
    assert {"rejected-none", "duplicates-none", "ignored-none"} <= found.keys()


def test_disclaimer_is_shown_before_any_result(page: str) -> None:
    found = text_by_id(page)
    assert DISCLAIMER in found["disclaimer"]
    assert "never an order to operate" in found["disclaimer"]
    assert page.index('id="disclaimer"') < page.index('id="rows-read"')


# --- a real browser ---------------------------------------------------------------------------


def chromium() -> str:
    """The Chromium binary; its absence fails the test, since CI installs it."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        pytest.fail("chromium not found: install it (apt-get install -y chromium)")
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
    )


def write_report(page: str, tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def test_chromium_screenshot_is_not_blank(page: str, tmp_path: Path) -> None:
    report = write_report(page, tmp_path)
    png = tmp_path / "report.png"
    done = run_chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={png}", report.as_uri())
    assert done.returncode == 0, done.stderr
    assert png.exists(), done.stderr
    pixels = np.asarray(imread(png))[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    luminance = pixels @ np.array([0.2126, 0.7152, 0.0722])
    assert float(pixels.std()) > 0.05
    assert float((pixels < 0.97).any(axis=-1).mean()) > 0.02  # not white
    assert float((luminance < 0.5).mean()) > 0.005  # text and chart ink, not just backgrounds


def test_chromium_dom_carries_the_summary_numbers(page: str, tmp_path: Path) -> None:
    done = run_chromium(tmp_path, "--dump-dom", write_report(page, tmp_path).as_uri())
    assert done.returncode == 0, done.stderr
    dom = done.stdout
    assert "<svg" in dom
    assert_summary_numbers(text_by_id(dom), build_summary())
    assert parse_ids(dom).attrs["reconciliation-status"]["data-balanced"] == "true"
