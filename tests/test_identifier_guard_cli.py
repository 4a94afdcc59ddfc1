"""Case ids that are identifiers, through the command line (issue 27 item 5).

Each kind is refused in `screen --set`, in a case file and in `batch` (per row, or the whole
input when the guard's sample already shows it), with an error that says how to pseudonymise and
never the id. `batch --pseudonymise-ids KEYFILE` screens the same cohort: each id becomes its
keyed HMAC-SHA256 pseudonym (checked here against hmac directly), the same in every worker and
run, another under another key, the key file created with mode 0600, and no original id in any
file the run writes.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app

pytestmark = pytest.mark.hostile

runner = CliRunner()

# one id of each kind the case_id rule refuses, as a registry might have used it
IDENTIFIER_IDS = {
    "phone": "5558675309",
    "date": "A-1961-03-12",
    "nhs": "4010232137",
    "ssn": "123-45-6789",
    "email": "j.smith@example.org",
    "name": "JohnSmith",
    "mrn": "MRN0012345",
    "ip": "10.1.2.3",
}
KIND_WORDS = {
    "phone": "telephone number",
    "date": "a date",
    "nhs": "NHS number",
    "ssn": "social security number",
    "email": "email address",
    "name": "person's name",
    "mrn": "medical record number",
    "ip": "IP address",
}
# ids the guard's sample scan does not already flag as a column, so each row is judged alone
ROW_IDS = ["5558675309", "19610312", "4010232137", "JohnSmith", "smith.john", "MRN0012345"]


def _letters(hex_digest: str) -> str:
    return hex_digest.translate(str.maketrans("0123456789abcdef", "bcdfghjkmnpqrstv"))


def expected_pseudonym(key_file: Path, case_id: str) -> str:
    """The pseudonym docs/identifier-guard.md promises, computed with hmac directly."""
    key = bytes.fromhex(key_file.read_text().strip())
    return "p-" + _letters(hmac.new(key, case_id.encode(), hashlib.sha256).hexdigest()[:24])


def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(app, args)
    finally:
        os.chdir(here)
    return result.exit_code, result.stdout, result.stderr


def written_text(folder: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".key"
    )


def write_cohort(path: Path, ids: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "age_years", "diagnosis"])
        for case_id in ids:
            writer.writerow([case_id, 55, "disc_herniation"])
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("kind", "case_id"), IDENTIFIER_IDS.items())
def test_screen_set_refuses_an_identifier_case_id(tmp_path: Path, kind: str, case_id: str) -> None:
    code, out, err = run(
        ["screen", "--set", f"case_id={case_id}", "--set", "age_years=50"], tmp_path
    )
    assert code == 2, err
    assert out == ""
    assert "case_id:" in err
    assert KIND_WORDS[kind] in err, err
    assert "--pseudonymise-ids KEYFILE" in err
    assert case_id not in err
    assert "Traceback" not in err


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("kind", "case_id"), IDENTIFIER_IDS.items())
def test_a_case_file_refuses_an_identifier_case_id(tmp_path: Path, kind: str, case_id: str) -> None:
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"case_id": case_id, "age_years": 50}))
    code, out, err = run(["screen", str(case)], tmp_path)
    assert code == 2, err
    assert KIND_WORDS[kind] in err, err
    assert "--pseudonymise-ids" in err
    assert case_id not in out + err


@pytest.mark.timeout(300)
def test_batch_rejects_each_identifier_row_and_names_the_remedy(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "cohort.csv", [*ROW_IDS, "S-0193"])
    (tmp_path / "res").mkdir()
    code, _, err = run(
        ["batch", str(cohort), "--out", "res/out.csv", "--summary", "res/s.json", "--workers", "1"],
        tmp_path,
    )
    assert code == 0, err
    assert f"rows read {len(ROW_IDS) + 1} = screened 1 + rejected {len(ROW_IDS)}" in err
    errors = [json.loads(line) for line in (tmp_path / "res/out.csv.errors.jsonl").open()]
    assert sorted(e["row"] for e in errors) == list(range(1, len(ROW_IDS) + 1))
    assert all("--pseudonymise-ids" in e["reason"] and e["case_id"] is None for e in errors)
    text = written_text(tmp_path / "res") + err
    for case_id in ROW_IDS:
        assert case_id not in text


@pytest.mark.timeout(300)
def test_batch_refuses_a_case_id_column_its_sample_shows_to_be_identifiers(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "cohort.csv", ["1961-03-12", "123-45-6789", "S-1"])
    code, _, err = run(["batch", str(cohort), "--out", "out.csv", "--workers", "1"], tmp_path)
    assert code == 2
    assert "column 'case_id' holds identifiers" in err
    assert "--pseudonymise-ids" in err
    assert "--allow-column" not in err
    assert "1961-03-12" not in err


@pytest.mark.timeout(600)
def test_pseudonymised_ids_screen_join_back_and_never_reach_an_output(tmp_path: Path) -> None:
    ids = [*ROW_IDS, "1961-03-12", "123-45-6789", "+44 20 7946 0958", "S-0193", "S-0193"]
    cohort = write_cohort(tmp_path / "cohort.csv", ids)
    key = tmp_path / "study.key"
    outputs: dict[str, list[str]] = {}
    for name, workers in (("one", "1"), ("two", "2")):
        folder = tmp_path / name
        folder.mkdir()
        code, _, err = run(
            [
                "batch", str(cohort), "--out", f"{name}/out.csv", "--summary", f"{name}/s.json",
                "--report", f"{name}/r.html", "--workers", workers, "--progress", "none",
                "--pseudonymise-ids", str(key),
            ],
            tmp_path,
        )  # fmt: skip
        assert code == 0, err
        assert f"rows read {len(ids)} = screened {len(ids)} + rejected 0" in err
        with (folder / "out.csv").open() as handle:
            outputs[name] = [row["case_id"] for row in csv.DictReader(handle)]
        text = written_text(folder)
        for case_id in ids:
            assert case_id not in text, f"{case_id} in an output"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert outputs["one"] == outputs["two"] == [expected_pseudonym(key, i) for i in ids]
    assert outputs["one"][-1] == outputs["one"][-2]  # the same id, the same pseudonym

    other_key = tmp_path / "other.key"
    code, _, err = run(
        ["batch", str(cohort), "--out", "three.csv", "--workers", "1", "--pseudonymise-ids",
         str(other_key)],
        tmp_path,
    )  # fmt: skip
    assert code == 0, err
    with (tmp_path / "three.csv").open() as handle:
        third = [row["case_id"] for row in csv.DictReader(handle)]
    assert not set(third) & set(outputs["one"])
    assert third == [expected_pseudonym(other_key, i) for i in ids]


@pytest.mark.timeout(120)
def test_a_malformed_key_file_stops_the_run_without_showing_it(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "cohort.csv", ["S-1"])
    key = tmp_path / "bad.key"
    key.write_text("JohnSmith-not-a-key\n")
    code, _, err = run(
        ["batch", str(cohort), "--out", "out.csv", "--pseudonymise-ids", str(key)], tmp_path
    )
    assert code == 2
    assert "not a key file" in err
    assert "JohnSmith" not in err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.timeout(300)
def test_screen_frame_pseudonymises_ids_with_the_same_key_as_batch(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    from engine import Screener

    key = tmp_path / "study.key"
    frame = pd.DataFrame({"case_id": ["5558675309", "JohnSmith"], "age_years": [50, 60]})
    screener = Screener.load()
    refused = screener.screen_frame(frame)
    assert refused["rejected"].notna().all()
    result = screener.screen_frame(frame, pseudonymise_ids=key)
    assert result["rejected"].isna().all()
    assert list(result["case_id"]) == [expected_pseudonym(key, i) for i in frame["case_id"]]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_pseudonymise_ids_in_jsonl_and_parquet_integer_ids_too(tmp_path: Path, fmt: str) -> None:
    ids: list[object] = [5558675309, 19610312, "smith.john", 42]
    rows = [{"case_id": i, "age_years": 50} for i in ids]
    if fmt == "jsonl":
        cohort = tmp_path / "cohort.jsonl"
        cohort.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cohort = tmp_path / "cohort.parquet"
        table = pa.table({"case_id": [str(i) for i in ids], "age_years": [50] * len(ids)})
        pq.write_table(table, cohort)
    key = tmp_path / "study.key"
    code, _, err = run(
        [
            "batch",
            str(cohort),
            "--out",
            "out.csv",
            "--workers",
            "1",
            "--pseudonymise-ids",
            str(key),
        ],
        tmp_path,
    )
    assert code == 0, err
    assert f"rows read {len(ids)} = screened {len(ids)} + rejected 0" in err
    with (tmp_path / "out.csv").open() as handle:
        got = [row["case_id"] for row in csv.DictReader(handle)]
    assert got == [expected_pseudonym(key, str(i)) for i in ids]


def test_the_key_holder_joins_back_with_read_key_which_never_creates_a_key(tmp_path: Path) -> None:
    from engine.errors import UsageError
    from engine.io.pseudonymise import load_key, pseudonym, read_key

    key_file = tmp_path / "study.key"
    with pytest.raises(UsageError, match="not a key file"):
        read_key(str(key_file))
    assert not key_file.exists()
    created = load_key(str(key_file))
    assert read_key(str(key_file)) == created
    assert len(created) == 32
    assert pseudonym(read_key(str(key_file)), "19610312") == expected_pseudonym(
        key_file, "19610312"
    )
