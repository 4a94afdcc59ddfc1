"""The one value normaliser (issue 27 items 1, 2, 6): its table, its reading, every entry point.

What a registry export writes (`Male`, `HNP`, `L4/5`, `Y`, `31,5`, ids read as 101 or 101.0) is
read as the dictionary spells it, the same way by `screen`, `Screener.screen`, `screen_frame`
and `batch`; what it cannot place stays a row error naming field and row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from engine import Screener
from engine.cli import app
from engine.dictionary import FIELDS_BY_NAME, SEGMENTS, FieldType
from engine.errors import CaseInputError
from engine.io.cases import validate_case, validate_counted
from engine.io.normalise import (
    SYNONYMS_FILE,
    normalise_value,
    parse_levels,
    spelling_key,
    synonyms,
)
from engine.models import Result

runner = CliRunner()
SCREENER = Screener.load()
RAW_TABLE = yaml.safe_load(SYNONYMS_FILE.read_text(encoding="utf-8"))

# --- the table -------------------------------------------------------------------------------

SYNONYM_ENTRIES = [
    (field, str(word), value)
    for field, words in RAW_TABLE["fields"].items()
    for word, value in words.items()
]


@pytest.mark.parametrize(("field", "word", "value"), SYNONYM_ENTRIES, ids=lambda x: str(x))
def test_every_synonym_names_a_value_of_its_field(field: str, word: str, value: str) -> None:
    spec = FIELDS_BY_NAME[field]
    assert spec.type is FieldType.enum
    assert value in spec.values
    assert normalise_value(field, word) == value
    assert normalise_value(field, word.upper()) == value


@pytest.mark.parametrize("field", sorted(RAW_TABLE["fields"]))
def test_no_synonym_is_ambiguous_across_the_values_of_its_field(field: str) -> None:
    """Two spellings that compare alike must name one value: a spelling key of a dictionary
    value or of another synonym never names a second value (the table would hide it)."""
    meanings: dict[str, set[str]] = {}
    for value in FIELDS_BY_NAME[field].values:
        meanings.setdefault(spelling_key(value), set()).add(value)
    for word, value in RAW_TABLE["fields"][field].items():
        meanings.setdefault(spelling_key(str(word)), set()).add(value)
    ambiguous = {key: values for key, values in meanings.items() if len(values) > 1}
    assert ambiguous == {}
    keys = [spelling_key(str(w)) for w in RAW_TABLE["fields"][field]]
    assert len(keys) == len(set(keys)), "one spelling listed twice"


def test_no_boolean_word_means_both() -> None:
    yes = {str(w).lower() for w in RAW_TABLE["booleans"]["true"]}
    no = {str(w).lower() for w in RAW_TABLE["booleans"]["false"]}
    assert yes
    assert no
    assert not yes & no
    assert synonyms().booleans["y"] is True
    assert synonyms().booleans["n"] is False


def test_the_table_ships_inside_the_package() -> None:
    import engine

    assert SYNONYMS_FILE.parent == Path(engine.__file__).parent / "io"


# --- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        ("sex", "Male", "male"),
        ("sex", "M", "male"),
        ("sex", " F ", "female"),
        ("diagnosis", "DISC HERNIATION", "disc_herniation"),
        ("diagnosis", "HNP", "disc_herniation"),
        ("diagnosis", "LDH", "disc_herniation"),
        ("diagnosis", "herniated", "disc_herniation"),
        ("diagnosis", "lumbar_stenosis", "spinal_stenosis"),
        ("diagnosis", "DDD", "degenerative_disc_disease"),
        ("diagnosis", "fx", "fracture"),
        ("diagnosis", "spondy", "spondylolisthesis"),
        ("diagnosis", "Tumour", "tumor"),
        ("planned_procedure", "Microdiscectomy", "discectomy"),
        ("planned_procedure", "TLIF", "fusion"),
        ("planned_procedure", "Laminectomy", "decompression"),
        ("mis_technique", "TLIF", "mis_tlif"),
        ("mis_technique", "MIS-TLIF", "mis_tlif"),
        ("region", "Lumbar", "lumbar"),
        ("lowest_level", "L4/5", "L4-L5"),
        ("lowest_level", "L4-5", "L4-L5"),
        ("lowest_level", "l4l5", "L4-L5"),
        ("lowest_level", "L45", "L4-L5"),
        ("lowest_level", "L5/S1", "L5-S1"),
        ("lowest_level", "L5S1", "L5-S1"),
        ("lowest_level", "C5/6", "C5-C6"),
        ("lowest_level", "T12-L1", "T12-L1"),
        ("lowest_level", "t12/l1", "T12-L1"),
        ("smoker", "Y", True),
        ("smoker", "n", False),
        ("smoker", "YES", True),
        ("smoker", "No", False),
        ("smoker", "1", True),
        ("smoker", "0", False),
        ("smoker", "TRUE", True),
        ("smoker", "False", False),
        ("smoker", 1.0, True),
        ("bmi", "31,5", 31.5),
        ("dexa_t_score", "-2,6", -2.6),
        ("case_id", 101, "101"),
        ("case_id", 101.0, "101"),
        ("case_id", "101.0", "101"),
        ("case_id", "00042", "00042"),
        ("case_id", " S-1 ", "S-1"),
    ],
)
def test_a_value_is_read_as_the_dictionary_spells_it(field: str, given: Any, expected: Any) -> None:
    row = {"case_id": "T-1", field: given}
    case_id, values = validate_case(row, "test")
    assert (case_id if field == "case_id" else values[field]) == expected
    assert type(case_id if field == "case_id" else values[field]) is type(expected)


@pytest.mark.parametrize(
    ("field", "given"),
    [
        ("sex", "1"),  # numeric sex codes differ by registry: a mapping file must state them
        ("sex", "2"),
        ("diagnosis", "sciatica"),  # a symptom
        ("diagnosis", "scoliosis"),  # adolescent or adult
        ("diagnosis", "ASD"),  # adult spinal deformity, or adjacent segment disease
        ("lowest_level", "T12"),  # a vertebra, not T1-T2
        ("lowest_level", "L5"),
        ("lowest_level", "L5-L4"),
        ("lowest_level", "L3/5"),
        ("bmi", "1,234"),  # a thousand, or one point two?
        ("smoker", "x"),  # a tick means yes only where a mapping says so
        ("smoker", "maybe"),
    ],
)
def test_a_value_it_cannot_place_stays_a_row_error_naming_field_and_row(
    field: str, given: str
) -> None:
    with pytest.raises(CaseInputError) as raised:
        validate_case({"case_id": "T-1", field: given}, "cohort.csv", row=7)
    lines = raised.value.lines()
    assert any("row 7" in line and field in line for line in lines), lines


def test_an_unplaceable_value_that_could_identify_someone_is_not_echoed() -> None:
    with pytest.raises(CaseInputError) as raised:
        validate_case({"case_id": "T-1", "diagnosis": "John Smith"}, "cohort.csv", row=3)
    text = " ".join(raised.value.lines())
    assert "diagnosis" in text
    assert "row 3" in text
    assert "Smith" not in text


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("L4/5", ("L4-L5",)),
        ("L3-L5", ("L3-L4", "L4-L5")),
        ("L3-5", ("L3-L4", "L4-L5")),
        ("L3 to L5", ("L3-L4", "L4-L5")),
        ("L4-5, L5-S1", ("L4-L5", "L5-S1")),
        ("C7T1", ("C7-T1",)),
        ("T11-T12", ("T11-T12",)),
        ("T12", None),
        ("T1112", None),
        ("L3/5", None),
        ("L5-L6", None),
        ("S1-S2", None),
        ("L5", None),
        ("", None),
    ],
)
def test_level_spellings_and_spans(text: str, segments: tuple[str, ...] | None) -> None:
    assert parse_levels(text) == segments
    assert all(s in SEGMENTS for s in segments or ())


def test_a_span_states_levels_and_a_contradicting_levels_is_refused() -> None:
    _, values, changes = validate_counted({"case_id": "T-1", "lowest_level": "L3-L5"}, "t")
    assert values["lowest_level"] == "L4-L5"
    assert values["levels"] == 2
    assert {c.field for c in changes} == {"lowest_level", "levels"}
    _, values = validate_case({"case_id": "T-1", "lowest_level": "L3-L5", "levels": "2"}, "t")
    assert values["levels"] == 2
    with pytest.raises(CaseInputError, match="spans 2 segments but levels is 1"):
        validate_case({"case_id": "T-1", "lowest_level": "L3-L5", "levels": 1}, "t")


def test_changes_are_reported_and_a_case_id_is_never_an_example() -> None:
    _, _, changes = validate_counted(
        {"case_id": 101, "sex": "M", "smoker": "true", "bmi": "31,5"}, "t"
    )
    by_field = {c.field: c for c in changes}
    assert set(by_field) == {"case_id", "sex", "bmi"}  # "true" is the dictionary's own word
    assert by_field["sex"].example == "M → male"
    assert by_field["bmi"].example == "31,5 → 31.5"
    assert by_field["case_id"].example is None


# --- the four faces give the same result -----------------------------------------------------

MESSY_CASES = {
    "herniation": (
        {
            "case_id": "N-1",
            "age_years": "44",
            "sex": "Male",
            "diagnosis": "HNP",
            "region": "Lumbar",
            "lowest_level": "L4/5",
            "levels": "1",
            "planned_procedure": "Microdiscectomy",
            "smoker": "Y",
            "diabetes": "no",
            "bmi": "31,5",
            "cauda_equina_syndrome": "N",
            "progressive_neuro_deficit": "n",
        },
        {
            "case_id": "N-1",
            "age_years": 44,
            "sex": "male",
            "diagnosis": "disc_herniation",
            "region": "lumbar",
            "lowest_level": "L4-L5",
            "levels": 1,
            "planned_procedure": "discectomy",
            "smoker": True,
            "diabetes": False,
            "bmi": 31.5,
            "cauda_equina_syndrome": False,
            "progressive_neuro_deficit": False,
        },
    ),
    "stenosis-span": (
        {
            "case_id": "N-2",
            "age_years": "71",
            "sex": "F",
            "diagnosis": "LSS",
            "lowest_level": "L3-L5",
            "planned_procedure": "laminectomy",
            "osteoporosis": "YES",
            "dexa_t_score": "-2,7",
            "cauda_equina_syndrome": "FALSE",
        },
        {
            "case_id": "N-2",
            "age_years": 71,
            "sex": "female",
            "diagnosis": "spinal_stenosis",
            "lowest_level": "L4-L5",
            "levels": 2,
            "planned_procedure": "decompression",
            "osteoporosis": True,
            "dexa_t_score": -2.7,
            "cauda_equina_syndrome": False,
        },
    ),
    "fracture-red-flag": (
        {
            "case_id": "N-3",
            "diagnosis": "fx",
            "lowest_level": "T12/L1",
            "planned_procedure": "Kyphoplasty",
            "cauda_equina_syndrome": "Y",
        },
        {
            "case_id": "N-3",
            "diagnosis": "fracture",
            "lowest_level": "T12-L1",
            "planned_procedure": "vertebral_augmentation",
            "cauda_equina_syndrome": True,
        },
    ),
}


def _key_of_result(result: Result) -> tuple[str, str, list[str], list[str]]:
    return (
        result.case_id,
        result.verdict.value,
        sorted(f.rule_id for f in result.findings),
        sorted(n.rule_id for n in result.not_evaluable),
    )


def _key_of_flat(row: dict[str, Any]) -> tuple[str, str, list[str], list[str]]:
    fired = [
        rule
        for name in ("fired_red_flag", "fired_major", "fired_caution", "fired_info")
        for rule in (row[name] or "").split(";")
        if rule
    ]
    return (
        str(row["case_id"]),
        row["verdict"],
        sorted(fired),
        sorted(r for r in (row["not_evaluable"] or "").split(";") if r),
    )


def _via_screen_cli(messy: dict[str, Any], tmp_path: Path) -> tuple[str, str, list[str], list[str]]:
    case_file = tmp_path / "case.yaml"
    case_file.write_text(yaml.safe_dump(messy))
    run = runner.invoke(app, ["screen", str(case_file), "--format", "json"])
    assert run.exit_code == 0, run.stderr
    return _key_of_result(Result.model_validate_json(run.stdout))


def _via_batch_cli(messy: dict[str, Any], tmp_path: Path) -> tuple[str, str, list[str], list[str]]:
    import csv

    cohort, out = tmp_path / "cohort.csv", tmp_path / "out.csv"
    with cohort.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*messy, "surgeon"], delimiter=";")
        writer.writeheader()
        writer.writerow({**messy, "surgeon": "B"})
    run = runner.invoke(app, ["batch", str(cohort), "--out", str(out), "--workers", "1"])
    assert run.exit_code == 0, run.stderr
    with out.open(encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    return _key_of_flat(row)


def _via_screen_frame(messy: dict[str, Any], _: Path) -> tuple[str, str, list[str], list[str]]:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([{**messy, "surgeon": "B"}], index=[41])
    out = SCREENER.screen_frame(frame)
    assert list(out.index) == [41]
    row = {k: None if pd.isna(v) else v for k, v in out.iloc[0].to_dict().items()}
    assert row["rejected"] is None, row["rejected"]
    return _key_of_flat(row)


def _via_screener(messy: dict[str, Any], _: Path) -> tuple[str, str, list[str], list[str]]:
    return _key_of_result(SCREENER.screen(messy))


FACES = {
    "screen": _via_screen_cli,
    "batch": _via_batch_cli,
    "screen_frame": _via_screen_frame,
    "Screener.screen": _via_screener,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("face", list(FACES))
@pytest.mark.parametrize("case", list(MESSY_CASES))
def test_every_face_gives_the_clean_twins_result_for_messy_values(
    case: str, face: str, tmp_path: Path
) -> None:
    messy, clean = MESSY_CASES[case]
    expected = _key_of_result(SCREENER.screen(clean))
    assert FACES[face](messy, tmp_path) == expected


def test_set_and_the_web_form_read_the_same_spellings() -> None:
    from engine.io.cases import parse_set_options

    raw = parse_set_options(["sex=M", "lowest_level=L5/S1", "smoker=Y", "bmi=31,5"])
    _, values = validate_case(raw, "--set")
    expected = {"sex": "male", "lowest_level": "L5-S1", "smoker": True, "bmi": 31.5}
    assert values == expected
    form = pytest.importorskip("engine.service.form")
    texts = {"sex": "M", "lowest_level": "L5/S1", "smoker": "Y", "bmi": "31,5"}
    screened = form.screen_post(SCREENER, form.Posted(texts=texts))
    assert screened.errors == {}
    assert screened.values == expected


def test_fhir_text_values_go_through_the_normaliser() -> None:
    """The FHIR mapper's case is validated by validate_case (engine.cli), so a gender the
    mapper passes as text is read like any other."""
    _, values = validate_case({"case_id": "F-1", "sex": "Female"}, "bundle.json (FHIR)")
    assert values == {"sex": "female"}
