"""Hostile input (issue 15, items 5-9; issue 21, item 7): every attack ends in one `error:` line
and exit 2, or in a clean rejection of the row, and never echoes a value that could identify.

Each case goes through the real command line. The helper `check` asserts the exit code, that
stderr holds exactly the expected number of `error:` lines and no traceback, that the expected
words are there, and that the secret appears in no output: stdout, stderr or any file the run
wrote. Run alone with `pytest -m hostile`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.io.deid import scan_columns
from engine.rules.loader import load_ruleset
from tests.conftest import ROOT, RULES_DIR

pytestmark = pytest.mark.hostile

runner = CliRunner()
EXE = Path(sys.executable).parent / "miss-screen"
EMAIL = "jane.doe@example.com"
BIRTH = "1961-03-12"
PHONE = "555-123-4567"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    written: dict[str, str] = field(default_factory=dict)  # files the run created, as text


def invoke(args: list[str], tmp_path: Path, stdin: str | None = None) -> Run:
    """Run the CLI in-process (from tmp_path) and collect every file it wrote there."""
    before = {p for p in tmp_path.rglob("*")}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(app, args, input=stdin)
    finally:
        os.chdir(cwd)
    written = {
        str(p.relative_to(tmp_path)): p.read_bytes().decode("utf-8", "replace")
        for p in tmp_path.rglob("*")
        if p.is_file() and p not in before
    }
    return Run(result.exit_code, result.stdout, result.stderr, written)


def check(
    run: Run,
    *,
    code: int = 2,
    errors: int = 1,
    expected: tuple[str, ...] = (),
    secrets: tuple[str, ...] = (),
) -> None:
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.code == code, run.stderr
    assert len(error_lines) == errors, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert "internal error" not in run.stderr, run.stderr
    for words in expected:
        assert words in run.stderr, run.stderr
    for secret in secrets:
        assert secret not in run.stdout, "secret on stdout"
        assert secret not in run.stderr, "secret on stderr"
        for name, text in run.written.items():
            assert secret not in text, f"secret in {name}"


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- item 5: never echo an identifying value ----------------------------------------------------

SCREEN_CASES = [
    pytest.param(
        ["screen", "--set", f"sex={EMAIL}"],
        ("--set", "sex:", "looks like an email address"),
        (EMAIL, "jane.doe"),
        id="set-email-in-enum",
    ),
    pytest.param(
        ["screen", "--set", "diagnosis=Jane Roe"],
        ("diagnosis:", "value withheld"),
        ("Jane Roe",),
        id="set-name-in-enum",
    ),
    pytest.param(
        ["screen", "--set", "age_years=19610312"],
        ("age_years:", "out of range", "value withheld"),
        ("19610312",),
        id="set-date-as-number",
    ),
    pytest.param(
        ["screen", "--set", f"case_id={EMAIL}", "--set", "sex=male"],
        ("case_id:", "not a valid id", "email"),
        (EMAIL,),
        id="set-email-case-id",
    ),
    pytest.param(
        ["screen", "--set", f"case_id={BIRTH}", "--set", "sex=male"],
        ("case_id:", "looks like a date"),
        (BIRTH,),
        id="set-date-case-id",
    ),
    pytest.param(
        ["screen", "--set", f"case_id={PHONE}"],
        ("case_id:", "telephone number"),
        (PHONE,),
        id="set-phone-case-id",
    ),
    pytest.param(
        ["screen", "--set", EMAIL],
        ("--set expects FIELD=VALUE",),
        (EMAIL,),
        id="set-without-equals",
    ),
    pytest.param(
        ["screen", "--set", f"{EMAIL}=1"],
        ("unknown field (name withheld",),
        (EMAIL,),
        id="set-email-as-field-name",
    ),
]


@pytest.mark.parametrize(("args", "expected", "secrets"), SCREEN_CASES)
def test_screen_never_echoes_an_identifier(
    tmp_path: Path, args: list[str], expected: tuple[str, ...], secrets: tuple[str, ...]
) -> None:
    check(invoke(args, tmp_path), expected=expected, secrets=secrets)


def test_a_typo_of_a_vocabulary_word_is_still_shown(tmp_path: Path) -> None:
    run = invoke(["screen", "--set", "diagnosis=Fracure"], tmp_path)
    check(run, expected=("'Fracure' is not a valid value", "did you mean 'fracture'"))


@pytest.mark.parametrize(
    "case_id",
    [
        pytest.param("a\x1b[31mred\x1b[0m", id="terminal-escape"),
        pytest.param("line\nerror: forged", id="newline"),
        pytest.param("nul\x00byte", id="nul"),
        pytest.param("\u202eevil", id="bidi-override"),
        pytest.param("x" * 900_000, id="900-kb"),
    ],
)
def test_an_invalid_case_id_is_escaped_and_cut(tmp_path: Path, case_id: str) -> None:
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"case_id": case_id, "sex": "male"}))
    run = invoke(["screen", str(case)], tmp_path)
    check(run, expected=("case_id:", "not a valid id"))
    for raw in ("\x1b", "\x00", "\u202e"):
        assert raw not in run.stderr
    assert all(len(line) < 1000 for line in run.stderr.splitlines())


def test_identifier_case_ids_past_the_sample_reach_no_output(tmp_path: Path) -> None:
    """Rows after the guard's 1000-row sample: a case_id shaped like a date, a phone number
    or an SSN is rejected naming its kind, and appears in no output (results, errors, summary,
    HTML report), even when it is repeated (duplicates are listed in the summary)."""
    rows: list[dict[str, object]] = [{"case_id": f"W-{i:05d}", "bmi": 25} for i in range(1001)]
    secrets = (BIRTH, PHONE, "078-05-1120", "12Mar1961")
    rows += [{"case_id": s, "bmi": 25} for s in secrets] + [{"case_id": BIRTH, "bmi": 26}]
    rows.append({"case_id": "W-99999", "sex": EMAIL})
    source = write_jsonl(tmp_path / "cohort.jsonl", rows)
    run = invoke(
        [
            *("batch", str(source), "--out", "o.jsonl", "--summary", "s.json"),
            *("--report", "r.html", "--workers", "1", "--progress", "none"),
        ],
        tmp_path,
    )
    check(run, code=0, errors=0, expected=("rejected 6",), secrets=(*secrets, "jane.doe"))
    errors = [json.loads(line) for line in run.written["o.jsonl.errors.jsonl"].splitlines()]
    assert [(e["row"], e["field"], e["case_id"]) for e in errors[:5]] == [
        (n, "case_id", None) for n in range(1002, 1007)
    ]
    assert "looks like a date" in errors[0]["reason"]
    assert "telephone number" in errors[1]["reason"]
    assert errors[5]["field"] == "sex"
    assert errors[5]["value"] is None


def test_identifier_case_ids_in_parquet_take_the_checked_path(tmp_path: Path) -> None:
    """Parquet rows are validated a batch at a time; an id shaped like a date still is not
    (past the 1000 rows the guard samples)."""
    ids = [f"P-{i:05d}" for i in range(1001)] + [BIRTH, "P-99999"]
    pq.write_table(pa.table({"case_id": ids, "bmi": [25.0] * len(ids)}), tmp_path / "c.parquet")
    run = invoke(
        ["batch", "c.parquet", "--out", "o.csv", "--workers", "1", "--progress", "none"], tmp_path
    )
    check(run, code=0, errors=0, expected=("screened 1002 + rejected 1",), secrets=(BIRTH,))


@pytest.mark.parametrize(
    ("first_line", "expected"),
    [
        pytest.param(
            f"P-001,{BIRTH},Jane,Roe,45", "column 2 looks like a date", id="birth-date-row"
        ),
        pytest.param(f"P-001,{PHONE},47", "column 2 looks like a telephone", id="phone-row"),
        pytest.param(f"P-001,{EMAIL},47", "column 2 looks like an email", id="email-row"),
        pytest.param("P-001,Jane,Roe,45", "column 4 is a number", id="name-row"),
    ],
)
def test_a_csv_without_a_header_row_echoes_nothing(
    tmp_path: Path, first_line: str, expected: str
) -> None:
    source = tmp_path / "cohort.csv"
    source.write_text(first_line + "\n" + first_line.replace("P-001", "P-002") + "\n")
    run = invoke(["batch", str(source), "--out", "o.jsonl", "--workers", "1"], tmp_path)
    secrets = tuple(v for v in first_line.split(",") if not v.isdigit() and v != "P-001")
    check(run, expected=("looks like a row of data, not a header", expected), secrets=secrets)
    assert run.written == {}


def test_unknown_columns_that_may_be_data_are_not_named(tmp_path: Path) -> None:
    source = tmp_path / "cohort.csv"
    source.write_text("case_id,Roe,bmi\nP-1,1,25\n")
    args = ["batch", str(source), "--out", "o.jsonl", "--ignore-unknown-columns"]
    check(invoke(args, tmp_path), expected=("column 2 (name withheld",), secrets=("Roe",))


NON_ENGLISH_IDENTIFIERS = [
    ("Geburtsdatum", "date"),
    ("fecha_nacimiento", "date"),
    ("data_di_nascita", "date"),
    ("date_de_naissance", "date"),
    ("geboortedatum", "date"),
    ("fødselsdato", "date"),
    ("telefono", "phone"),
    ("Telefonnummer", "phone"),
    ("correo", "email"),
    ("courriel", "email"),
    ("nom_du_patient", "name"),
    ("Vorname", "name"),
    ("Nachname", "name"),
    ("apellidos", "name"),
    ("cognome", "name"),
    ("sobrenome", "name"),
    ("achternaam", "name"),
    ("efternamn", "name"),
    ("personnummer", "ssn"),
    ("fødselsnummer", "ssn"),
    ("codice_fiscale", "ssn"),
    ("CPR", "ssn"),
    ("henkilötunnus", "ssn"),
    ("kennitala", "ssn"),
    ("BSN", "ssn"),
    ("DNI", "ssn"),
    ("CPF", "ssn"),
    ("CHI", "mrn"),
    ("Patientennummer", "mrn"),
    ("historia_clinica", "mrn"),
    ("Straße", "address"),
    ("indirizzo", "address"),
    ("endereço", "address"),
    ("Postleitzahl", "zip"),
    ("code_postal", "zip"),
]


@pytest.mark.parametrize(("name", "kind"), NON_ENGLISH_IDENTIFIERS)
def test_identifier_column_names_in_other_languages_are_flagged(name: str, kind: str) -> None:
    assert [(f.column, f.kind) for f in scan_columns(["case_id", name, "bmi"])] == [(name, kind)]


def test_a_non_english_identifier_column_stops_the_batch(tmp_path: Path) -> None:
    source = tmp_path / "cohort.csv"
    source.write_text(f"case_id,Geburtsdatum,bmi\nP-1,{BIRTH},25\n")
    run = invoke(["batch", str(source), "--out", "o.jsonl", "--workers", "1"], tmp_path)
    check(run, expected=("column 'Geburtsdatum' looks like a direct identifier (date)",))
    assert BIRTH not in run.stderr


# --- issue 21 item 7: a key given twice never silently keeps the last value --------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param(
            "case.yaml",
            "case_id: A\ncauda_equina_syndrome: true\ncauda_equina_syndrome: false\n",
            "key 'cauda_equina_syndrome' is given more than once at line 3",
            id="yaml",
        ),
        pytest.param(
            "case.json",
            '{"case_id": "A", "cauda_equina_syndrome": true, "cauda_equina_syndrome": false}',
            "key 'cauda_equina_syndrome' is given more than once",
            id="json",
        ),
        pytest.param(
            "case.yaml",
            "{case_id: A, myelopathy: true, myelopathy: false}\n",
            "key 'myelopathy' is given more than once",
            id="yaml-flow",
        ),
    ],
)
def test_a_case_file_with_a_repeated_key_is_refused(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    (tmp_path / name).write_text(text)
    check(invoke(["screen", name], tmp_path), expected=(expected,))


def test_a_site_profile_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "mis_equipment_available: true\nmis_equipment_available: false\n"
    )
    run = invoke(["screen", "--set", "sex=male", "--site", "site.yaml"], tmp_path)
    check(run, expected=("site.yaml", "'mis_equipment_available' is given more than once"))


def test_a_jsonl_row_with_a_repeated_key_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text(
        '{"case_id": "A-1", "bmi": 25}\n'
        '{"case_id": "A-2", "cauda_equina_syndrome": true, "cauda_equina_syndrome": false}\n'
    )
    run = invoke(["batch", str(source), "--out", "o.jsonl", "--workers", "1"], tmp_path)
    check(run, code=0, errors=0, expected=("screened 1 + rejected 1",))
    (error,) = [json.loads(line) for line in run.written["o.jsonl.errors.jsonl"].splitlines()]
    assert error["row"] == 2
    assert "'cauda_equina_syndrome' is given more than once" in error["reason"]


# --- item 6: every input read with a size cap ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["screen", "/dev/zero"], "/dev/zero: case file is larger than 1 MB", id="case"
        ),
        pytest.param(
            ["screen", "--set", "sex=male", "--site", "/dev/zero"],
            "/dev/zero: site profile file is larger than 1 MB",
            id="site",
        ),
        pytest.param(
            ["screen", "--fhir", "/dev/zero"], "/dev/zero: FHIR file is larger than 5 MB", id="fhir"
        ),
    ],
)
def test_an_endless_file_fails_fast(tmp_path: Path, args: list[str], expected: str) -> None:
    started = time.monotonic()
    check(invoke(args, tmp_path), expected=(expected,))
    assert time.monotonic() - started < 30


def test_an_endless_rule_file_fails_fast(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "access" / "ACC-099-endless.yaml").symlink_to("/dev/zero")
    (rules / "access" / "ACC-098-huge.yaml").write_text("# " + "x" * 1_000_000 + "\n")
    check(
        invoke(["rules", "check", str(rules)], tmp_path),
        errors=2,
        expected=(
            "ACC-098-huge.yaml: file is larger than 1 MB",
            "ACC-099-endless.yaml: a link to a file outside the rules folder; not read",
        ),
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["screen", "-"], id="screen-stdin"),
        pytest.param(["batch", "-", "--out", "-", "--workers", "1"], id="batch-stdin"),
    ],
)
def test_endless_stdin_fails_fast(args: list[str]) -> None:
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run(
            [str(EXE), *args], stdin=zero, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error: ") == 1
    assert "Traceback" not in done.stderr
    assert "1 MB" in done.stderr or "64 MB" in done.stderr


# --- item 7: failures that used to be "internal error" ------------------------------------------


def test_a_header_only_csv_without_final_newline_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("case_id,bmi")
    run = invoke(["batch", "c.csv", "--out", "o.jsonl", "--workers", "1"], tmp_path)
    check(run, code=0, errors=0, expected=("rows read 0 = screened 0 + rejected 0 (balanced)",))


def _uint64_cohort(path: Path) -> Path:
    ages = pa.array([40, 2**63 + 5, 2**64 - 1], pa.uint64())
    pq.write_table(pa.table({"case_id": ["U-1", "U-2", "U-3"], "age_years": ages}), path)
    return path


def test_a_uint64_beyond_int64_is_a_clean_row_rejection(tmp_path: Path) -> None:
    _uint64_cohort(tmp_path / "u.parquet")
    run = invoke(["batch", "u.parquet", "--out", "o.jsonl", "--workers", "1"], tmp_path)
    check(run, code=0, errors=0, expected=("screened 1 + rejected 2",))
    errors = [json.loads(line) for line in run.written["o.jsonl.errors.jsonl"].splitlines()]
    assert [(e["row"], e["field"]) for e in errors] == [(2, "age_years"), (3, "age_years")]


def test_local_and_dask_executors_reject_a_uint64_alike(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    source = _uint64_cohort(tmp_path / "u.parquet")
    outputs = {}
    for executor in ("local", "dask"):
        out = tmp_path / f"{executor}.jsonl"
        done = subprocess.run(
            [
                *(str(EXE), "batch", str(source), "--out", str(out), "--workers", "1"),
                *("--executor", executor, "--progress", "none"),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        outputs[executor] = (out.read_text(), Path(f"{out}.errors.jsonl").read_text())
    assert outputs["local"] == outputs["dask"]


@pytest.mark.parametrize("engine", ["vectorised", "durable"])
def test_a_corrupt_parquet_page_is_one_error_line(tmp_path: Path, engine: str) -> None:
    """Named after the same row on either engine: the vectorised one reads 10,000 rows at a
    time, and the page is found again 1,000 rows at a time."""
    rows = 3000
    table = pa.table({"case_id": [f"P-{i:05d}" for i in range(rows)], "bmi": [25.0] * rows})
    good = tmp_path / "good.parquet"
    pq.write_table(table, good, row_group_size=1000)
    column = pq.ParquetFile(good).metadata.row_group(1).column(1)
    data = bytearray(good.read_bytes())
    start = column.data_page_offset
    data[start + 20 : start + column.total_compressed_size - 4] = b"\xab" * (
        column.total_compressed_size - 24
    )
    (tmp_path / "bad.parquet").write_bytes(bytes(data))
    run = invoke(
        ["batch", "bad.parquet", "--out", "o.jsonl", "--workers", "1", "--engine", engine],
        tmp_path,
    )
    check(run, expected=("bad.parquet: cannot read the Parquet file after row 1000", "damaged"))
    assert run.written == {}


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        pytest.param("missing/x.csv", "the folder", id="missing-folder"),
        pytest.param("x.txt", "cannot tell the cohort format", id="unknown-extension"),
        pytest.param("folder", "cannot tell the cohort format", id="a-folder"),
        pytest.param("folder.csv", "folder.csv is a folder", id="a-folder-with-extension"),
    ],
)
def test_synth_out_mistakes_are_one_error_line(tmp_path: Path, out: str, expected: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.csv").mkdir()
    check(invoke(["synth", "5", "--out", out], tmp_path), expected=(expected,))


def test_batch_out_that_is_a_folder_is_refused_before_screening(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    source = ROOT / "cases" / "cohort" / "synthetic-500.csv"
    run = invoke(
        ["batch", str(source), "--out", "results", "--format", "jsonl", "--workers", "1"], tmp_path
    )
    check(run, expected=("results is a folder",))
    assert "rows read" not in run.stderr


def _refuse(error: int) -> Callable[..., object]:
    def fail(*args: object, **kwargs: object) -> object:
        raise OSError(error, os.strerror(error), str(args[0]) if args else None)

    return fail


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(errno.ENOSPC, "No space left on device", id="full-disk"),
        pytest.param(errno.EROFS, "Read-only file system", id="read-only-folder"),
        pytest.param(errno.EACCES, "Permission denied", id="no-permission"),
    ],
)
def test_synth_on_a_full_disk_or_read_only_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, expected: str
) -> None:
    """The fault is injected where the file is opened (tests run as root, for whom a
    read-only folder is writable); the message names the output, not its temp file."""
    import engine.synth

    monkeypatch.setattr(engine.synth, "open", _refuse(error), raising=False)
    run = invoke(["synth", "5", "--out", "c.csv"], tmp_path)
    check(run, expected=("error: c.csv: " + expected,))
    assert run.written == {}


def test_screen_with_stdout_full_is_one_error_line(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [str(EXE), "screen", "--set", "sex=male", "--format", "json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error: ") == 1
    assert "Traceback" not in done.stderr
    assert "No space left on device" in done.stderr


def _wait_for_imports(pid: int, timeout: float = 60) -> None:
    """Until the process maps pydantic's compiled core: miss-screen is importing its own
    modules (a signal before Python itself has started is the interpreter's business)."""
    deadline = time.monotonic() + timeout
    maps = Path(f"/proc/{pid}/maps")
    while time.monotonic() < deadline:
        try:
            if "pydantic_core" in maps.read_text():
                return
        except OSError:
            return  # the process has ended
        time.sleep(0.005)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_ctrl_c_in_the_first_second_is_a_clean_exit(delay: float) -> None:
    process = subprocess.Popen(
        [str(EXE), "rules", "check"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_imports(process.pid)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr
    if process.returncode == 0:  # it finished before the signal came
        assert "OK" in stdout
        return
    assert process.returncode == 130, stderr
    assert stderr.splitlines() == ["error: interrupted"], stderr


# --- item 8: rule checking terminates quickly, with file:line --------------------------------

RULE = """\
id: ACC-001
name: hostile-rule
version: 1.0.0
category: access
severity: info
when: '{when}'
message: Synthetic rule.
rationale: Synthetic.
evidence: M
provisional: true
sources: [{{citation: "synthetic"}}]
cases:
  fires: [{{name: high, case: {{bmi: 89, levels: 3}}}}]
  does_not_fire: [{{name: low, case: {{bmi: 11, levels: 3}}}}]
  not_evaluable: [{{name: unknown, case: {{levels: 3}}, missing: [bmi]}}]
"""
RULE_NAME = "ACC-001-hostile-rule.yaml"


def rule_base(root: Path, rules: dict[str, str], *, derived: dict[str, str] | None = None) -> Path:
    root.mkdir()
    for name in ("ruleset.yaml", "policy.yaml", "constraints.yaml"):
        shutil.copy(RULES_DIR / name, root / name)
    (root / "access").mkdir()
    for name, text in rules.items():
        (root / "access" / name).write_text(text)
    if derived:
        (root / "derived").mkdir()
        for name, text in derived.items():
            (root / "derived" / name).write_text(text)
    return root


def check_rules(root: Path, tmp_path: Path, expected: tuple[str, ...], errors: int = 1) -> None:
    started = time.monotonic()
    check(invoke(["rules", "check", str(root)], tmp_path), expected=expected, errors=errors)
    assert time.monotonic() - started < 30  # minutes before the fix


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        pytest.param("not " * 500 + "bmi > 30", "nested more than 32 levels", id="500-nots"),
        pytest.param(
            "age_years in [" + ", ".join(map(str, range(550))) + "]",
            "a list of 550 values; at most 128",
            id="in-550-values",
        ),
        pytest.param(
            " or ".join(f"bmi > {n}" for n in range(300)), "more than 256 terms", id="300-terms"
        ),
        pytest.param('case_id == "S-0193"', "a condition cannot read it", id="case-id"),
        pytest.param("case_id is known", "a condition cannot read it", id="case-id-known"),
    ],
)
def test_a_hostile_condition_is_a_file_line_error(tmp_path: Path, when: str, expected: str) -> None:
    root = rule_base(tmp_path / "rules", {RULE_NAME: RULE.format(when=when)})
    check_rules(root, tmp_path, (f"{RULE_NAME}:6: when: ", expected))


def test_a_derived_expression_of_1200_terms_is_a_file_line_error(tmp_path: Path) -> None:
    source = (RULES_DIR / "derived" / "DER-001-pi-ll-mismatch.yaml").read_text()
    terms = " + ".join(["pelvic_incidence_deg"] * 1200)
    hostile = source.replace(
        "expression: pelvic_incidence_deg - lumbar_lordosis_deg", f"expression: {terms}"
    )
    root = rule_base(
        tmp_path / "rules",
        {RULE_NAME: RULE.format(when="bmi > 30")},
        derived={"DER-001-pi-ll-mismatch.yaml": hostile},
    )
    check_rules(root, tmp_path, ("DER-001-pi-ll-mismatch.yaml:", "expression"))


def test_a_repeated_when_key_is_a_file_line_error(tmp_path: Path) -> None:
    text = RULE.format(when="bmi > 30").replace(
        "when: 'bmi > 30'", "when: 'bmi > 30'\nwhen: 'bmi > 90'"
    )
    root = rule_base(tmp_path / "rules", {RULE_NAME: text})
    check_rules(root, tmp_path, (f"{RULE_NAME}:7: key 'when' is given more than once",))


def test_rules_reading_too_many_attributes_name_their_files(tmp_path: Path) -> None:
    """Each rule tests another set of techniques (a ruled-out flag per set): together past
    durable-rules' 252 attributes per fact, which used to be an internal error."""
    import itertools

    techniques = [
        "tubular_discectomy", "endoscopic_discectomy", "tubular_decompression",
        "endoscopic_decompression", "mis_tlif", "llif", "percutaneous_fixation", "mis_deformity",
        "vertebral_augmentation", "mis_tumor", "other",
    ]  # fmt: skip
    sets = list(itertools.combinations(techniques, 3))[:130]
    rules = {}
    for n, chosen in enumerate(sets, 1):
        when = "mis_technique in [" + ", ".join(f'"{t}"' for t in chosen) + "]"
        text = RULE.format(when=when).replace("ACC-001", f"ACC-{n:03d}")
        rules[f"ACC-{n:03d}-hostile-rule-{n}.yaml"] = text.replace(
            "name: hostile-rule", f"name: hostile-rule-{n}"
        )
    root = rule_base(tmp_path / "rules", rules)
    check_rules(
        root,
        tmp_path,
        ("ACC-001-hostile-rule-1.yaml:6: when: the rules read", "more than the 246 durable"),
        errors=5,
    )


def test_the_layout_search_is_bounded(tmp_path: Path) -> None:
    """Many wide rules on top of the bundled ones: laid out (or refused) within seconds."""
    root = tmp_path / "rules"
    shutil.copytree(RULES_DIR, root)
    for n in range(100, 130):
        values = ", ".join(str((i * 7 + n) % 121) for i in range(120))
        when = f"age_years in [{values}] and bmi > {n % 50 + 10}"
        text = RULE.format(when=when).replace("ACC-001", f"ACC-{n:03d}")
        text = text.replace("name: hostile-rule", f"name: wide-{n}")
        (root / "access" / f"ACC-{n:03d}-wide-{n}.yaml").write_text(text)
    started = time.monotonic()
    run = invoke(["rules", "check", str(root)], tmp_path)
    assert time.monotonic() - started < 60
    assert run.code == 0, run.stderr
    bundled = len(load_ruleset(RULES_DIR).rules)
    assert f"{bundled + 30} rules" in run.stdout


# --- item 9: spreadsheets, --errors -, encodings -------------------------------------------------


def test_csv_output_cells_are_never_formulas(tmp_path: Path) -> None:
    import csv

    source = write_jsonl(
        tmp_path / "c.jsonl",
        [{"case_id": "-2-3", "bmi": 25}, {"case_id": "-1", "bmi": 30}, {"case_id": "A-1"}],
    )
    run = invoke(["batch", str(source), "--out", "o.csv", "--workers", "1"], tmp_path)
    check(run, code=0, errors=0)
    with open(tmp_path / "o.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert [r[0] for r in rows] == ["case_id", "'-2-3", "'-1", "A-1"]
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for cell in r)


def test_errors_dash_writes_to_stderr(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", [{"case_id": "A-1", "bmi": 900}])
    run = invoke(
        ["batch", str(source), "--out", "o.jsonl", "--errors", "-", "--workers", "1"], tmp_path
    )
    check(run, code=0, errors=1, expected=("row 1 (case_id A-1): bmi: 900 is out of range",))
    assert "-" not in run.written


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        pytest.param("c.jsonl", "utf-16", id="jsonl-utf16-bom"),
        pytest.param("c.jsonl", "utf-16-le", id="jsonl-utf16-no-bom"),
        pytest.param("c.jsonl", "utf-32", id="jsonl-utf32"),
        pytest.param("c.csv", "utf-16", id="csv-utf16"),
    ],
)
def test_a_file_not_in_utf8_is_refused_not_miscounted(
    tmp_path: Path, name: str, encoding: str
) -> None:
    if name.endswith(".jsonl"):
        text = '{"case_id": "A-1", "bmi": 25}\n{"case_id": "A-2", "bmi": 26}\n'
    else:
        text = "case_id,bmi\nA-1,25\nA-2,26\n"
    (tmp_path / name).write_bytes(text.encode(encoding))
    run = invoke(["batch", name, "--out", "o.jsonl", "--workers", "1"], tmp_path)
    check(run, expected=("not UTF-8; save it as UTF-8",))
    assert "rows read" not in run.stderr


def test_a_utf16_case_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "case.yaml").write_bytes("case_id: A-1\nsex: male\n".encode("utf-16"))
    check(invoke(["screen", "case.yaml"], tmp_path), expected=("not UTF-8",))
