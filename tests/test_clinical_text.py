"""Clinician-facing text is clinical: rule-authoring notes live in `notes`, never in a report.

A rule's message, rationale and source citations are printed in every screening report; where a
rule deviates from the draft catalogue, what was not read or verified, and which domain-notes
section it came from are author matters, kept in the rule's `notes` (shown by `rules show` and the
rule docs only).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import RULESET

AUTHOR_PHRASES = re.compile(
    r"deviation from|catalogue|domain notes|shared/domain|§|primary not read|not yet verified"
    r"|not yet checked|not yet sourced|added after clinical review|found in clinical review"
    r"|correction to|as listed in|not been read|issue \d+|\(seen\)|recalled|evidence [VPM]\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("rule", RULESET.rules, ids=lambda r: r.id)
def test_no_authoring_note_reaches_a_report(rule: object) -> None:
    meta = rule.meta  # type: ignore[attr-defined]
    texts = {"message": meta.message, "rationale": meta.rationale}
    texts.update({"asks_because": meta.asks_because} if meta.asks_because else {})
    texts.update({f"source {i}": s.citation for i, s in enumerate(meta.sources, 1)})
    texts.update({"patient": meta.patient} if meta.patient else {})
    net = meta.safety_net.sources if meta.safety_net else []
    texts.update({f"safety-net source {i}": s.citation for i, s in enumerate(net, 1)})
    for where, text in texts.items():
        found = AUTHOR_PHRASES.search(text)
        assert found is None, f"{meta.id} {where}: move '{found.group(0)}' ... to notes:"


@pytest.mark.parametrize(
    "item", [*RULESET.derived, *RULESET.constraints], ids=lambda item: item.meta.id
)
def test_no_authoring_note_in_a_derived_attribute_or_constraint(item: object) -> None:
    """Their rationale and sources reach `--details` traces and the reports' inferred lines."""
    meta = item.meta  # type: ignore[attr-defined]
    texts = {"rationale": meta.rationale}
    texts.update({f"source {i}": s.citation for i, s in enumerate(meta.sources, 1)})
    for where, text in texts.items():
        found = AUTHOR_PHRASES.search(text)
        assert found is None, f"{meta.id} {where}: move '{found.group(0)}' ... to notes:"


def test_the_phrase_test_catches_what_it_is_meant_to() -> None:
    for phrase in [
        "Deviation from catalogue ACC-05: x",
        "as listed in the domain notes §8.7",
        "primary not read",
        "first author not yet verified",
        "Added after clinical review (not in the draft catalogue)",
    ]:
        assert AUTHOR_PHRASES.search(phrase), phrase
    assert AUTHOR_PHRASES.search("Posterior wall disruption is a relative contraindication") is None


def test_every_bundled_source_names_its_study_design() -> None:
    """`design` defaults to unknown for other rule bases; the bundled one states it each time
    (unknown only where the citation does not tell), so no level is left out by accident."""
    import yaml

    from tests.conftest import RULES_DIR

    lacking = []
    for path in sorted(RULES_DIR.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        items = data.get("constraints", [data]) if isinstance(data, dict) else []
        for item in items:
            for source in item.get("sources", []) if isinstance(item, dict) else []:
                if "design" not in source:
                    lacking.append(f"{path.name}: {source['citation'][:60]}")
    assert not lacking, lacking


# --- engine and authoring vocabulary (issue 28 item 4) ------------------------------------------

# Whole words a clinician should never have to read: field names (underscored), rule syntax,
# the rule author's words for how a rule is written, and rule ids (a report prints the id beside
# the text where it needs one).
ENGINE_WORDS = re.compile(
    r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b"  # a field or value name with underscores
    r"|==|!=|>=|<=|`"  # rule syntax and code quotes
    r"|\bwhen:|\bscope[ds]?\b|\bscoping\b|\bsettles?\b|\bsettled\b"
    r"|\brecords? the\b[^.;]{0,60}\bfield\b"
    r"|\bdeviations?\b|\bcatalogue\b|\bverified\b|§"
    r"|\b(?:ACC|CPX|RAD|EQP|EVD|BEN|RED|IND|DER|CON)-\d{3}\b",
    re.IGNORECASE,
)


def clinical_texts() -> list[tuple[str, str]]:
    """(where, text) for every text a clinician reads: each rule's message, rationale and why
    its questions are asked, each derived attribute's description and rationale, each
    constraint's rationale, and each field's label and question (the data dictionary)."""
    from engine.dictionary import FIELDS

    texts: list[tuple[str, str]] = []
    for rule in RULESET.rules:
        texts.append((f"{rule.id} message", rule.meta.message))
        texts.append((f"{rule.id} rationale", rule.meta.rationale))
        if rule.meta.asks_because:
            texts.append((f"{rule.id} asks_because", rule.meta.asks_because))
    for spec in FIELDS:
        texts.append((f"{spec.name} label", spec.label))
        if spec.question:
            texts.append((f"{spec.name} question", spec.question))
    for derived in RULESET.derived:
        texts.append((f"{derived.meta.id} description", derived.meta.description))
        texts.append((f"{derived.meta.id} rationale", derived.meta.rationale))
    for constraint in RULESET.constraints:
        texts.append((f"{constraint.meta.id} rationale", constraint.meta.rationale))
    return texts


def patient_texts() -> list[tuple[str, str]]:
    """(where, text) for every text the patient summary prints from a rule: its patient text
    and, for a red flag, each warning symptom of its safety net (issue 30). The clinician reads
    them before handing the page over, and the patient reads them after: no engine words either."""
    texts: list[tuple[str, str]] = []
    for rule in RULESET.rules:
        if rule.meta.patient:
            texts.append((f"{rule.id} patient", rule.meta.patient))
        if rule.meta.safety_net:
            texts += [(f"{rule.id} safety_net", s) for s in rule.meta.safety_net.symptoms]
    return texts


@pytest.mark.parametrize(
    ("where", "text"), clinical_texts() + patient_texts(), ids=lambda v: str(v)[:24]
)
def test_clinical_text_has_no_engine_vocabulary(where: str, text: str) -> None:
    found = sorted({m.group(0) for m in ENGINE_WORDS.finditer(" ".join(text.split()))})
    assert not found, f"{where}: {found}"


def test_patient_texts_are_among_the_texts_checked() -> None:
    """Every rule's patient text and every warning symptom goes through the vocabulary test."""
    checked = {where for where, _ in patient_texts()}
    assert {f"{rule.id} patient" for rule in RULESET.rules} <= checked
    red_flags = {r.id for r in RULESET.rules if r.meta.safety_net}
    assert red_flags
    assert {f"{r} safety_net" for r in red_flags} <= checked


def test_the_vocabulary_test_catches_what_it_is_meant_to() -> None:
    for phrase in [
        "the fusion test in `when` keeps a case",
        "Age is always recorded, so the rule needs no scope",
        "a lumbar case settles it false",
        "any case that records the abscess or spondylodiscitis field",
        "now gets this rule as conditional (CON-002)",
        "asked when herniation_migration_grade is unknown",
        "class 3 when sva_mm >= 60",
        "a deviation from the catalogue, verified (§8)",
    ]:
        assert ENGINE_WORDS.search(phrase), phrase
    for clinical in [
        "SVA of 60 mm or more (≥ 6 cm) is class 3",
        "The role of MIS is unknown; open reduction is preferred.",
        "Asked of infection cases, and read whenever an abscess is recorded.",
        'PI-LL above 20 deg is the SRS-Schwab "++" modifier',
    ]:
        assert ENGINE_WORDS.search(clinical) is None, clinical


# --- evidence labels (issue 28 item 3) -----------------------------------------------------------

# a message that quotes a result: a percentage, a volume, a stay, a dose, a ratio or a comparison
FIGURES = re.compile(r"\d+(?:\.\d+)?\s*(?:%|mL|days?|mGy|times)|\bvs\b")


@pytest.mark.parametrize("rule", RULESET.rules, ids=lambda r: r.id)
def test_a_message_figure_and_its_label_come_from_one_source(rule: object) -> None:
    """When a message quotes figures and the rule's sources are of different levels, one source
    is named as the figures' (`figures: true`) and the label a report prints is that source's:
    a level-1 label beside a level-3 review's numbers is what this prevents (BEN-005)."""
    from engine.models import evidence_label

    meta = rule.meta  # type: ignore[attr-defined]
    levels = {s.evidence_level for s in meta.sources if s.evidence_level is not None}
    quoted = [s for s in meta.sources if s.figures]
    if FIGURES.search(meta.message) and len(levels) > 1:
        assert len(quoted) == 1, f"{meta.id}: name the source of the message's figures"
    if quoted:
        assert evidence_label(meta.sources) == evidence_label(quoted)


def test_a_figures_source_sets_the_label_even_when_a_better_one_is_cited() -> None:
    from engine.models import SourceRef, evidence_label

    review = SourceRef(
        citation="a meta-analysis of cohorts", design="systematic_review_observational"
    )
    trials = SourceRef(citation="a review of RCTs", design="systematic_review_rct")
    assert evidence_label([review, trials]).endswith("level 1")
    quoted = review.model_copy(update={"figures": True})
    assert evidence_label([quoted, trials]) == evidence_label([review])


def test_no_bundled_source_has_an_unknown_design() -> None:
    """Every source's design was checked (issue 28); one that cannot be found is removed, so
    no `design: unknown` is left in the bundled rules."""
    unknown = [
        f"{item.meta.id}: {s.citation[:50]}"
        for item in [*RULESET.rules, *RULESET.derived, *RULESET.constraints]
        for s in item.meta.sources
        if s.design.value == "unknown"
    ]
    assert not unknown, unknown


def test_one_citation_has_one_design() -> None:
    """A paper cited by several rules is labelled the same in each (issue 28: "Luo 2024")."""
    designs: dict[str, set[str]] = {}
    for item in [*RULESET.rules, *RULESET.derived, *RULESET.constraints]:
        for s in item.meta.sources:
            key = s.doi or s.pmid or s.citation
            designs.setdefault(key, set()).add(s.design.value)
    assert {k: v for k, v in designs.items() if len(v) > 1} == {}


def test_every_rule_that_can_raise_a_deciding_question_says_why_it_is_asked() -> None:
    """The form, the reports and the card explain a deciding question (red flag, major) with
    the rule's `asks_because`; the message, what a fired rule concludes, is only the fallback.
    Every red-flag and major rule that reads a field a clinician can answer has one, and so
    does every caution (its questions are listed as cautions not yet excluded)."""
    from engine.dictionary import INPUT_FIELDS

    inputs = set(INPUT_FIELDS)
    lacking = [
        rule.id
        for rule in RULESET.rules
        if rule.meta.severity.value in ("red_flag", "major", "caution")
        and inputs & {*rule.fields, *RULESET.explanation_inputs[rule.id]}
        and not rule.meta.asks_because
    ]
    assert lacking == []
