"""Hostile input to the research commands, rule files and JSON (issue 26, items 1, 4 and 7).

Each attack goes through the real command line (or the service) and must end in one clear
`error:` line (or a clean refusal), with no traceback and no value that could identify echoed.
Run alone with `pytest -m hostile`.
"""

from __future__ import annotations

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
from tests.test_hostile import check, invoke

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
    return text.replace('"@@"', f"{status(first)}, \"verificationStatus\": {status(second)}")


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
        pytest.param(
            '{"case_id": "A", "bmi": NaN}', "NaN is not a JSON number at bmi", id="nan"
        ),
        pytest.param(
            '{"case_id": "A", "sva_mm": -Infinity}',
            "-Infinity is not a JSON number at sva_mm",
            id="infinity",
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
