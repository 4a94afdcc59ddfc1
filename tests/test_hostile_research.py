"""Hostile input to the research commands, rule files and JSON (issue 26, items 1, 4 and 7).

Each attack goes through the real command line (or the service) and must end in one clear
`error:` line (or a clean refusal), with no traceback and no value that could identify echoed.
Run alone with `pytest -m hostile`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, RULES_DIR
from tests.test_hostile import Run, check, invoke

pytestmark = pytest.mark.hostile

FHIR = ROOT / "cases" / "fhir"
VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def status(code: str) -> str:
    return json.dumps({"coding": [{"system": VER, "code": code}]})


def twice(first: str, second: str) -> str:
    """The cauda equina bundle, its CES Condition (entry 2) giving verificationStatus twice."""
    bundle = json.loads((FHIR / "cauda-equina-l5-s1.json").read_text())
    ces = bundle["entry"][2]["resource"]
    assert ces["code"]["coding"][0]["code"] == "G83.4"
    ces["verificationStatus"] = "@@"
    text = json.dumps(bundle)
    return text.replace('"@@"', f'{status(first)}, "verificationStatus": {status(second)}')


# --- item 4: duplicate keys and NaN refused, naming the place ----------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("first", "second"), [("confirmed", "refuted"), ("refuted", "confirmed")])
def test_a_condition_giving_its_status_twice_is_refused(
    tmp_path: Path, first: str, second: str
) -> None:
    (tmp_path / "b.json").write_text(twice(first, second))
    run = invoke(["screen", "--fhir", "b.json", "--format", "json"], tmp_path)
    check(
        run,
        expected=("b.json: entry 2 (Condition) verificationStatus: given more than once",),
    )
    assert run.stdout == ""  # no verdict at all: neither excluded nor urgent_review


@pytest.mark.timeout(60)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_a_bundle_is_refused_naming_the_place(tmp_path: Path, constant: str) -> None:
    bundle = json.loads((FHIR / "cauda-equina-l5-s1.json").read_text())
    bundle["entry"][1]["resource"]["valueQuantity"]["value"] = "@@"
    (tmp_path / "b.json").write_text(json.dumps(bundle).replace('"@@"', constant))
    check(
        invoke(["screen", "--fhir", "b.json"], tmp_path),
        expected=(f"entry 1 (Observation) valueQuantity.value: {constant} is not",),
    )


@pytest.mark.timeout(120)
def test_400000_empty_entries_are_one_warning(tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{}] * 400_000}
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    run = invoke(["screen", "--fhir", "b.json"], tmp_path)
    check(run, code=0, errors=0)
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: b.json: 400,000 entries (0, 1, 2, 3, 4, ...): not a FHIR resource; skipped"
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"case_id": "A", "bmi": NaN}', "NaN is not a JSON number at bmi", id="nan"),
        pytest.param(
            '{"case_id": "A", "sva_mm": -Infinity}',
            "-Infinity is not a JSON number at sva_mm",
            id="infinity",
        ),
        pytest.param(
            '{"case_id": "A", "bmi": 1e400}',
            "a number too large to read at bmi",
            id="overflow-to-infinity",
        ),
    ],
)
def test_nan_in_a_json_case_file_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "case.json").write_text(text)
    check(invoke(["screen", "case.json"], tmp_path), expected=("case.json: " + expected,))


@pytest.mark.timeout(120)
def test_nan_in_a_jsonl_row_rejects_that_row(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(
        '{"case_id": "A-1", "bmi": 25}\n{"case_id": "A-2", "bmi": NaN}\n'
    )
    run = invoke(["batch", "c.jsonl", "--out", "o.jsonl", "--workers", "1"], tmp_path)
    check(run, code=0, errors=0, expected=("screened 1 + rejected 1",))
    (error,) = [json.loads(line) for line in run.written["o.jsonl.errors.jsonl"].splitlines()]
    assert error["row"] == 2
    assert "NaN or Infinity" in error["reason"]


def _service_client() -> Any:
    from fastapi.testclient import TestClient

    from engine.screener import Screener
    from engine.service.app import ServiceConfig, create_app
    from tests.conftest import RULESET

    return TestClient(create_app(ServiceConfig(screener=Screener.from_ruleset(RULESET), dev=True)))


@pytest.mark.timeout(120)
def test_a_cds_hooks_request_with_a_repeated_key_or_nan_is_a_400() -> None:
    from tests.cds_requests import request_of

    request = request_of(json.loads((FHIR / "cauda-equina-l5-s1.json").read_text()))
    text = json.dumps(request)
    repeated = text.replace('"hook": ', '"hook": "patient-view", "hook": ', 1)
    nan = text.replace('"hook": ', '"x": NaN, "hook": ', 1)
    client = _service_client()
    for body, words in ((repeated, "more than once"), (nan, "NaN")):
        response = client.post(
            "/cds-services/miss-screen",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert words in response.text


# --- item 7: rule files through the bounded loader; rules diff on git revisions ----------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)
SHADOW = "rootuser:$6$Q1xq$hashedsecret:19000:0:99999:7:::\njohnsmith: hunter2-password\n"


def bounded(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a child limited to 2 GB of address space (a bomb that goes off fails fast)."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limit,  # a resource limit, no threads started yet
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def copied_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    return rules


@pytest.mark.timeout(90)
def test_an_alias_bomb_in_a_rule_file_is_stopped(tmp_path: Path) -> None:
    rules = copied_rules(tmp_path)
    (rules / "access" / "ACC-099-bomb.yaml").write_text(BOMB)
    started = time.monotonic()
    done = bounded(["rules", "check", str(rules)], tmp_path)
    assert time.monotonic() - started < 30
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: {rules / 'access' / 'ACC-099-bomb.yaml'}:6: aliases expand to more than "
        "100,000 values (an alias bomb?); write the values out"
    ]


@pytest.mark.timeout(90)
def test_an_alias_bomb_in_a_case_file_is_stopped_by_the_same_loader(tmp_path: Path) -> None:
    (tmp_path / "case.yaml").write_text("case_id: A\n" + BOMB)
    done = bounded(["screen", "case.yaml"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "aliases expand to more than 100,000 values" in done.stderr
    assert done.stderr.count("error: ") == 1


@pytest.mark.timeout(60)
def test_a_rule_file_linked_outside_the_folder_is_not_read(tmp_path: Path) -> None:
    rules = copied_rules(tmp_path)
    (tmp_path / "shadow").write_text(SHADOW)
    (rules / "access" / "ACC-099-shadow.yaml").symlink_to(tmp_path / "shadow")
    (rules / "derived" / "DER-099-shadow.yaml").symlink_to("../../shadow")
    check(
        invoke(["rules", "check", str(rules)], tmp_path),
        errors=2,
        expected=("a link to a file outside the rules folder; not read",),
        secrets=("rootuser", "hashedsecret", "johnsmith", "hunter2"),
    )


@pytest.mark.timeout(60)
def test_a_file_that_is_not_a_rule_file_echoes_nothing(tmp_path: Path) -> None:
    rules = copied_rules(tmp_path)
    (rules / "access" / "ACC-099-patients.yaml").write_text(
        "patient_name: John Smith\ndob: 1961-03-12\n" + SHADOW
    )
    check(
        invoke(["rules", "check", str(rules)], tmp_path),
        expected=("ACC-099-patients.yaml: not a rules file", "its content is not shown"),
        secrets=("patient_name", "John", "1961", "rootuser", "hunter2"),
    )


@pytest.mark.timeout(60)
def test_an_unknown_key_shaped_like_data_is_not_named(tmp_path: Path) -> None:
    rules = copied_rules(tmp_path)
    rule = rules / "access" / "ACC-003-severe-sagittal-imbalance.yaml"
    rule.write_text(rule.read_text() + "John Smith 1961-03-12: x\n")
    check(
        invoke(["rules", "check", str(rules)], tmp_path),
        expected=("unknown key (name not shown: it is not shaped like a key)",),
        secrets=("John", "1961"),
    )


def git_repo(tmp_path: Path) -> Path:
    """A git repository whose committed rules folder holds a link to a file outside it."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    rules = repo / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "access" / "ACC-099-shadow.yaml").symlink_to("/etc/passwd")
    (repo / "cohort.csv").write_text("case_id,bmi\nA-1,25\n")
    for command in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "rules"],
    ):
        subprocess.run([git, *command], cwd=repo, check=True, capture_output=True)
    return repo


@pytest.mark.timeout(120)
def test_rules_diff_refuses_a_revision_holding_a_link_out(tmp_path: Path) -> None:
    repo = git_repo(tmp_path)
    (repo / "rules" / "access" / "ACC-099-shadow.yaml").unlink()
    run = invoke(["rules", "diff", "HEAD:rules", "rules", "--cohort", "cohort.csv"], repo)
    check(
        run,
        expected=(
            "error: HEAD:rules: access/ACC-099-shadow.yaml is a link leading outside the rules "
            "folder; not read",
        ),
        secrets=("root:",),
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "option", ["--output=evil.tar:rules", "--remote=/nowhere:rules", "--exec=touch pwned:rules"]
)
def test_a_revision_spelt_like_an_option_is_only_a_revision(tmp_path: Path, option: str) -> None:
    repo = git_repo(tmp_path)
    (repo / "rules" / "access" / "ACC-099-shadow.yaml").unlink()
    run = invoke(["rules", "diff", "rules", "--cohort", "cohort.csv", "--", option], repo)
    check(run, expected=(f"error: {option}", "cannot read this git revision"))
    assert run.written == {}  # no archive, no file made by an option


# --- item 1: agree and rules diff read inputs as batch does -----------------------------------

COHORT = ROOT / "cases" / "cohort" / "synthetic-500.csv"
EXAMPLE_LABELS = ROOT / "cases" / "labels" / "example-labels.csv"
SECRETS = ("john.smith@example.com", "555-867-5309", "1961-03-12", "john smith", "123456")


def cohort_ids(count: int) -> list[str]:
    with COHORT.open(encoding="utf-8", newline="") as handle:
        return [row["case_id"] for row in csv.DictReader(handle)][:count]


def agree(tmp_path: Path, labels: str, *more: str) -> Run:
    (tmp_path / "l.csv").write_text(labels)
    return invoke(["agree", "--labels", "l.csv", "--cohort", str(COHORT), *more], tmp_path)


@pytest.mark.timeout(120)
def test_identifier_columns_are_not_raters(tmp_path: Path) -> None:
    ids = cohort_ids(3)
    rows = "".join(f"{i},John Smith,1961-03-12,john.smith@example.com,yes\n" for i in ids)
    run = agree(tmp_path, "case_id,patient_name,dob,email,surgeon_1\n" + rows)
    check(
        run,
        errors=3,
        expected=(
            "l.csv: column 'patient_name' looks like a direct identifier (name)",
            "l.csv: column 'dob' looks like a direct identifier (date)",
            "l.csv: column 'email' looks like a direct identifier (email)",
        ),
        secrets=("John Smith", "1961-03-12", "john.smith@example.com"),
    )


@pytest.mark.timeout(120)
def test_label_values_and_case_ids_that_could_identify_are_never_echoed(tmp_path: Path) -> None:
    # past the guard's 1,000-row sample the per-row checks must hold (labels are checked
    # before the cohort is read, so these ids need not be in it)
    ids = [f"Q-{n:05d}" for n in range(1000)]
    rows = [f"{i},yes" for i in ids]
    rows += [f"{ids[n]}-x,{secret}" for n, secret in enumerate(SECRETS)]
    rows += ["1961-03-12,yes", "john.smith@example.com,no", f"{ids[9]}-y,maybe"]
    run = agree(tmp_path, "case_id,surgeon_1\n" + "\n".join(rows) + "\n")
    check(
        run,
        errors=len(SECRETS) + 3,
        expected=(
            "row 1001 (case_id " + ids[0] + "-x): rater surgeon_1: the label given (value "
            "withheld: it looks like an email address) is not a label",
            "row 1006: case_id looks like a date, not an anonymised id (value withheld)",
            "row 1007: case_id looks like an email address",
            "rater surgeon_1: 'maybe' is not a label",  # a plain word is still shown
        ),
        secrets=SECRETS,
    )


@pytest.mark.timeout(120)
def test_a_case_id_missing_from_the_cohort_is_named_only_if_it_cannot_identify(
    tmp_path: Path,
) -> None:
    run = agree(tmp_path, "case_id,surgeon_1\nNOPE-1,yes\n")
    check(run, expected=("case_id NOPE-1 of l.csv is not in",))


@pytest.mark.timeout(300)
def test_two_million_label_rows_stop_at_the_cap_in_bounded_memory(tmp_path: Path) -> None:
    """The 2M-row file of the issue (1.18 GB and 1,999,505 error lines before): refused after
    100,001 rows, in one line, by a child whose peak memory is measured."""
    with (tmp_path / "l.csv").open("w") as handle:
        handle.write("case_id,surgeon_1\n")
        handle.writelines(f"S-{n:07d},bogus_{n % 7}\n" for n in range(2_000_000))
    # the peak of this one child: measured by a parent of its own, as RUSAGE_CHILDREN of the
    # test process holds the largest child of every test run before it
    measure = (
        "import pathlib, resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
        "pathlib.Path(sys.argv[1]).write_text(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
        ".ru_maxrss * 1024)); sys.exit(code)"
    )
    peak = tmp_path / "peak"
    done = subprocess.run(
        [sys.executable, "-c", measure, str(peak), sys.executable, "-m", "engine.cli", "agree",
         "--labels", "l.csv", "--cohort", str(COHORT)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: l.csv: more than 100,000 rows; agree compares at most 100,000 labelled cases "
        "at once (split the file)"
    ]
    assert int(peak.read_text()) < 700 * 2**20


def resource_peak() -> int:
    """Peak resident memory of the finished children, in bytes."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


@pytest.mark.timeout(120)
def test_bad_labels_are_capped_with_a_count(tmp_path: Path) -> None:
    ids = cohort_ids(500)
    rows = "".join(f"{i}-{n},bogus\n" for n in range(60) for i in ids)  # 30,000 bad labels
    run = agree(tmp_path, "case_id,surgeon_1\n" + rows)
    check(run, errors=21, expected=("error: ... and 29,980 more like these",))


@pytest.mark.timeout(120)
def test_a_rater_named_like_markup_is_refused_and_never_written(tmp_path: Path) -> None:
    ids = cohort_ids(3)
    run = agree(
        tmp_path,
        "case_id,<script>alert(1)</script>\n" + "".join(f"{i},yes\n" for i in ids),
        "--out",
        "r.md",
    )
    check(run, expected=("names look like data",), secrets=("<script>", "alert(1)"))


@pytest.fixture(scope="module")
def example_report() -> Any:
    from engine.research.agree import agreement
    from engine.rules.loader import load_ruleset

    return agreement(
        str(EXAMPLE_LABELS), load_ruleset(RULES_DIR), str(RULES_DIR), cohort=str(COHORT)
    )


@pytest.mark.timeout(300)
def test_markdown_and_html_reports_escape_what_inputs_hold(example_report: Any) -> None:
    from engine.research.render import agree_html, agree_markdown, md

    hostile = "<script>alert(1)</script>[x](javascript:alert(2))|`"
    report = example_report
    report.per_rater = {hostile: next(iter(report.per_rater.values()))}
    report.disagreements[0]["case_id"] = hostile
    report.labels = hostile
    text = agree_markdown(report)
    assert "<script>" not in text
    assert "[x](javascript" not in text  # escaped: \\[x\\](javascript
    assert md(hostile) in text
    assert md(hostile) == (
        "&lt;script&gt;alert(1)&lt;/script&gt;\\[x\\](javascript:alert(2))\\|\\`"
    )
    page = agree_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.fixture(scope="module")
def positive_ids(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Cohort cases the bundled rules rate worth discussing (read from a batch run)."""
    out = tmp_path_factory.mktemp("verdicts") / "v.csv"
    done = invoke(["batch", str(COHORT), "--out", str(out), "--workers", "1"], out.parent)
    assert done.code == 0, done.stderr
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["case_id"] for r in rows if r["verdict"] == "worth_discussing"]


@pytest.mark.timeout(300)
def test_library_warnings_are_said_once_in_our_words(
    tmp_path: Path, positive_ids: list[str]
) -> None:
    labels = "".join(f"{i},yes,yes\n" for i in positive_ids[:5])
    run = agree(tmp_path, "case_id,surgeon_1,surgeon_2\n" + labels)
    check(run, code=0, errors=0)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [
        "warning: a statistic is undefined for these labels (one answer given by every rater "
        "or by the tool, or too few cases): it is shown as n/a"
    ]
    assert "Fleiss' kappa across 2 raters (worth discussing): n/a" in run.stdout


@pytest.mark.timeout(300)
def test_agree_writes_html(tmp_path: Path) -> None:
    run = invoke(
        ["agree", "--labels", str(EXAMPLE_LABELS), "--cohort", str(COHORT), "--out", "a.html"],
        tmp_path,
    )
    check(run, code=0, errors=0)
    page = run.written["a.html"]
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>Agreement with raters</h1>" in page
    assert page.count("<tr><th>surgeon_") == 3
    assert "Cases labelled: 28; compared: 24" in page


@pytest.mark.timeout(120)
def test_rules_diff_refuses_an_identifier_column_in_the_cohort(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("case_id,patient_name,bmi\nA-1,John Smith,25\n")
    run = invoke(["rules", "diff", str(RULES_DIR), str(RULES_DIR), "--cohort", "c.csv"], tmp_path)
    check(
        run,
        expected=("c.csv: column 'patient_name' looks like a direct identifier",),
        secrets=("John Smith",),
    )


@pytest.mark.timeout(300)
def test_rows_rejected_by_one_rule_set_are_counted_and_listed_only_so_far(tmp_path: Path) -> None:
    """A cohort of millions rejected by one side must not be held or printed row by row: the
    report lists the first 20 and counts them all (30 here: CON-001's window narrowed to 45)."""
    new = copied_rules(tmp_path)
    constraints = new / "constraints.yaml"
    text = constraints.read_text()
    assert "age_years > 55 or age_years < 10" in text
    constraints.write_text(text.replace("age_years > 55", "age_years > 45"))
    rows = "".join(f"P-{n},female,50,true\n" for n in range(30))
    (tmp_path / "c.csv").write_text("case_id,sex,age_years,pregnant\n" + rows)
    args = ["rules", "diff", str(RULES_DIR), str(new), "--cohort", "c.csv"]
    run = invoke([*args, "--format", "json"], tmp_path)
    check(run, code=0, errors=0)
    data = json.loads(run.stdout)
    assert data["rejected_by_one_count"] == 30
    assert [r["row"] for r in data["rejected_by_one"]] == list(range(1, 21))
    assert {r["rejected_by"] for r in data["rejected_by_one"]} == {"new"}
    assert all(
        r["reason"].startswith("pregnant: true is ruled out by CON-001")
        for r in data["rejected_by_one"]
    )
    markdown = invoke(args, tmp_path).stdout
    assert "Rows rejected by one rule set only: 30" in markdown
    assert "(first 20 of 30)" in markdown


@pytest.mark.timeout(60)
def test_an_alias_cycle_is_refused_and_small_aliases_still_parse(tmp_path: Path) -> None:
    (tmp_path / "cycle.yaml").write_text("case_id: A\nbmi: &a [*a]\n")
    check(
        invoke(["screen", "cycle.yaml"], tmp_path),
        expected=("an alias refers to a value that contains it",),
    )
    (tmp_path / "ok.yaml").write_text(
        "case_id: A\ncauda_equina_syndrome: &no false\nmyelopathy: *no\n"
    )
    run = invoke(["screen", "ok.yaml", "--format", "json"], tmp_path)
    check(run, code=0, errors=0)
    assert json.loads(run.stdout)["case_id"] == "A"
