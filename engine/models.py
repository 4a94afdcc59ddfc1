"""The pydantic types every step shares: the case, the rule files, outcomes and the result.

No I/O here. JSON keys of Result follow field order, which is the published output contract.
"""

# No `from __future__ import annotations` here: pydantic reads every field's annotation when it
# builds a model, at each start, and as strings it would compile and evaluate them all (about
# 2 ms of a cold `screen`); the few that name a class not yet defined are quoted instead.
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

from engine.dictionary import FIELDS, FieldSpec, FieldType

if TYPE_CHECKING:  # the ruleset a result was screened with (Result.patient_summary)
    from engine.rules.ruleset import Ruleset

Scalar = bool | int | float | str
# A site profile's setting: one value for every case, or (surgeon_mis_cases) one per mis_technique
SiteValue = Scalar | dict[str, int]
SiteProfile = dict[str, SiteValue]

DISCLAIMER = (
    "miss-screen is a screening aid to support a conversation between clinician and patient. "
    "It is not a diagnosis, a recommendation or an order to operate; the treating surgeon decides."
)


class Verdict(StrEnum):
    """The fixed verdict vocabulary, highest first."""

    urgent_review = "urgent_review"
    not_favoured = "not_favoured"
    insufficient_data = "insufficient_data"
    discuss_with_caution = "discuss_with_caution"
    worth_discussing = "worth_discussing"


class Severity(StrEnum):
    """How much a finding weighs, highest first."""

    red_flag = "red_flag"
    major = "major"
    caution = "caution"
    info = "info"


SEVERITY_ORDER = {s: i for i, s in enumerate(Severity)}


class Category(StrEnum):
    access = "access"
    complexity = "complexity"
    radiation = "radiation"
    cost = "cost"
    evidence = "evidence"
    benefit = "benefit"
    red_flag = "red_flag"
    indication = "indication"


CATEGORY_PREFIX = {
    Category.access: "ACC",
    Category.complexity: "CPX",
    Category.radiation: "RAD",
    Category.cost: "EQP",
    Category.evidence: "EVD",
    Category.benefit: "BEN",
    Category.red_flag: "RED",
    Category.indication: "IND",
}


class Claim(StrEnum):
    """The ten classic points of MISS (five advantages, five limits)."""

    less_tissue_disruption = "less_tissue_disruption"
    faster_recovery = "faster_recovery"
    less_pain_and_scarring = "less_pain_and_scarring"
    lower_infection_risk = "lower_infection_risk"
    improved_accuracy = "improved_accuracy"
    limited_access = "limited_access"
    learning_curve = "learning_curve"
    equipment_cost = "equipment_cost"
    radiation_exposure = "radiation_exposure"
    limited_long_term_research = "limited_long_term_research"


class RuleStatus(StrEnum):
    """What one rule concluded about one case."""

    fired = "fired"
    not_fired = "not_fired"
    not_evaluable = "not_evaluable"
    not_applicable = "not_applicable"
    conditional = "conditional"


class Evidence(StrEnum):
    """The rule author's check of a rule's citations (not its level of evidence)."""

    V = "V"
    P = "P"
    M = "M"


# shown by `rules show` and the rule docs, never in a screening report
CITATION_WORDS = {"V": "verified", "P": "partly verified (secondary)", "M": "recalled"}


_STRICT = ConfigDict(extra="forbid", frozen=True)


# Empty defaults come from these two functions, not from the builtins `list` and `dict`: pydantic
# reads a default factory's signature when it builds a model, and for a builtin `inspect` parses
# the signature's text with the tokenizer (10 fields: about 28M instructions, 1.7 % of a cold
# `screen`, benchmarks/results.md); a Python function's signature is read directly.
def _no_items() -> list[Any]:
    return []


def _no_values() -> dict[str, Any]:
    return {}


# the result's JSON contract; the minor number grows with each additive key (1.1: open_cautions,
# deciding_questions, schema_version)
RESULT_SCHEMA_VERSION = "1.1"

# --- the case ---------------------------------------------------------------------------------


def _parse_bool(value: object) -> object:
    """A boolean, or 0/1; words (`yes`, `Y`, `true`) were read before, by engine.io.normalise."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("not a boolean")


def _reject_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def _case_field(spec: FieldSpec) -> tuple[Any, Any]:
    if spec.name == "case_id":
        return (str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$"))
    annotation: Any
    if spec.type is FieldType.boolean:
        annotation = Annotated[bool | None, BeforeValidator(_parse_bool)]
    elif spec.type is FieldType.enum:
        annotation = Literal[spec.values] | None
    elif spec.type is FieldType.string:
        annotation = str | None
    else:
        base = int if spec.type is FieldType.integer else float
        annotation = Annotated[base | None, BeforeValidator(_reject_bool)]
    constraints: dict[str, Any] = {}
    if spec.minimum is not None:
        constraints["ge"] = spec.minimum
    if spec.maximum is not None:
        constraints["le"] = spec.maximum
    description = spec.unit or None
    return (annotation, Field(None, description=description, **constraints))


Case: type[BaseModel] = create_model(  # type: ignore[call-overload]  # fields built from data
    "Case",
    __config__=ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False),
    __doc__="One anonymised case; every field but case_id is optional and missing means unknown.",
    **{spec.name: _case_field(spec) for spec in FIELDS if spec.group != "derived"},
)

# --- rule files -------------------------------------------------------------------------------


class Design(StrEnum):
    """The study design of a source, which sets its Oxford CEBM 2011 level of evidence."""

    systematic_review_rct = "systematic_review_rct"
    rct = "rct"
    systematic_review_observational = "systematic_review_observational"
    cohort = "cohort"
    case_control = "case_control"
    case_series = "case_series"
    mechanism = "mechanism"
    expert_opinion = "expert_opinion"
    guideline = "guideline"
    unknown = "unknown"


# Oxford CEBM 2011 levels (treatment benefits and harms): 1 systematic review of randomised
# trials, 2 randomised trial, 3 non-randomised cohort (a systematic review of such studies is
# graded by its studies), 4 case series or case-control, 5 mechanism-based reasoning or expert
# opinion. A guideline is not a study design: its level is that of the evidence it grades, so it
# has none of its own; an unknown design has no level either.
CEBM_LEVEL: dict[Design, int | None] = {
    Design.systematic_review_rct: 1,
    Design.rct: 2,
    Design.systematic_review_observational: 3,
    Design.cohort: 3,
    Design.case_control: 4,
    Design.case_series: 4,
    Design.mechanism: 5,
    Design.expert_opinion: 5,
    Design.guideline: None,
    Design.unknown: None,
}

DESIGN_WORDS: dict[Design, str] = {
    Design.systematic_review_rct: "systematic review of RCTs",
    Design.rct: "RCT",
    Design.systematic_review_observational: "systematic review of observational studies",
    Design.cohort: "cohort study",
    Design.case_control: "case-control study",
    Design.case_series: "case series",
    Design.mechanism: "mechanism-based reasoning",
    Design.expert_opinion: "expert opinion",
    Design.guideline: "guideline",
    Design.unknown: "design unknown",
}


class SourceRef(BaseModel):
    """A citation behind a rule, with a DOI, PMID or URL where one is known, and its study
    design, which sets its Oxford CEBM 2011 level of evidence (`evidence_level`, 1 best)."""

    model_config = _STRICT
    citation: str = Field(min_length=3)
    doi: str | None = None
    pmid: str | None = None
    url: str | None = None
    design: Design = Design.unknown
    evidence_level: int | None = None
    # the rule's message quotes this source's figures: its label is the rule's label
    figures: bool = False

    @model_validator(mode="after")
    def _level_from_design(self) -> "SourceRef":
        level = CEBM_LEVEL[self.design]
        if self.evidence_level is None:
            object.__setattr__(self, "evidence_level", level)
        elif self.evidence_level != level:
            raise ValueError(
                f"evidence_level {self.evidence_level} does not match design {self.design.value} "
                f"(level {level}); leave evidence_level out, it follows from the design"
            )
        return self


def best_evidence(sources: list[SourceRef]) -> SourceRef | None:
    """The source with the best (lowest) CEBM level; None when no source has a level."""
    graded = [s for s in sources if s.evidence_level is not None]
    return min(graded, key=lambda s: s.evidence_level or 0) if graded else None


def evidence_label(sources: list[SourceRef]) -> str:
    """A rule's evidence as a clinician reads it, from its best source: "RCT · level 2"; or
    from the source its message's figures come from (`figures: true`), so that a figure and
    the label beside it always belong to the same study."""
    quoted = [s for s in sources if s.figures]
    if quoted:
        sources = quoted
    best = best_evidence(sources)
    if best is None:
        designs = {s.design for s in sources}
        return DESIGN_WORDS[Design.guideline if Design.guideline in designs else Design.unknown]
    return f"{DESIGN_WORDS[best.design]} · level {best.evidence_level}"


class SafetyNet(BaseModel):
    """A red flag's warning symptoms, as the patient summary lists them while the red flag's
    question is still open: plain words, from a cited safety-netting source."""

    model_config = _STRICT
    symptoms: list[str] = Field(min_length=1)
    sources: list[SourceRef] = Field(min_length=1)


class GoldenCase(BaseModel):
    """A named case and what a rule is expected to conclude about it."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    case: dict[str, Any] = Field(default_factory=_no_values)
    missing: list[str] | None = None


class GoldenCases(BaseModel):
    model_config = _STRICT
    fires: list[GoldenCase] = Field(default_factory=_no_items)
    does_not_fire: list[GoldenCase] = Field(default_factory=_no_items)
    not_evaluable: list[GoldenCase] = Field(default_factory=_no_items)
    conditional: list[GoldenCase] = Field(default_factory=_no_items)


class RuleFile(BaseModel):
    """A screening rule as written in rules/<category>/<id>-<name>.yaml."""

    model_config = _STRICT
    id: str = Field(pattern=r"^[A-Z]{3}-\d{3}$")
    name: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    category: Category
    severity: Severity
    claims: list[Claim] = Field(default_factory=_no_items)
    scope: str | None = None
    when: str
    message: str = Field(min_length=3)
    # why the rule's questions are asked, for the clinician (the form, the reports, the card);
    # one or two sentences, so the form stays readable; the message stands in where absent
    asks_because: str | None = Field(default=None, min_length=10, max_length=300)
    # what the finding means for the patient, in everyday words (the patient summary, issue 30):
    # no rule id, no field name, no advice on what to decide; a figure only if `message` and
    # its source carry it. English; a translation overrides it by rule id (rules/patient/)
    patient: str | None = Field(default=None, min_length=10, max_length=300)
    # a red flag's warning symptoms to seek urgent care for while its question is open
    safety_net: SafetyNet | None = None
    rationale: str = Field(min_length=3)
    sources: list[SourceRef] = Field(min_length=1)
    evidence: Evidence
    provisional: bool
    notes: str | None = None
    aliases: list[str] = Field(default_factory=_no_items)
    cases: GoldenCases | None = None

    @model_validator(mode="after")
    def _one_figures_source(self) -> "RuleFile":
        """The message's figures come from one source (`figures: true`), or none is named."""
        if sum(source.figures for source in self.sources) > 1:
            raise ValueError("sources: only one source may take figures: true")
        if self.safety_net is not None and self.severity is not Severity.red_flag:
            raise ValueError("safety_net: only a red_flag rule lists warning symptoms")
        return self


class DerivedBand(BaseModel):
    model_config = _STRICT
    when: str
    value: Scalar


class PointsTerm(BaseModel):
    """One component of a points score: an enum field and the points of each of its values."""

    model_config = _STRICT
    field: str
    values: dict[str, int]


class DerivedGolden(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    case: dict[str, Any] = Field(default_factory=_no_values)
    expected: Scalar | None


class DerivedFile(BaseModel):
    """A derived attribute as written in rules/derived/<id>-<name>.yaml."""

    model_config = _STRICT
    id: str = Field(pattern=r"^DER-\d{3}$")
    name: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    field: str
    description: str
    rationale: str
    evidence: Evidence
    provisional: bool
    notes: str | None = None
    sources: list[SourceRef] = Field(min_length=1)
    aliases: list[str] = Field(default_factory=_no_items)
    expression: str | None = None
    bands: list[DerivedBand] | None = None
    condition: str | None = None
    points: list[PointsTerm] | None = None
    supplied_total: str | None = None
    cases: list[DerivedGolden] = Field(min_length=1)


class Narrowing(BaseModel):
    model_config = _STRICT
    when: str
    allowed: list[Scalar] = Field(min_length=1)


class ConstraintFile(BaseModel):
    """One constraint of rules/constraints.yaml: known facts that narrow an unknown field."""

    model_config = _STRICT
    id: str = Field(pattern=r"^CON-\d{3}$")
    name: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    field: str
    narrowings: list[Narrowing] = Field(min_length=1)
    rationale: str
    evidence: Evidence
    notes: str | None = None
    sources: list[SourceRef] = Field(min_length=1)


class ConstraintsFile(BaseModel):
    model_config = _STRICT
    constraints: list[ConstraintFile]


class PolicyCondition(BaseModel):
    model_config = _STRICT
    status: Literal["fired", "not_evaluable"]
    severity: list[Severity] = Field(min_length=1)


class PolicyEntry(BaseModel):
    """One verdict of rules/policy.yaml and when it holds (docs/rule-format.md)."""

    model_config = _STRICT
    verdict: Verdict
    if_any: PolicyCondition | None = None
    # also holds when a verdict below it would be given but an open rule could still change it
    if_undecided: bool = False
    summary: str


class OpenListing(BaseModel):
    """Severities whose open rules never hold a verdict back; they are listed instead."""

    model_config = _STRICT
    severity: list[Severity] = Field(min_length=1)


class PolicyFile(BaseModel):
    model_config = _STRICT
    verdicts: list[PolicyEntry]
    # open rules of these severities are listed (Result.open_cautions); if_undecided ignores them
    open_cautions: OpenListing | None = None

    @model_validator(mode="after")
    def _listed_never_select(self) -> "PolicyFile":
        """A severity whose open rules are only listed cannot also select a verdict when open."""
        if self.open_cautions is not None:
            listed = set(self.open_cautions.severity)
            for entry in self.verdicts:
                if entry.if_any and entry.if_any.status == "not_evaluable":
                    both = sorted(s.value for s in listed & set(entry.if_any.severity))
                    if both:
                        raise ValueError(
                            f"open_cautions lists {', '.join(both)}, which also selects "
                            f"{entry.verdict.value} when not evaluable"
                        )
        return self


class RulesetFile(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    description: str = ""


# --- outcomes and the result (the output contract) --------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One rule's conclusion about one case, as an evaluator reports it.

    A plain dataclass, not a pydantic model: one is built per rule per case on the hot path.
    """

    rule_id: str
    status: RuleStatus
    missing: tuple[str, ...] = ()


_SETTLED: dict[tuple[str, RuleStatus], RuleOutcome] = {}


def settled_outcome(rule_id: str, status: RuleStatus) -> RuleOutcome:
    """The outcome of a rule with nothing missing: one shared object per rule and status.

    Outcomes are immutable, so every case shares it; batch counting relies on that identity to
    skip each case's many not-applicable and not-fired rules (Ruleset.baseline_outcomes).
    """
    key = (rule_id, status)
    settled = _SETTLED.get(key)
    if settled is None:
        settled = _SETTLED[key] = RuleOutcome(rule_id=rule_id, status=status)
    return settled


class Finding(BaseModel):
    """A rule that fired, with the values that triggered it and where it comes from."""

    model_config = _STRICT
    rule_id: str
    name: str
    category: Category
    severity: Severity
    message: str
    rationale: str
    sources: list[SourceRef]
    evidence: Evidence
    provisional: bool
    values: dict[str, Scalar]


class ConditionalFinding(Finding):
    """A rule that would apply if its scope held (e.g. if LLIF is considered)."""

    scope: str
    missing: list[str] = Field(default_factory=_no_items)


class NotEvaluable(BaseModel):
    """A rule that could not be settled, and the data that would settle it."""

    model_config = _STRICT
    rule_id: str
    name: str
    severity: Severity
    missing: list[str]
    can_change_verdict: bool  # settling it either way could give another verdict


class OpenCaution(BaseModel):
    """An open rule of a listed severity (rules/policy.yaml open_cautions): a caution not yet
    excluded, which never holds the verdict back, with the fields that would settle it."""

    model_config = _STRICT
    rule_id: str
    name: str
    message: str
    missing: list[str]
    can_change_verdict: bool


class Inferred(BaseModel):
    """A value the constraints left as the only one possible."""

    model_config = _STRICT
    field: str
    value: Scalar
    constraint: str


class RulesetStamp(BaseModel):
    model_config = _STRICT
    name: str
    version: str
    sha256: str


class Result(BaseModel):
    """The screening result of one case: the published JSON output contract."""

    model_config = _STRICT
    case_id: str
    verdict: Verdict
    summary: str
    findings: list[Finding]
    conditional: list[ConditionalFinding]
    not_evaluable: list[NotEvaluable]
    derived: dict[str, Scalar]
    inferred: list[Inferred]
    assumed: dict[str, Scalar]
    ruleset: RulesetStamp
    tool_version: str
    disclaimer: str = DISCLAIMER
    # the verdicts still reachable if every not-evaluable rule resolved either way, best first
    possible_verdicts: list[Verdict]
    possible_verdicts_exact: bool  # false: a bound (every reachable verdict listed, maybe more)
    next_questions: list[str]  # fields that can change the verdict, most decisive first
    # the next_questions a red-flag or major rule needs (the deciding ones), in the same order
    deciding_questions: list[str] = Field(default_factory=_no_items)
    open_cautions: list[OpenCaution] = Field(default_factory=_no_items)  # cautions not yet excluded
    schema_version: str = RESULT_SCHEMA_VERSION

    def patient_summary(
        self,
        format: Literal["text", "html"] = "text",
        *,
        case: Mapping[str, object] | None = None,
        rules: "Ruleset | str | Path | None" = None,
        language: str = "en",
    ) -> str:
        """The plain-language summary to hand to the patient, as text or one printable HTML page
        (engine/report/patient.py; `miss-screen screen CASE --for patient`).

        `rules`: the Ruleset or rules directory the result was screened with (default: the
        bundled rules; another gives an error, never other words). `case`: the case as screened,
        so that "what was looked at" names every field it gives that a rule reads (its values are
        never shown); without it, only the fields behind the findings are named, and the page
        says the list may be incomplete.
        """
        # imported here: a report module sits above the models, and most results are never
        # summarised for a patient (pyproject.toml's import-linter contract allows this one)
        from engine.report.patient import patient_summary

        return patient_summary(self, rules, output_format=format, case=case, language=language)

    def _repr_html_(self) -> str:
        """A short view for Jupyter: verdict, red flags, findings, questions (all escaped)."""
        red = [f for f in self.findings if f.severity is Severity.red_flag]
        open_red = sorted(
            {
                m
                for n in self.not_evaluable
                if n.can_change_verdict and n.severity is Severity.red_flag
                for m in n.missing
            }
        )
        parts = [
            f"<div><b>{escape(self.case_id)}</b>: <b>{escape(self.verdict.value)}</b>"
            f" <small>({escape(self.ruleset.name)} {escape(self.ruleset.version)})</small>"
            f"<br><small>{escape(self.summary)}</small>"
        ]
        if red or open_red:
            items = [f"<li>{escape(f.rule_id)}: {escape(f.message)}</li>" for f in red]
            if open_red:
                items.append(f"<li>not yet excluded: {escape(', '.join(open_red))}</li>")
            parts.append(f"<p><b>Red flags</b></p><ul>{''.join(items)}</ul>")
        others = [f for f in self.findings if f.severity is not Severity.red_flag]
        if others:
            rows = "".join(
                f"<tr><td>{escape(f.rule_id)}</td><td>{escape(f.severity.value)}</td>"
                f"<td>{escape(f.message)}</td></tr>"
                for f in others
            )
            parts.append(f"<p><b>Findings</b></p><table>{rows}</table>")
        else:
            parts.append("<p><b>Findings</b>: none</p>")
        if self.next_questions:
            parts.append(
                "<p><b>Questions that can change the verdict</b> (ask first): "
                f"{escape(', '.join(self.next_questions))}</p>"
            )
        return "".join(parts) + "</div>"
