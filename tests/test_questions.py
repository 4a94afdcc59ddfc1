"""Questions that can change the verdict (issue 21 items 3 and 4): the policy decides which open
rules can change the verdict, the verdicts still possible, the order to ask in; a worth_discussing
or discuss_with_caution verdict is only given when no answer can change it; site settings say so.
"""

from __future__ import annotations

import csv
import json
import shutil
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import CaseInputError, RuleFileError
from engine.evaluate.reference import ReferenceEvaluator
from engine.io.cases import read_site
from engine.models import Result, RuleOutcome, RuleStatus, Verdict
from engine.policy import policy_for
from engine.report.text import brief_line, render_text
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset
from engine.screen import screen_values
from engine.screener import Screener
from tests.conftest import RULES_DIR, RULESET

REFERENCE = ReferenceEvaluator(RULESET)
runner = CliRunner()
BEST_FIRST = list(reversed(Verdict))
# a lumbar decompression with every red flag, major and site question answered
SETTLED: dict[str, Any] = {
    "age_years": 45,
    "sex": "male",
    "bmi": 26.0,
    "diagnosis": "spinal_stenosis",
    "region": "lumbar",
    "lowest_level": "L4-L5",
    "levels": 1,
    "planned_procedure": "decompression",
    "cauda_equina_syndrome": False,
    "progressive_neuro_deficit": False,
    "myelopathy": False,
    "mis_equipment_available": True,
    "navigation_available": True,
    "surgeon_mis_cases": 100,
}


def screen(values: dict[str, Any], ruleset: Ruleset = RULESET, **kw: Any) -> Result:
    evaluator = REFERENCE if ruleset is RULESET else ReferenceEvaluator(ruleset)
    return screen_values("Q", values, ruleset, evaluator, **kw).result


def changing(result: Result) -> set[str]:
    return {n.rule_id for n in result.not_evaluable if n.can_change_verdict}


# --- the policy ---------------------------------------------------------------------------------


def test_an_open_caution_never_holds_the_verdict_back() -> None:
    """Nothing fired, the red flags and majors are settled, a caution (ACC-015, revision
    surgery) is open: the verdict is the settled one (issue 28), the caution is listed as not
    yet excluded, and its question still counts as one that can change the verdict."""
    result = screen(SETTLED)
    assert result.verdict is Verdict.worth_discussing
    assert "cautions not yet excluded" in result.summary
    assert result.possible_verdicts == [Verdict.worth_discussing, Verdict.discuss_with_caution]
    assert result.possible_verdicts_exact
    assert changing(result) == {"ACC-015"}
    assert result.next_questions == ["prior_surgery_same_level"]
    assert result.deciding_questions == []
    assert [(c.rule_id, c.missing, c.can_change_verdict) for c in result.open_cautions] == [
        ("ACC-015", ["prior_surgery_same_level"], True)
    ]
    answered = screen({**SETTLED, "prior_surgery_same_level": False})
    assert answered.verdict is Verdict.worth_discussing
    assert answered.possible_verdicts == [Verdict.worth_discussing]
    assert answered.next_questions == []
    assert answered.open_cautions == []


def test_an_open_major_beside_an_open_caution_gives_insufficient_data() -> None:
    """The boundary: the same case with a major question open (EQP-001, equipment) is
    insufficient_data; its question is deciding and ranked before the caution's."""
    values = dict(SETTLED)
    del values["mis_equipment_available"]
    result = screen(values)
    assert result.verdict is Verdict.insufficient_data
    assert "could change the verdict" in result.summary
    assert result.next_questions == ["mis_equipment_available", "prior_surgery_same_level"]
    assert result.deciding_questions == ["mis_equipment_available"]
    assert [c.rule_id for c in result.open_cautions] == ["ACC-015"]


def test_an_open_red_flag_alone_gives_insufficient_data() -> None:
    values = {**SETTLED, "prior_surgery_same_level": False}
    del values["cauda_equina_syndrome"]
    result = screen(values)
    assert result.verdict is Verdict.insufficient_data
    assert result.deciding_questions == ["cauda_equina_syndrome"]
    assert result.open_cautions == []


def test_a_deciding_question_outranks_a_field_more_cautions_need() -> None:
    """Ranking: any field a red-flag or major rule needs comes before one only cautions need,
    however many cautions need it."""
    result = screen({"diagnosis": "spondylolisthesis", "planned_procedure": "fusion"})
    deciding = result.deciding_questions
    assert deciding
    assert result.next_questions[: len(deciding)] == deciding
    caution_only = [q for q in result.next_questions if q not in deciding]
    assert caution_only, result.next_questions


def test_an_open_caution_under_a_fired_caution_cannot_change_it() -> None:
    result = screen({**SETTLED, "age_years": 16, "sex": "female", "pregnant": False})
    assert "RAD-003" in {f.rule_id for f in result.findings}  # a caution fired
    assert result.verdict is Verdict.discuss_with_caution
    assert result.possible_verdicts == [Verdict.discuss_with_caution]
    assert {n.rule_id: n.can_change_verdict for n in result.not_evaluable}["ACC-015"] is False
    assert result.next_questions == []


def test_info_rules_never_change_the_verdict() -> None:
    result = screen({"diagnosis": "fracture", "planned_procedure": "fusion"})
    assert any(n.severity.value == "info" for n in result.not_evaluable)
    infos = [n for n in result.not_evaluable if n.severity.value == "info"]
    assert all(not n.can_change_verdict for n in infos)


def test_red_flags_come_first_and_a_major_hides_none_of_them() -> None:
    """not_favoured with the red flags open: they can still make it urgent_review; the open
    cautions cannot change a not_favoured verdict."""
    result = screen({"diagnosis": "spondylolisthesis", "slip_percent": 60, "lowest_level": "L4-L5"})
    assert result.verdict is Verdict.not_favoured
    assert result.possible_verdicts == [Verdict.not_favoured, Verdict.urgent_review]
    assert result.next_questions == ["cauda_equina_syndrome", "progressive_neuro_deficit"]
    for item in result.not_evaluable:
        assert item.can_change_verdict is (item.severity.value == "red_flag")
    assert "red flags not yet excluded: cauda_equina_syndrome" in brief_line(result)


def test_ranking_puts_red_flags_then_the_fields_most_major_rules_need() -> None:
    result = screen(
        {"diagnosis": "disc_herniation", "planned_procedure": "discectomy", "lowest_level": "L4-L5"}
    )
    ranked = result.next_questions
    assert ranked[:2] == ["cauda_equina_syndrome", "progressive_neuro_deficit"]
    needed = {
        name: sorted(
            ["red_flag", "major", "caution", "info"].index(n.severity.value)
            for n in result.not_evaluable
            if n.can_change_verdict and name in n.missing
        )
        for name in ranked
    }
    tallies = [
        tuple(-sum(1 for s in needed[name] if s == level) for level in range(4)) for name in ranked
    ]
    assert tallies == sorted(tallies)  # more red-flag, then more major rules first
    # the brief line names what keeps the verdict open: the deciding questions, ranked
    assert brief_line(result).endswith("needs: " + ", ".join(result.deciding_questions))


def test_shared_fields_make_the_possible_verdicts_a_bound() -> None:
    """IND-004 and IND-001 both need myelopathy: whether both can resolve as the enumeration
    assumes is not known, so the possible verdicts are a stated bound, not exact."""
    result = screen({"diagnosis": "spinal_stenosis", "region": "cervical", "levels": 3})
    both = {n.rule_id for n in result.not_evaluable if "myelopathy" in n.missing}
    assert {"IND-004", "IND-001"} <= both
    assert not result.possible_verdicts_exact


def test_possible_verdicts_match_every_resolution_of_the_open_rules() -> None:
    """Brute force: resolve every open rule of real cases each way, apply the policy file by
    hand, and compare with possible_verdicts and can_change_verdict."""
    policy = RULESET.policy.verdicts
    cases = [  # each with at most 14 open rules: 2**14 resolutions
        SETTLED,
        {**SETTLED, "age_years": 16, "sex": "female"},
        {"diagnosis": "fracture", "planned_procedure": "fusion", "levels": 2},
        {"diagnosis": "spondylolisthesis", "slip_percent": 60},
        {"diagnosis": "disc_herniation", "planned_procedure": "discectomy", "levels": 1},
        {**SETTLED, "mis_equipment_available": None, "prior_surgery_same_level": False},
    ]

    def by_hand(fired: set[str]) -> Verdict:
        for entry in policy:
            if entry.if_any is None or (
                entry.if_any.status == "fired" and fired & {s.value for s in entry.if_any.severity}
            ):
                return entry.verdict
        raise AssertionError

    for values in cases:
        result = screen({k: v for k, v in values.items() if v is not None})
        fired = {f.severity.value for f in result.findings}
        open_items = result.not_evaluable
        assert len(open_items) <= 14, values
        reachable = set()
        flips: dict[str, bool] = {n.rule_id: False for n in open_items}
        for choice in product((False, True), repeat=len(open_items)):
            severities = fired | {
                n.severity.value for n, c in zip(open_items, choice, strict=True) if c
            }
            verdict = by_hand(severities)
            reachable.add(verdict)
            for index, item in enumerate(open_items):
                if not choice[index]:
                    alone = by_hand(severities | {item.severity.value})
                    flips[item.rule_id] |= alone != verdict
        assert result.possible_verdicts == [v for v in BEST_FIRST if v in reachable], values
        assert {n.rule_id: n.can_change_verdict for n in open_items} == flips, values
        deciding_open = [
            n for n in open_items if n.can_change_verdict and n.severity.value != "caution"
        ]
        settled = by_hand(fired)
        if settled in (Verdict.worth_discussing, Verdict.discuss_with_caution):
            # held back exactly when a red-flag or major rule could change the verdict
            assert (result.verdict is Verdict.insufficient_data) is bool(deciding_open), values
        if not deciding_open:  # the verdict is the one the settled rules give
            assert result.verdict is settled, values
        assert [c.rule_id for c in result.open_cautions] == [
            n.rule_id for n in open_items if n.severity.value == "caution"
        ], values


def test_assessment_is_cached_per_kind_of_case_and_cheap_to_reuse() -> None:
    policy = policy_for(RULESET)
    assert policy is policy_for(RULESET)
    outcomes = [RuleOutcome("ACC-015", RuleStatus.not_evaluable, ("prior_surgery_same_level",))]
    first = policy.outlook(policy.present(outcomes))
    assert policy.outlook(policy.present(outcomes)) is first


# --- the policy file is the one place -----------------------------------------------------------


def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target)
    return target


def test_two_undecided_entries_are_refused(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    policy = rules / "policy.yaml"
    text = policy.read_text()
    policy.write_text(
        text.replace(
            "    if_any: {status: fired, severity: [major]}\n",
            "    if_any: {status: fired, severity: [major]}\n    if_undecided: true\n",
        )
    )
    with pytest.raises(RuleFileError, match="only one verdict may take if_undecided"):
        load_ruleset(rules)


def test_an_edited_policy_moves_verdict_report_and_batch_counts_together(tmp_path: Path) -> None:
    """Without if_undecided and with cautions blocking like majors, every consumer follows:
    the verdict, can_change_verdict, the brief line and the batch summary's counts."""
    rules = rules_copy(tmp_path)
    policy = rules / "policy.yaml"
    text = policy.read_text().replace("    if_undecided: true\n", "")
    text = text.replace(
        "if_any: {status: not_evaluable, severity: [red_flag, major]}",
        "if_any: {status: not_evaluable, severity: [red_flag]}",
    )
    policy.write_text(text)
    edited = load_ruleset(rules)
    open_major = {**SETTLED, "prior_surgery_same_level": False}
    del open_major["mis_equipment_available"]
    result = screen(open_major, edited)
    assert result.verdict is Verdict.worth_discussing  # the edited policy lets it through
    assert result.possible_verdicts == [Verdict.worth_discussing, Verdict.not_favoured]
    assert result.next_questions == ["mis_equipment_available"]
    assert "needs:" not in brief_line(result)
    bundled = screen(open_major)
    assert bundled.verdict is Verdict.insufficient_data
    assert "needs: mis_equipment_available" in brief_line(bundled)

    source = tmp_path / "cases.csv"
    rows = [{"case_id": "A", **open_major}, {"case_id": "B", **SETTLED}]
    with source.open("w", newline="") as handle:
        names = sorted({k for row in rows for k in row})
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    counts = {}
    for name, directory in (("edited", rules), ("bundled", RULES_DIR)):
        summary = tmp_path / f"{name}.json"
        out = runner.invoke(
            app,
            [
                "batch",
                str(source),
                "--out",
                str(tmp_path / f"{name}.jsonl"),
                "--summary",
                str(summary),
                "--rules",
                str(directory),
                "--workers",
                "1",
                "--progress",
                "none",
            ],
        )
        assert out.exit_code == 0, out.stderr
        report = json.loads(summary.read_text())
        results = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").open()]
        assert report["verdicts"] == {
            v.value: sum(r["verdict"] == v.value for r in results) for v in Verdict
        }
        counts[name] = (
            report["verdicts"],
            report["insufficient_only_site"],
            report["decided_with_cautions_open"],
        )
        # the Screener (screen, screen_frame) and the text report say what the batch said
        screener = Screener.load(directory, "reference")
        verdicts = [r["verdict"] for r in results]
        assert [screener.screen(row).verdict.value for row in rows] == verdicts
        frame = screener.screen_frame(pd.DataFrame(rows))
        assert frame["verdict"].tolist() == verdicts
        assert frame["next_questions"].tolist() == [";".join(r["next_questions"]) for r in results]
        for row, verdict in zip(rows, verdicts, strict=True):
            assert f"({verdict})" in text_of(screener.screen(row)).splitlines()[1]
    assert counts["edited"][0]["insufficient_data"] == 0
    assert counts["edited"][1] == 0
    assert counts["bundled"][0]["insufficient_data"] == 1  # A: equipment
    assert counts["bundled"][1] == 1  # A is open for want of a site setting alone
    assert counts["bundled"][2] == 1  # B: worth_discussing, revision surgery not yet excluded


# --- site settings ------------------------------------------------------------------------------


def text_of(result: Result) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    render_text(result, console)
    return console.export_text()


def test_a_site_setting_among_the_questions_says_it_is_one() -> None:
    values = {**SETTLED, "prior_surgery_same_level": False}
    del values["mis_equipment_available"]
    result = screen(values)
    assert result.next_questions == ["mis_equipment_available"]
    report = text_of(result)
    assert "setting of the hospital" in report
    assert "--site FILE" in report
    with_site = screen(values, site={"mis_equipment_available": True})
    assert with_site.verdict is Verdict.worth_discussing
    assert "setting of the hospital" not in text_of(with_site)


def site_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return str(path)


def test_surgeon_cases_per_technique_are_read_and_checked(tmp_path: Path) -> None:
    site = read_site(
        site_file(tmp_path, "surgeon_mis_cases: {mis_tlif: 80, endoscopic_discectomy: 5}\n")
    )
    assert site == {"surgeon_mis_cases": {"mis_tlif": 80, "endoscopic_discectomy": 5}}
    assert read_site(site_file(tmp_path, "surgeon_mis_cases: 30\n")) == {"surgeon_mis_cases": 30}
    for bad, words in (
        (
            "surgeon_mis_cases: {tlif: 80}\n",
            "'tlif' is not a mis_technique",
        ),
        ("surgeon_mis_cases: {mis_tlif: -3}\n", "out of range"),
        ("surgeon_mis_cases: {mis_tlif: many}\n", "not a whole number"),
        ("surgeon_mis_cases: {}\n", "empty mapping"),
        ("navigation_available: {mis_tlif: true}\n", "nested structure"),
    ):
        with pytest.raises(CaseInputError) as caught:
            read_site(site_file(tmp_path, bad))
        assert words in str(caught.value), bad


PER_TECHNIQUE = {"surgeon_mis_cases": {"mis_tlif": 30, "endoscopic_discectomy": 5}}


def test_the_case_technique_picks_its_number() -> None:
    tlif = screen({"planned_procedure": "fusion", "mis_technique": "mis_tlif"}, site=PER_TECHNIQUE)
    assert tlif.assumed == {"surgeon_mis_cases": 30}
    assert {"CPX-001"} <= {f.rule_id for f in tlif.findings}  # 30 < 44
    assert "CPX-002" not in {f.rule_id for f in tlif.findings}  # 30 >= 20
    endo = screen(
        {
            "planned_procedure": "discectomy",
            "mis_technique": "endoscopic_discectomy",
            "region": "lumbar",
        },
        site=PER_TECHNIQUE,
    )
    assert endo.assumed == {"surgeon_mis_cases": 5}
    assert "CPX-004" in {f.rule_id for f in endo.findings}  # 5 < 25
    unlisted = screen({"mis_technique": "llif"}, site=PER_TECHNIQUE)
    assert "surgeon_mis_cases" not in unlisted.assumed  # no number for LLIF: unknown
    own = screen({"mis_technique": "mis_tlif", "surgeon_mis_cases": 200}, site=PER_TECHNIQUE)
    assert own.assumed == {}  # the case's own value wins


def test_with_the_technique_unknown_a_number_is_assumed_only_when_every_allowed_one_shares_it() -> (
    None
):
    differing = screen({"planned_procedure": "discectomy"}, site=PER_TECHNIQUE)
    assert "surgeon_mis_cases" not in differing.assumed
    cpx = {c.rule_id: c.missing for c in differing.conditional}
    assert "surgeon_mis_cases" in cpx["CPX-004"]  # still asked, per technique, when chosen
    shared = {
        "surgeon_mis_cases": {
            "tubular_discectomy": 12,
            "endoscopic_discectomy": 12,
            "other": 12,
        }
    }
    same = screen({"planned_procedure": "discectomy"}, site=shared)
    assert same.assumed == {"surgeon_mis_cases": 12}
    inferred = screen(
        {"planned_procedure": "vertebral_augmentation"},
        site={"surgeon_mis_cases": {"vertebral_augmentation": 40}},
    )
    assert inferred.assumed == {"surgeon_mis_cases": 40}  # the technique is inferred (CON-002)


def test_scalar_site_profiles_still_apply_to_every_technique() -> None:
    result = screen({"planned_procedure": "fusion"}, site={"surgeon_mis_cases": 30})
    assert result.assumed == {"surgeon_mis_cases": 30}


def test_batch_applies_a_per_technique_profile_and_stamps_it(tmp_path: Path) -> None:
    site = site_file(tmp_path, "surgeon_mis_cases: {mis_tlif: 30, endoscopic_discectomy: 5}\n")
    source = tmp_path / "cases.jsonl"
    rows = [
        {"case_id": "T", "planned_procedure": "fusion", "mis_technique": "mis_tlif"},
        {
            "case_id": "E",
            "planned_procedure": "discectomy",
            "mis_technique": "endoscopic_discectomy",
        },
        {"case_id": "U", "planned_procedure": "discectomy"},
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    args = ["batch", str(source), "--out", str(out), "--summary", str(summary), "--detail", "full"]
    done = runner.invoke(app, [*args, "--site", site, "--workers", "1", "--progress", "none"])
    assert done.exit_code == 0, done.stderr
    assumed = {r["case_id"]: r["assumed"] for r in map(json.loads, out.open())}
    assert assumed == {"T": {"surgeon_mis_cases": 30}, "E": {"surgeon_mis_cases": 5}, "U": {}}
    stamp = json.loads(summary.read_text())["stamp"]["site"]
    assert stamp == {"surgeon_mis_cases": {"mis_tlif": 30, "endoscopic_discectomy": 5}}
