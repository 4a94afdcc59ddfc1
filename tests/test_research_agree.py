"""`miss-screen agree`: kappa, sensitivity and specificity against numbers worked out by hand.

The labels are built from the tool's own verdicts on the bundled cohort (a plain batch run) with
known disagreements, so every cell of every table is known before `agree` runs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app

ROOT = Path(__file__).resolve().parent.parent
COHORT = ROOT / "cases" / "cohort" / "synthetic-500.csv"
POSITIVE = {"worth_discussing", "discuss_with_caution"}
runner = CliRunner()


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("batch") / "out.csv"
    done = runner.invoke(
        app, ["batch", str(COHORT), "--out", str(out), "--workers", "1", "--progress", "none"]
    )
    assert done.exit_code == 0, done.output
    with out.open(encoding="utf-8", newline="") as handle:
        return {row["case_id"]: row["verdict"] for row in csv.DictReader(handle)}


def kappa(a: int, b: int, c: int, d: int) -> float:
    """Cohen's kappa of a 2x2 table [[a, b], [c, d]] by hand."""
    n = a + b + c + d
    observed = (a + d) / n
    expected = ((a + b) * (a + c) + (c + d) * (b + d)) / n**2
    return (observed - expected) / (1 - expected)


def fleiss(rows: list[list[int]]) -> float:
    """Fleiss' kappa by hand: rows of yes-counts out of m raters per case."""
    m = len(rows[0])
    yes = [sum(r) for r in rows]
    n = len(rows)
    p_yes = sum(yes) / (n * m)
    shares = [p_yes, 1 - p_yes]
    agree_i = [(y * (y - 1) + (m - y) * (m - y - 1)) / (m * (m - 1)) for y in yes]
    p_bar = sum(agree_i) / n
    p_e = sum(s * s for s in shares)
    return (p_bar - p_e) / (1 - p_e)


def build(verdicts: dict[str, str], tmp_path: Path) -> tuple[Path, dict[str, list[str]], list[str]]:
    decided = [c for c, v in verdicts.items() if v != "insufficient_data"]
    positives = [c for c in decided if verdicts[c] in POSITIVE][:20]
    negatives = [c for c in decided if verdicts[c] not in POSITIVE][:20]
    insufficient = [c for c, v in verdicts.items() if v == "insufficient_data"][:3]
    assert len(positives) == 20
    assert len(negatives) == 20
    cases = positives + negatives
    # rater A: says no on 4 tool positives and yes on 2 tool negatives (yes/no labels)
    a = ["no" if i < 4 else "yes" for i in range(20)] + [
        "yes" if i < 2 else "no" for i in range(20)
    ]
    # rater B: verdicts; agrees except 1 tool positive called not_favoured
    b = [verdicts[c] for c in cases]
    b[0] = "not_favoured"
    # rater C: yes on every case
    c = ["yes"] * 40
    path = tmp_path / "labels.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "surgeon_a", "surgeon_b", "surgeon_c"])
        for i, case_id in enumerate(cases):
            writer.writerow([case_id, a[i], b[i], c[i]])
        for case_id in insufficient:
            writer.writerow([case_id, "yes", "worth_discussing", "yes"])
    return path, {"surgeon_a": a, "surgeon_b": b, "surgeon_c": c}, insufficient


def given_cases(labels: Path) -> list[str]:
    with labels.open(encoding="utf-8", newline="") as handle:
        return [row["case_id"] for row in csv.DictReader(handle)]


def run_agree(*args: str) -> tuple[int, str]:
    done = runner.invoke(app, ["agree", *args])
    return done.exit_code, done.output


def test_kappa_sensitivity_specificity_and_fleiss_match_hand_arithmetic(
    verdicts: dict[str, str], tmp_path: Path
) -> None:
    labels, given, insufficient = build(verdicts, tmp_path)
    code, output = run_agree("--labels", str(labels), "--cohort", str(COHORT), "--format", "json")
    assert code == 0, output
    data = json.loads(output)
    assert data["cases_compared"] == 40
    assert [c["case_id"] for c in data["tool_insufficient_data"]] == insufficient
    a = data["per_rater"]["surgeon_a"]["worth_discussing"]
    # rows rater no/yes, columns tool no/yes: rater no = 18 tool-no + 4 tool-yes
    assert a["confusion"]["rows_rater_columns_tool"] == [[18, 4], [2, 16]]
    assert a["cohen_kappa"]["kappa"] == pytest.approx(kappa(18, 4, 2, 16), abs=1e-4)
    assert a["sensitivity"]["value"] == pytest.approx(16 / 18, abs=1e-4)
    assert a["specificity"]["value"] == pytest.approx(18 / 22, abs=1e-4)
    low, high = a["sensitivity"]["ci95"]
    assert low < 16 / 18 < high
    b = data["per_rater"]["surgeon_b"]
    assert b["worth_discussing"]["cohen_kappa"]["kappa"] == pytest.approx(
        kappa(20, 0, 1, 19), abs=1e-4
    )
    assert b["verdict"]["cohen_kappa"]["n"] == 40
    c = data["per_rater"]["surgeon_c"]["worth_discussing"]
    assert c["cohen_kappa"]["kappa"] == pytest.approx(0.0, abs=1e-9)  # no agreement beyond chance
    assert c["specificity"]["n"] == 0
    assert c["specificity"]["value"] is None
    yes_rows = [
        [int(given[r][i] == "yes" or given[r][i] in POSITIVE) for r in given] for i in range(40)
    ]
    assert data["fleiss_kappa"]["worth_discussing"] == pytest.approx(fleiss(yes_rows), abs=1e-4)
    # disagreements: A on 4 tool positives (and 2 negatives), B on positive 0, C on all 20
    # tool negatives: 4 + 20 distinct cases, each with the rules that decided the verdict
    disagreeing = {d["case_id"]: d for d in data["disagreements"]}
    assert len(disagreeing) == 4 + 20
    first = disagreeing[next(iter(given_cases(labels)))]
    assert first["raters"] == {"surgeon_a": "no", "surgeon_b": "not_favoured"}
    for d in data["disagreements"]:
        if d["tool"] in ("urgent_review", "not_favoured", "discuss_with_caution"):
            assert d["deciding_rules"]
    # same seed, same intervals
    assert (
        run_agree("--labels", str(labels), "--cohort", str(COHORT), "--format", "json")[1] == output
    )


def test_blank_labels_and_unknown_case_ids_are_clear_errors(
    verdicts: dict[str, str], tmp_path: Path
) -> None:
    labels, _, _ = build(verdicts, tmp_path)
    lines = labels.read_text(encoding="utf-8").splitlines()
    first = lines[1].split(",")
    blank = ",".join([first[0], "", *first[2:]])
    (tmp_path / "blank.csv").write_text("\n".join([lines[0], blank, *lines[2:]]) + "\n")
    code, output = run_agree("--labels", str(tmp_path / "blank.csv"), "--cohort", str(COHORT))
    assert code == 2
    assert f"case_id {first[0]}: rater surgeon_a" in output
    assert "--allow-missing" in output
    code, output = run_agree(
        "--labels",
        str(tmp_path / "blank.csv"),
        "--cohort",
        str(COHORT),
        "--allow-missing",
        "--format",
        "json",
    )
    assert code == 0, output
    data = json.loads(output)
    assert data["missing_labels"] == [{"case_id": first[0], "rater": "surgeon_a"}]
    assert data["per_rater"]["surgeon_a"]["n"] == 39
    assert data["per_rater"]["surgeon_b"]["n"] == 40
    (tmp_path / "unknown.csv").write_text(lines[0] + "\nNOPE-1,yes,worth_discussing,yes\n")
    code, output = run_agree("--labels", str(tmp_path / "unknown.csv"), "--cohort", str(COHORT))
    assert code == 2
    assert "case_id NOPE-1 of" in output
    assert "is not in" in output
    (tmp_path / "bad.csv").write_text(lines[0] + f"\n{first[0]},maybe,worth_discussing,yes\n")
    code, output = run_agree("--labels", str(tmp_path / "bad.csv"), "--cohort", str(COHORT))
    assert code == 2
    assert "rater surgeon_a: 'maybe' is not a label" in output
