"""Every rule a patient summary can show speaks to the patient in plain words (issue 30).

A rule that can fire or stay open carries a `patient:` text; a red flag carries the warning
symptoms to seek urgent care for (`safety_net:`). The texts are read by the person the finding is
about, so each is held to a reading grade measured by a library (textstat's Flesch-Kincaid), a
length, no engine words, and no figure that the clinical message and its source do not carry.
Findings about the hospital (equipment, cost, the surgeon's experience) are questions to ask the
team, never facts about the patient; nothing tells the patient what to decide (IPDAS).
"""

from __future__ import annotations

import re

import pytest
import textstat

from engine.dictionary import FIELDS
from engine.goldens import golden_cases
from engine.models import Category, Severity
from tests.conftest import RULESET

MAX_GRADE = 8.0  # health-literacy guidance: about a grade-6-to-8 reading level
MAX_WORDS = 40
MAX_SYMPTOM_WORDS = 15

# kinds of golden case in which a rule shows in a summary: it fired, or its question is open
SHOWN = {"fires", "not_evaluable", "conditional"}
SHOWABLE = sorted(
    {g.rule_id for g in golden_cases(RULESET) if g.kind in SHOWN}
    | {rule.id for rule in RULESET.rules if rule.meta.severity is Severity.red_flag}
)
RULES = {rule.id: rule for rule in RULESET.rules}

RULE_ID = re.compile(r"\b[A-Z]{3}-\d{3}\b")
UNDERSCORED = re.compile(r"\b\w+_\w+\b")
# an abbreviation is jargon to a patient (MIS, TLIF, BMI, SVA...): the texts spell things out
ABBREVIATION = re.compile(r"\b[A-Z]{2,}\b")
# the patient decides with the surgeon; a text that says what to choose is advice in disguise
DECIDING = re.compile(
    r"\byou should\b|\brecommend|\badvis|\bbest (?:choice|option)\b|\bchoose\b|\bopt for\b"
    r"|\bgo for\b|\bdo not have\b|\bdon't have\b|\bmust\b",
    re.IGNORECASE,
)
# a finding about the hospital: its equipment and cost, or the surgeon's experience
ABOUT_THE_TEAM = {Category.cost, Category.complexity}
ASK_THE_TEAM = re.compile(r"^Ask your (?:team|surgeon)\b")
# dictionary fields whose names are not everyday words: spelt as a field, they are jargon
# (osteoporosis is said with its gloss, "thin bones")
EVERYDAY = {
    "sex",
    "pregnant",
    "diabetes",
    "smoker",
    "diagnosis",
    "region",
    "levels",
    "osteoporosis",
}
FIELD_WORDS = sorted({f.name for f in FIELDS} - EVERYDAY)

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
PERCENT = re.compile(r"(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?\s*%")
# "about 1 in 7", "1 to 4 in 1,000": a natural frequency, numerators and a denominator
FREQUENCY = re.compile(r"(about )?(\d+)(?: to (\d+))? in (\d+(?:,\d{3})*)")
# "about" covers rounding to a natural frequency: within a tenth of the share it stands for
ABOUT = 0.1
WORD_FIGURES = re.compile(r"\b(?:quarter|third|half|twice|double|triple)\b", re.IGNORECASE)
# a fraction word a message may give as a percentage instead
FRACTION_SHARE = {"quarter": 0.25, "half": 0.5}


def grade(text: str) -> float:
    return float(textstat.flesch_kincaid_grade(text))


def words(text: str) -> int:
    return int(textstat.lexicon_count(text))


def patient_text(rule_id: str) -> str:
    text = RULES[rule_id].meta.patient
    assert text is not None, f"{rule_id}: no patient text (`patient:` in its rule file)"
    return " ".join(text.split())


def unsupported_figures(patient: str, message: str) -> list[str]:
    """The figures of a patient text that its rule's message does not carry.

    A number stands as the message has it, or in a natural frequency ("about 1 in 4") whose
    ratio is a percentage of the message: exactly, or within a tenth of it when "about" says so.
    A fraction word ("a quarter") needs the same word in the message, or its percentage.
    """
    shares = [
        float(number) / 100 for m in PERCENT.finditer(message) for number in m.groups() if number
    ]
    stated = {n.replace(",", "") for n in NUMBER.findall(message)}
    wrong: list[str] = []
    for m in FREQUENCY.finditer(patient.lower()):
        about, low, high, per = m.group(1), m.group(2), m.group(3), int(m.group(4).replace(",", ""))
        for count in (int(n) for n in (low, high) if n):
            if not any(
                abs(count / per - share) <= ABOUT * share
                if about
                else abs(share * per - count) < 1e-9
                for share in shares
            ):
                wrong.append(m.group(0))
    rest = FREQUENCY.sub(" ", patient.lower())
    wrong += [n for n in NUMBER.findall(rest) if n.replace(",", "") not in stated]
    lowered = message.lower()
    wrong += [
        w
        for w in WORD_FIGURES.findall(rest)
        if w.lower() not in lowered and FRACTION_SHARE.get(w.lower()) not in shares
    ]
    return wrong


# --- every rule a summary can show has a patient text -----------------------------------------


def test_every_screening_rule_can_fire_or_stay_open() -> None:
    """So every rule needs a patient text; a rule that could do neither would need none."""
    assert set(SHOWABLE) == set(RULES)


@pytest.mark.parametrize("rule_id", SHOWABLE)
def test_a_rule_that_can_show_has_a_patient_text(rule_id: str) -> None:
    patient_text(rule_id)


@pytest.mark.parametrize("rule_id", SHOWABLE)
def test_patient_text_is_short_and_readable(rule_id: str) -> None:
    text = patient_text(rule_id)
    assert words(text) <= MAX_WORDS, f"{rule_id}: {words(text)} words"
    assert grade(text) <= MAX_GRADE, f"{rule_id}: Flesch-Kincaid grade {grade(text)}"


@pytest.mark.parametrize("rule_id", SHOWABLE)
def test_patient_text_has_no_engine_words_or_jargon(rule_id: str) -> None:
    text = patient_text(rule_id)
    assert not RULE_ID.findall(text), f"{rule_id}: a rule id"
    assert not UNDERSCORED.findall(text), f"{rule_id}: {UNDERSCORED.findall(text)}"
    assert not ABBREVIATION.findall(text), f"{rule_id}: spell out {ABBREVIATION.findall(text)}"
    fields = [f for f in FIELD_WORDS if re.search(rf"\b{re.escape(f)}\b", text, re.IGNORECASE)]
    assert not fields, f"{rule_id}: field names {fields}"
    assert "%" not in text, f"{rule_id}: say a share as a natural frequency (about 1 in 4)"


# medical words a patient may not know, each with the everyday words that must gloss it
GLOSSES = {"fusion": "join", "osteoporosis": "thin", "endoscop": "camera"}


@pytest.mark.parametrize("rule_id", SHOWABLE)
def test_a_medical_word_comes_with_its_gloss(rule_id: str) -> None:
    text = patient_text(rule_id).lower()
    for word, gloss in GLOSSES.items():
        if re.search(rf"\b{word}", text):
            assert gloss in text, f"{rule_id}: say what '{word}' means ('{gloss}...')"


@pytest.mark.parametrize("rule_id", SHOWABLE)
def test_patient_text_does_not_say_what_to_decide(rule_id: str) -> None:
    found = DECIDING.search(patient_text(rule_id))
    assert found is None, f"{rule_id}: '{found.group(0)}' tells the patient what to decide"


@pytest.mark.parametrize(
    "rule_id", [r for r in SHOWABLE if RULES[r].meta.category in ABOUT_THE_TEAM]
)
def test_a_finding_about_the_hospital_is_a_question_for_the_team(rule_id: str) -> None:
    text = patient_text(rule_id)
    assert ASK_THE_TEAM.match(text), f"{rule_id}: start with 'Ask your team ...'"


@pytest.mark.parametrize("rule_id", SHOWABLE)
def test_patient_text_figures_come_from_the_message(rule_id: str) -> None:
    wrong = unsupported_figures(patient_text(rule_id), RULES[rule_id].meta.message)
    assert not wrong, f"{rule_id}: {wrong} not in the message"


@pytest.mark.parametrize(
    "rule_id", [r for r in SHOWABLE if RULES[r].meta.severity is Severity.red_flag]
)
def test_a_red_flag_is_said_plainly_as_urgent(rule_id: str) -> None:
    text = patient_text(rule_id).lower()
    assert re.search(r"\burgent|\bemergency\b", text), f"{rule_id}: say that it is urgent"
    softeners = re.findall(r"\b(?:might|perhaps|possibly|probably|a little|slightly)\b", text)
    assert not softeners, f"{rule_id}: {softeners} soften a red flag"


# a benefit is said as its studies found it, not promised to this patient
HEDGE = re.compile(
    r"\bon average\b|\bmay\b|\bstud(?:y|ies)\b|\btrial\b|\babout\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize(
    "rule_id", [r for r in SHOWABLE if RULES[r].meta.category is Category.benefit]
)
def test_a_benefit_is_not_oversold(rule_id: str) -> None:
    text = patient_text(rule_id)
    assert HEDGE.search(text), f"{rule_id}: say 'on average', 'may' or 'in studies'"
    assert not re.search(r"\b(?:will|always|guarantee)", text, re.IGNORECASE), rule_id


# --- safety nets: only, and always, on red flags ---------------------------------------------


@pytest.mark.parametrize("rule", RULESET.rules, ids=lambda r: r.id)
def test_safety_net_only_and_always_on_a_red_flag(rule: object) -> None:
    meta = rule.meta  # type: ignore[attr-defined]
    assert (meta.safety_net is not None) == (meta.severity is Severity.red_flag), meta.id


def safety_symptoms() -> list[tuple[str, str]]:
    return [
        (rule.id, symptom)
        for rule in RULESET.rules
        if rule.meta.safety_net is not None
        for symptom in rule.meta.safety_net.symptoms
    ]


@pytest.mark.parametrize(("rule_id", "symptom"), safety_symptoms())
def test_each_warning_symptom_is_short_and_readable(rule_id: str, symptom: str) -> None:
    assert words(symptom) <= MAX_SYMPTOM_WORDS, f"{rule_id}: {symptom!r}"
    assert grade(symptom) <= MAX_GRADE, f"{rule_id}: {symptom!r} grade {grade(symptom)}"
    assert not ABBREVIATION.findall(symptom), f"{rule_id}: {symptom!r}"
    assert not UNDERSCORED.findall(symptom), f"{rule_id}: {symptom!r}"


@pytest.mark.parametrize(
    "rule", [r for r in RULESET.rules if r.meta.safety_net], ids=lambda r: r.id
)
def test_a_safety_net_cites_where_its_symptoms_come_from(rule: object) -> None:
    net = rule.meta.safety_net  # type: ignore[attr-defined]
    assert len(net.symptoms) >= 2
    assert len(set(net.symptoms)) == len(net.symptoms)
    for source in net.sources:
        assert source.url or source.doi or source.pmid, source.citation
        assert source.design.value != "unknown", source.citation


# --- the checks catch what they are meant to --------------------------------------------------


def test_the_figure_check_catches_what_it_is_meant_to() -> None:
    message = "failed most often (15 %), 13.1 % vs 5.5 %; 0.1-0.4 % vs 3.9 %; a quarter"
    assert unsupported_figures("About 1 in 7 failed.", message) == []
    assert unsupported_figures("About 1 in 8, against about 1 in 18.", message) == []
    assert unsupported_figures("1 to 4 in 1,000, against 39 in 1,000.", message) == []
    assert unsupported_figures("About a quarter of the risk.", message) == []
    assert unsupported_figures("1 in 7 failed.", message) == ["1 in 7"]  # not exact
    assert unsupported_figures("About 1 in 3 failed.", message) == ["about 1 in 3"]
    assert unsupported_figures("About 1 in 10 had it.", "5.5 %") == ["about 1 in 10"]
    assert unsupported_figures("It took 44 operations.", message) == ["44"]
    assert unsupported_figures("About a third of the risk.", message) == ["third"]
    assert unsupported_figures("It fills more than half.", "more than 50 %") == []


def test_the_wording_checks_catch_what_they_are_meant_to() -> None:
    assert DECIDING.search("You should have the keyhole operation.")
    assert DECIDING.search("Most surgeons recommend open surgery here.")
    assert DECIDING.search("This may be the best option for you.")
    assert DECIDING.search("Your surgeon and you decide together.") is None
    assert HEDGE.search("Keyhole fusion loses less blood.") is None
    assert HEDGE.search("In studies, keyhole fusion lost less blood.")
    assert ABBREVIATION.findall("MIS TLIF loses less blood") == ["MIS", "TLIF"]
    assert UNDERSCORED.findall("your sva_mm is high") == ["sva_mm"]
    assert ASK_THE_TEAM.match("Ask your team whether they have the tools.")
    assert ASK_THE_TEAM.match("This hospital lacks the tools.") is None
    assert grade("Your surgeon may use smaller cuts.") <= MAX_GRADE
    hard = (
        "Multilevel degenerative cervical myelopathy necessitates comprehensive decompressive "
        "intervention, predominantly via conventional posterior laminectomy approaches."
    )
    assert grade(hard) > MAX_GRADE


def test_rule_pages_show_the_patient_text_and_warning_symptoms() -> None:
    """The generated rule docs carry what the summary prints, so a reviewer reads it there."""
    from engine.report.docs import page_name, render_docs
    from tests.conftest import ROOT

    pages = render_docs(RULESET, ROOT)
    for rule in RULESET.rules:
        page = pages[page_name(rule)]
        assert f"## For the patient\n{rule.meta.patient}\n" in page, rule.id
        for symptom in rule.meta.safety_net.symptoms if rule.meta.safety_net else []:
            assert f"- {symptom}\n" in page, rule.id


@pytest.mark.timeout(60)
def test_rules_show_prints_the_patient_text_and_warning_symptoms() -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    meta = RULES["RED-001"].meta
    assert meta.safety_net is not None
    result = CliRunner().invoke(app, ["rules", "show", "RED-001"], terminal_width=10_000)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert f"for the patient: {meta.patient}" in out
    assert "warning symptoms: " + "; ".join(meta.safety_net.symptoms) in out
    assert all(s.citation in out for s in meta.safety_net.sources)
