"""The identifier guard on its labelled corpus (tests/identifier_corpus.py; issue 27 item 5).

Every identifier is refused as a case id (the kinds a case id can be) and withheld as a value;
every study id passes; no clinical value is withheld. The measured table in
docs/identifier-guard.md is the one measured now.
"""

from __future__ import annotations

import re

import pytest

from engine.io import clinical
from engine.io.case_ids import CASE_ID_SUSPECT, suspect
from engine.io.deid import case_id_identifier_kinds, showable, withheld_reason
from engine.io.normalise import synonym_words
from tests.identifier_corpus import DOC, Entry, Measure, corpus, measure, rendered_doc, table

pytestmark = pytest.mark.hostile


@pytest.fixture(scope="module")
def measured() -> Measure:
    return measure(corpus())


def _shown(entries: list[Entry]) -> str:
    return ", ".join(f"{e.kind}: {e.value!r}" for e in entries[:20])


@pytest.mark.timeout(300)
def test_every_identifier_is_refused_as_a_case_id_and_withheld_as_a_value(
    measured: Measure,
) -> None:
    assert measured.counts["identifier", "name", "n"] > 500  # the corpus is not empty
    assert measured.missed == [], _shown(measured.missed)


@pytest.mark.timeout(300)
def test_no_study_id_is_refused_and_no_clinical_value_withheld(measured: Measure) -> None:
    assert measured.counts["study_id", "sequential integer", "n"] > 20_000
    assert measured.counts["clinical", "ICD-10-CM", "n"] > 1000
    assert measured.wrong == [], _shown(measured.wrong)


@pytest.mark.timeout(300)
def test_the_doc_table_is_the_one_measured_now(measured: Measure) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text == rendered_doc(text, table(measured)), (
        "docs/identifier-guard.md is stale: run python tests/identifier_corpus.py"
    )


# The values issue 27 names: withheld or passed the wrong way before this guard.
ISSUE_CLINICAL = ["herniated", "lumbar_stenosis", "spondy", "HNP", "DDD", "fx", "Disc Herniation"]
ISSUE_IDS = {
    "5558675309": "phone",
    "19610312": "date",
    "A-1961-03-12": "date",
    "MRN0012345": "mrn",
    "9434765919": "nhs",  # the NHS Data Dictionary's example number, valid check digit
    "smith.john": "name",
    "JohnSmith": "name",
}


@pytest.mark.parametrize("value", ISSUE_CLINICAL)
def test_clinical_words_of_the_issue_are_shown(value: str) -> None:
    assert showable(value)
    assert "name" not in withheld_reason(value)


@pytest.mark.parametrize(("case_id", "kind"), ISSUE_IDS.items())
def test_identifiers_of_the_issue_are_refused_as_case_ids(case_id: str, kind: str) -> None:
    assert kind in case_id_identifier_kinds(case_id)


@pytest.mark.parametrize(
    "case_id", ["1", "42", "99999999", "REG-00042", "SW-2021-0042", "S-0193", "cli-case", "00042"]
)
def test_ordinary_ids_pass(case_id: str) -> None:
    assert case_id_identifier_kinds(case_id) == set()


def test_an_nhs_number_with_a_wrong_check_digit_is_not_an_nhs_number() -> None:
    assert "nhs" in case_id_identifier_kinds("4010232137")
    assert "nhs" not in case_id_identifier_kinds("4010232138")


def test_spellings_of_the_synonyms_table_are_shown() -> None:
    """The normaliser's table (engine/io/synonyms.yaml, read by engine.io.normalise) is the
    vocabulary the guard shows: every spelling of it, and each one is in the corpus."""
    spellings = synonym_words()
    assert {"hnp", "paramedian", "microdiskectomy", "subarticular"} <= spellings
    assert [s for s in sorted(spellings) if not showable(s)] == []
    assert {e.value for e in corpus() if e.kind == "synonym"} == spellings


def test_the_clinical_terms_do_not_repeat_the_synonyms_table() -> None:
    """One place for each spelling: a synonym the normaliser reads is shown from its table."""
    import yaml

    from engine.io.normalise import spelling_key

    terms = yaml.safe_load(clinical.TERMS_FILE.read_text(encoding="utf-8"))
    spellings = {spelling_key(s) for s in synonym_words()}
    repeated = [w for words in terms.values() for w in words if spelling_key(str(w)) in spellings]
    assert repeated == []


@pytest.mark.timeout(300)
def test_the_suspect_test_is_the_same_in_python_and_in_arrow() -> None:
    """engine.io.columnar clears ids in whole Arrow columns with CASE_ID_SUSPECT (RE2); the
    row path with case_ids.suspect: an id one of them clears and the other not would be
    judged differently by the two paths."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = [e.value for e in corpus()] + ["", "a" * 65, "ABC\u0663", "S-0193", "x@y", "Jun1"]
    by_python = [suspect(v) for v in values]
    by_re = [re.search(CASE_ID_SUSPECT, v) is not None for v in values]
    by_arrow = pc.match_substring_regex(pa.array(values), CASE_ID_SUSPECT).to_pylist()
    assert by_python == by_re == by_arrow
    assert 1000 < sum(by_python) < len(values) - 20_000  # both kinds are there
