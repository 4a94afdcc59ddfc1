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
import signal
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
