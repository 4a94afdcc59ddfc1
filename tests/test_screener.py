"""engine.Screener, the one entry point (issue 16 item 1): the same results as the pipeline it
wraps, bad rows as values, DataFrames in and out, and safe from several threads."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from engine import InputError, Screener
from engine.errors import CaseInputError, UsageError
from engine.models import Result
from engine.screen import screen_values
from engine.synth import generate_rows
from tests.conftest import EVALUATORS, RULES_DIR, RULESET

STENOSIS: dict[str, Any] = {
    "case_id": "S-1",
    "age_years": 64,
    "diagnosis": "spinal_stenosis",
    "lowest_level": "L4-L5",
    "levels": 1,
    "planned_procedure": "decompression",
    "cauda_equina_syndrome": False,
}


@pytest.fixture(scope="module")
def screener() -> Screener:
    return Screener.load(RULES_DIR)


def cohort(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Synthetic rows, some corrupt (they must come back as InputError, in place)."""
    return list(generate_rows(n, seed=seed, missing=0.2, corrupt=0.05))


def test_the_package_top_exports_it_and_it_cannot_be_changed(screener: Screener) -> None:
    import engine

    assert engine.Screener is Screener
    with pytest.raises(dataclasses.FrozenInstanceError):
        screener.engine = "reference"  # type: ignore[misc]
    with pytest.raises(TypeError):
        screener.site["surgeon_mis_cases"] = 3  # type: ignore[index]
    assert screener.ruleset_stamp == RULESET.stamp


def test_default_rules_are_the_bundled_ones() -> None:
    assert Screener.load(engine="reference").ruleset_stamp.sha256 == RULESET.sha256


def test_an_unknown_engine_is_a_usage_error() -> None:
    with pytest.raises(Exception, match="engine must be one of durable, reference"):
        Screener.load(engine="drools")


@pytest.mark.parametrize("backend", ["durable", "reference"])
def test_screen_gives_the_pipelines_result(backend: str) -> None:
    screener = Screener.load(RULES_DIR, engine=backend)
    values = {k: v for k, v in STENOSIS.items() if k != "case_id"}
    expected = screen_values("S-1", values, RULESET, EVALUATORS[backend]).result
    assert screener.screen(STENOSIS) == expected


def test_nan_none_and_empty_text_are_unknown_not_false(screener: Screener) -> None:
    noisy = {**STENOSIS, "pregnant": math.nan, "myelopathy": None, "sva_mm": "", "bmi": math.nan}
    assert screener.screen(noisy) == screener.screen(STENOSIS)
    assert "bmi" in {m for n in screener.screen(noisy).not_evaluable for m in n.missing}


def test_an_invalid_case_raises_from_screen_and_is_a_value_from_screen_many(
    screener: Screener,
) -> None:
    bad = {"case_id": "S-2", "slip_pct": 30}
    with pytest.raises(CaseInputError, match="slip_percent"):
        screener.screen(bad)
    out = list(screener.screen_many([STENOSIS, bad, {**STENOSIS, "case_id": "S-3"}]))
    assert [type(o) for o in out] == [Result, InputError, Result]
    error = out[1]
    assert isinstance(error, InputError)
    assert (error.row, error.case_id, error.field) == (1, "S-2", None)
    assert "did you mean 'slip_percent'" in error.reason
    assert [o.case_id for o in out if isinstance(o, Result)] == ["S-1", "S-3"]


def test_an_identifying_case_id_or_value_is_never_carried(screener: Screener) -> None:
    phone = "+44 7700 900123"
    (error,) = screener.screen_many([{"case_id": phone, "age_years": 40}])
    assert isinstance(error, InputError)
    assert error.case_id is None
    assert phone not in str(error)
    assert phone not in error.reasons


def test_screen_many_matches_one_by_one_on_a_cohort_with_bad_rows(screener: Screener) -> None:
    rows = cohort(300)
    many = list(screener.screen_many(rows))
    assert len(many) == len(rows)
    assert any(isinstance(o, InputError) for o in many)
    for row, got in zip(rows, many, strict=True):
        try:
            expected: Result | None = screener.screen(row)
        except CaseInputError:
            expected = None
        if expected is None:
            assert isinstance(got, InputError)
        else:
            assert got == expected


@pytest.mark.timeout(300)
def test_eight_threads_give_the_serial_results(screener: Screener) -> None:
    """The durable-rules handles are held by one thread at a time; without that, threads in
    one handle lose firings (docs/durable-rules-notes.md §3). Cases go one by one and in
    small batches, so the threads interleave inside the engine as a web service would."""
    rows = cohort(400, seed=11)
    serial = [
        r.model_dump_json() if isinstance(r, Result) else str(r) for r in screener.screen_many(rows)
    ]

    def one(index: int) -> str:
        try:
            return screener.screen(rows[index]).model_dump_json()
        except CaseInputError:
            (error,) = screener.screen_many([rows[index]])
            return str(dataclasses.replace(error, row=index))  # type: ignore[type-var]

    def some(start: int) -> list[str]:
        out = screener.screen_many(rows[start : start + 25])
        return [r.model_dump_json() if isinstance(r, Result) else str(r) for r in out]

    with ThreadPoolExecutor(8) as pool:
        singles = list(pool.map(one, range(len(rows)), timeout=240))
        batches = list(pool.map(some, range(0, len(rows), 25), timeout=240))
    assert singles == serial
    rebased = [line for batch in batches for line in batch]
    assert [r for r in rebased if r.startswith("{")] == [r for r in serial if r.startswith("{")]


def test_a_site_profile_is_validated_as_the_site_option_is(tmp_path: Path) -> None:
    with pytest.raises(CaseInputError, match="not a setting field"):
        Screener.load(RULES_DIR, site={"age_years": 40})
    mapping = Screener.load(RULES_DIR, "reference", site={"navigation_available": True})
    site_file = tmp_path / "site.yaml"
    site_file.write_text("navigation_available: true\n")
    from_file = Screener.load(RULES_DIR, "reference", site=site_file)
    assert mapping.site == from_file.site == {"navigation_available": True}
    assert mapping.screen(STENOSIS).assumed == {"navigation_available": True}
    assert mapping.screen(STENOSIS) == from_file.screen(STENOSIS)


def test_screen_frame_pandas_one_row_per_input_row(screener: Screener) -> None:
    pd = pytest.importorskip("pandas")
    rows = cohort(120, seed=3)
    frame = pd.DataFrame(rows)
    frame.loc[0, "pregnant"] = pd.NA
    out = screener.screen_frame(frame)
    assert isinstance(out, pd.DataFrame)
    assert len(out) == len(frame)
    for (_, got), result in zip(out.iterrows(), screener.screen_many(rows), strict=True):
        if isinstance(result, InputError):
            # the same problem; a number may read -1.0 (pandas holds a gappy integer column
            # as floats)
            assert got["rejected"].split(":")[0] == result.reasons.split(":")[0]
            assert pd.isna(got["verdict"])
        else:
            assert pd.isna(got["rejected"])
            assert got["case_id"] == result.case_id
            assert got["verdict"] == result.verdict.value
            fired = [f.rule_id for f in result.findings if f.severity.value == "major"]
            assert got["fired_major"] == ";".join(fired)
            assert got["next_questions"] == ";".join(result.next_questions)
            assert got["possible_verdicts"] == ";".join(result.possible_verdicts)


def test_screen_frame_reads_pandas_missing_markers_as_unknown(screener: Screener) -> None:
    pd = pytest.importorskip("pandas")
    import numpy as np

    frame = pd.DataFrame(
        [
            {**STENOSIS, "pregnant": np.nan, "myelopathy": None, "bmi": pd.NA, "sva_mm": ""},
            STENOSIS,
        ]
    )
    frame["levels"] = frame["levels"].astype("Int64")  # a nullable integer column
    out = screener.screen_frame(frame)
    assert out["rejected"].isna().all()
    assert out.loc[0].drop("case_id").equals(out.loc[1].drop("case_id"))


def test_screen_frame_polars_in_polars_out(screener: Screener) -> None:
    pl = pytest.importorskip("polars")
    rows = [STENOSIS, {"case_id": "S-9", "age_years": 40, "pregnant": None}, {"case_id": "S-8"}]
    frame = pl.DataFrame(rows, infer_schema_length=None)
    frame = frame.with_columns(pl.Series("bmi", [float("nan"), None, 27.0]))
    out = screener.screen_frame(frame)
    assert isinstance(out, pl.DataFrame)
    assert out.height == 3
    assert out["verdict"].to_list() == [
        r.verdict.value
        for r in screener.screen_many(
            [STENOSIS, {"case_id": "S-9", "age_years": 40}, {"case_id": "S-8", "bmi": 27.0}]
        )
        if isinstance(r, Result)
    ]


def test_screen_frame_ignores_unknown_columns_and_refuses_other_objects(
    screener: Screener,
) -> None:
    """Issue 27: an extra column is left out (and listed), not fatal; --strict-columns'
    counterpart refuses it; `ignore=` keeps working."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([{**STENOSIS, "ward": "B2"}])
    out = screener.screen_frame(frame)
    assert pd.isna(out["rejected"][0])
    assert out.attrs["ignored_columns"] == ["ward"]
    assert out["verdict"][0] == screener.screen(STENOSIS).verdict.value
    assert pd.isna(screener.screen_frame(frame, ignore=["ward"])["rejected"][0])
    with pytest.raises(UsageError, match="not in the data dictionary: 'ward'"):
        screener.screen_frame(frame, strict_columns=True)
    with pytest.raises(UsageError, match="direct identifiers"):
        screener.screen_frame(pd.DataFrame([{**STENOSIS, "patient_name": "x"}]))
    with pytest.raises(Exception, match="pandas or polars DataFrame"):
        screener.screen_frame([STENOSIS])


def test_a_compiled_condition_still_pickles() -> None:
    rule = RULESET.rules[0]
    Screener.from_ruleset(RULESET, "reference").screen(STENOSIS)  # compiles every condition
    assert "_kleene" in rule.when.__dict__
    copy = pickle.loads(pickle.dumps(rule.when))  # noqa: S301  # our own bytes
    assert copy == rule.when
    assert "_kleene" not in copy.__dict__


def test_a_result_renders_as_short_escaped_html(screener: Screener) -> None:
    flagged = {**STENOSIS, "cauda_equina_syndrome": True}
    result = screener.screen(flagged)
    html = result._repr_html_()
    assert "urgent_review" in html
    assert "Red flags" in html
    assert "RED-001" in html
    hostile = result.model_copy(update={"summary": "<script>alert(1)</script>"})
    assert "<script>" not in hostile._repr_html_()
    assert "&lt;script&gt;" in hostile._repr_html_()
    assert "rationale" not in html.lower()  # short: no rationale or sources
    questions = screener.screen({"case_id": "Q-1", "age_years": 40})._repr_html_()
    assert "Questions that can change the verdict" in questions


@pytest.mark.timeout(300)
def test_the_batch_summary_renders_as_html(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.batch.summary import BatchSummary
    from engine.cli import app

    source = tmp_path / "cohort.jsonl"
    rows = [STENOSIS, {**STENOSIS, "case_id": "S-2", "cauda_equina_syndrome": True}]
    rows.append({"case_id": "S-3", "age_years": 130})
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = tmp_path / "summary.json"
    out = CliRunner().invoke(
        app,
        [
            "batch",
            str(source),
            "--out",
            str(tmp_path / "out.jsonl"),
            "--summary",
            str(summary),
            "--workers",
            "1",
            "--progress",
            "none",
        ],
    )
    assert out.exit_code == 0, out.stderr
    html = BatchSummary.model_validate_json(summary.read_text())._repr_html_()
    assert "3 rows read, 2 screened, 1 rejected (balanced)" in html
    assert "<td>urgent_review</td><td>1</td>" in html
    assert "age_years (1)" in html
