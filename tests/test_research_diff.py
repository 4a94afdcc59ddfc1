"""`miss-screen rules diff`: moving one threshold changes exactly the cases it should.

The expectation is built from the cohort file with the csv module, not from the engine: ACC-016
reads `planned_procedure == "fusion" and levels >= 3`. Moved to `levels >= 2`, its outcome
changes for rows with levels 2 and only those: not fired -> fired where the procedure is fusion,
not fired -> not evaluable where the procedure is unknown (`unknown and true` is unknown; no
constraint narrows planned_procedure). A caution finding can only move a verdict to
discuss_with_caution, and only from a verdict it does not outrank (worth_discussing, or
insufficient_data that a caution rule was keeping undecided); urgent_review and not_favoured
mask it.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.research.diff import diff_cohort, rule_changes, word_diff
from engine.rules.loader import load_ruleset

ROOT = Path(__file__).resolve().parent.parent
COHORT = ROOT / "cases" / "cohort" / "synthetic-500.csv"
RULE_FILE = Path("access") / "ACC-016-multilevel-fusion.yaml"


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rules = tmp_path_factory.mktemp("edited") / "rules"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / RULE_FILE
    text = path.read_text(encoding="utf-8")
    assert text.count("levels >= 3") == 1
    path.write_text(text.replace("levels >= 3", "levels >= 2"), encoding="utf-8")
    return rules


def expected_rows() -> tuple[set[int], set[int]]:
    """Rows (1-based) whose ACC-016 outcome must change: to fired, to not evaluable."""
    fired, unknown = set(), set()
    with COHORT.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            if row["levels"] != "2":
                continue
            if row["planned_procedure"] == "fusion":
                fired.add(number)
            elif row["planned_procedure"] == "":
                unknown.add(number)
    return fired, unknown


def test_one_moved_threshold_changes_exactly_the_rows_between_the_thresholds(
    edited: Path, tmp_path: Path
) -> None:
    changes = tmp_path / "changes.csv"
    report = diff_cohort(
        str(ROOT / "rules"),
        str(edited),
        str(COHORT),
        workers=1,
        changes_out=str(changes),
        all_outcome_changes=True,
    )
    fired, unknown = expected_rows()
    assert fired
    assert unknown
    with changes.open(encoding="utf-8", newline="") as handle:
        lines = list(csv.DictReader(handle))
    moved = {int(line["row"]): line for line in lines}
    assert set(moved) == fired | unknown
    for number, line in moved.items():
        assert line["rules_responsible"] == "ACC-016"
        after = "fired" if number in fired else "not_evaluable"
        assert line["outcome_changes"] == f"ACC-016:not_fired_or_not_applicable->{after}"
        old, new = line["old_verdict"], line["new_verdict"]
        if old != new:  # a caution finding only moves a verdict to discuss_with_caution
            assert number in fired
            assert (old, new) in {
                ("worth_discussing", "discuss_with_caution"),
                ("insufficient_data", "discuss_with_caution"),
            }
        if old in ("urgent_review", "not_favoured", "discuss_with_caution"):
            assert new == old  # masked by a higher finding, or already cautioned
        if old == "worth_discussing" and number in fired:
            assert new == "discuss_with_caution"
    verdict_changed = {n for n, line in moved.items() if line["verdict_changed"] == "true"}
    assert report.changed == len(verdict_changed) > 0
    assert report.outcome_changed == len(fired | unknown)
    # the transition matrix adds up to the rows both screened, and its off-diagonal to the changes
    cells = [(a, b, n) for a, row in report.transitions.items() for b, n in row.items()]
    assert sum(n for _, _, n in cells) == report.compared
    assert sum(n for a, b, n in cells if a != b) == report.changed
    rec = report.old_summary.reconciliation
    assert rec.balanced
    assert rec.rows_read == 500
    assert report.compared == rec.rows_screened == report.new_summary.reconciliation.rows_screened
    counts = {c.rule_id: c for c in report.rule_counts()}
    assert counts["ACC-016"].new_fired - counts["ACC-016"].old_fired == len(fired)  # type: ignore[operator]
    assert counts["ACC-016"].new_not_evaluable - counts["ACC-016"].old_not_evaluable == len(  # type: ignore[operator]
        unknown
    )
    assert [
        c for c in report.rule_counts() if c.rule_id != "ACC-016" and c.old_fired != c.new_fired
    ] == []
    stamps = report.as_json()
    assert stamps["old"]["ruleset"]["sha256"] != stamps["new"]["ruleset"]["sha256"]
    assert len(stamps["cohort"]["sha256"]) == 64


def test_rule_changes_name_the_threshold_and_a_word_diff(edited: Path) -> None:
    (change,) = rule_changes(load_ruleset(ROOT / "rules"), load_ruleset(edited))
    assert change.rule_id == "ACC-016"
    assert change.aspects == ["condition", "thresholds"]
    assert change.thresholds == {"old": ["3"], "new": ["2"]}
    assert change.diff["condition"].endswith("(levels >= [-3-] {+2+})")
    assert word_diff("a and b", "a or b") == "a [-and-] {+or+} b"


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "rules", "diff", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=300,
    )


def test_cli_fail_on_change_json_and_html(edited: Path, tmp_path: Path) -> None:
    out = tmp_path / "diff.json"
    done = _cli(
        "rules",
        str(edited),
        "--cohort",
        str(COHORT),
        "--out",
        str(out),
        "--fail-on-change",
        "--workers",
        "2",
    )
    assert done.returncode == 1, done.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["verdict_changed"] > 0
    changes = Path(str(out) + ".changes.csv")
    with changes.open(encoding="utf-8", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == data["verdict_changed"]
    same = _cli(
        "rules",
        "rules",
        "--cohort",
        str(COHORT),
        "--out",
        str(tmp_path / "same.html"),
        "--fail-on-change",
    )
    assert same.returncode == 0, same.stderr
    html = (tmp_path / "same.html").read_text(encoding="utf-8")
    assert 'id="transition-worth_discussing-worth_discussing"' in html
    assert "No rule, derived attribute, constraint or policy differs." in html


def test_a_git_revision_is_read_and_a_bad_one_is_one_clear_line(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    ok = _cli("HEAD:rules", "rules", "--cohort", str(COHORT), "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["old"]["reconciliation"]["balanced"] is True
    bad = _cli("no-such-rev:rules", "rules", "--cohort", str(COHORT))
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: no-such-rev:rules: cannot read this git revision")


RAD_005 = Path("radiation") / "RAD-005-bmi-40-radiation-dose.yaml"


RAD_005_VERSION = load_ruleset(ROOT / "rules").by_id["RAD-005"].meta.version  # as bundled


def _rad_005_edited(tmp_path: Path, *, version: str) -> Path:
    """A copy of the rules with RAD-005's BMI 40 moved to 35, its `version` set to `version`."""
    rules = tmp_path / f"rules-{version}"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / RAD_005
    text = path.read_text(encoding="utf-8")
    assert text.count("bmi >= 40") == 1
    assert text.count(f"version: {RAD_005_VERSION}") == 1
    text = text.replace("bmi >= 40", "bmi >= 35")
    text = text.replace(f"version: {RAD_005_VERSION}", f"version: {version}")
    path.write_text(text, encoding="utf-8")
    return rules


@pytest.mark.timeout(300)
def test_a_threshold_moved_without_a_version_bump_is_warned(tmp_path: Path) -> None:
    """The researcher's edit from issue 29: BMI 40 -> 35 keeping its version is named on stderr, in
    the report and in the JSON; the same edit with a new version is not."""
    base = load_ruleset(ROOT / "rules")
    kept_version = RAD_005_VERSION
    (kept,) = rule_changes(base, load_ruleset(_rad_005_edited(tmp_path, version=kept_version)))
    assert kept.versions == {"old": kept_version, "new": kept_version}
    assert kept.version_not_bumped == ["condition", "thresholds"]
    (bumped,) = rule_changes(base, load_ruleset(_rad_005_edited(tmp_path, version="9.0.0")))
    assert bumped.version_not_bumped == []
    assert bumped.version_warning() is None

    kept_rules = str(tmp_path / f"rules-{kept_version}")
    line = (
        f"RAD-005: condition, thresholds changed but its version is still {kept_version}; "
        "bump the version when a rule's logic changes"
    )
    out = tmp_path / "diff.json"
    done = _cli("rules", kept_rules, "--cohort", str(COHORT), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert [w for w in done.stderr.splitlines() if w.startswith("warning:")] == [f"warning: {line}"]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["version_not_bumped"] == [
        {"rule_id": "RAD-005", "version": kept_version, "aspects": ["condition", "thresholds"]}
    ]
    markdown = _cli("rules", kept_rules, "--cohort", str(COHORT))
    assert f"**Warning:** {line}" in markdown.stdout, markdown.stderr
    page = tmp_path / "diff.html"
    assert _cli("rules", kept_rules, "--cohort", str(COHORT), "--out", str(page)).returncode == 0
    assert f"<strong>Warning:</strong> {line}".replace("'", "&#39;") in page.read_text("utf-8")
    bumped_run = _cli("rules", str(tmp_path / "rules-9.0.0"), "--cohort", str(COHORT))
    assert bumped_run.returncode == 0, bumped_run.stderr
    assert "warning:" not in bumped_run.stderr
    assert "Warning:" not in bumped_run.stdout
    assert "**RAD-005** changed: condition, thresholds" in bumped_run.stdout
