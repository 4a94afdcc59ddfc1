"""The one-page summary the clinician hands to the patient: plain words, balanced, no identifier.

Built from a Result and the ruleset it was screened with: the fired red flags first, as a reason
to be seen urgently; a red flag still open lists its warning signs (the rule's `safety_net`, with
its source); then what was looked at, what speaks for a minimally invasive approach (the fired
benefits), what to talk through (the other fired findings, and the questions still open), the
closing that surgeon and patient decide together, and the disclaimer. Every word is a rule's
`patient:` text or comes from rules/patient/<language>.yaml (engine/report/patient_words.py);
nothing shows a rule id, a field name, the case id or a value of the case.

A rule the summary must show without a patient text is an error, never a skipped finding: a
patient page that silently leaves out a limit would not be balanced (IPDAS), and one that falls
back to the clinical message would not be plain.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.dictionary import FIELDS, SETTING_FIELDS
from engine.errors import RuleFileError, UsageError
from engine.models import Category, Result, Severity, SourceRef
from engine.report.case_html import source_link
from engine.report.html import report_environment
from engine.report.patient_words import ENGLISH, PatientWords, load_patient_words
from engine.rules.bundled import bundled_rules_dir
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Rule, Ruleset

SummaryFormat = Literal["text", "html"]
FORMATS: tuple[SummaryFormat, ...] = ("text", "html")
TEXT_WIDTH = 76
_FIELD_ORDER = {spec.name: i for i, spec in enumerate(FIELDS)}


@dataclass(frozen=True)
class Source:
    """A cited source as the page names it: the citation in full (the link's title, and the
    text output when it has no address) and up to its first full stop, colon or comma (its
    author or publisher, with the address: what the page and the text print, so the warning
    signs of every open red flag and their sources fit one page and read plainly)."""

    citation: str
    short: str
    href: str | None


def source_of(ref: SourceRef) -> Source:
    """A source with the best address it has (engine/report/case_html.py source_link)."""
    first = re.split(r"\. |: |, ", ref.citation, maxsplit=1)[0]
    return Source(ref.citation, first if len(first) >= 3 else ref.citation, source_link(ref).href)


@dataclass(frozen=True)
class Section:
    """One block of the page: a heading (or none), a lead, items, and sources below them."""

    key: str  # the HTML id
    heading: str
    lead: str = ""
    items: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    source_lead: str = ""
    urgent: bool = False
    # short words, not sentences (the fields looked at, the questions open): one paragraph on
    # the printed page ("...: your age; the operation planned."), so that every open question
    # still fits one page; a list of sentences in the text ("  - Your age.")
    inline: bool = False


@dataclass(frozen=True)
class PatientSummary:
    """Every text of the page, in reading order; renderers only lay it out."""

    language: str
    title: str
    intro: str
    sections: tuple[Section, ...]
    disclaimer: str
    made_by: str


# --- building ------------------------------------------------------------------------------------


def relevant_fields(ruleset: Ruleset) -> frozenset[str]:
    """Every case field a screening rule reads, directly or through a derived attribute."""
    derived = ruleset.derived_by_field
    seen: set[str] = set()
    todo = list(ruleset.fields_read)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += derived[name].inputs if name in derived else ()
    return frozenset(seen - set(derived))


def _patient_text(rule: Rule, words: PatientWords) -> str:
    """A rule's text for the patient in the page's language; an error when it has none."""
    if words.language == ENGLISH:
        text = rule.meta.patient
    else:
        own = words.rules.get(rule.id)
        text = own.patient if own is not None else None
    if text is None:
        where = rule.path if words.language == ENGLISH else f"rules/patient/{words.language}.yaml"
        raise RuleFileError(
            f"{rule.id} has no patient text ({words.language}); the patient summary shows it, "
            "so it needs one (`patient:`)",
            where,
        )
    return " ".join(text.split())


def _safety_net(rule: Rule, words: PatientWords) -> tuple[list[str], list[SourceRef]]:
    """An open red flag's warning signs and their sources; an error when it lists none."""
    net = rule.meta.safety_net
    if net is None:
        raise RuleFileError(
            f"{rule.id} is a red flag without warning signs; while it is open the patient "
            "summary lists them, so it needs `safety_net:`",
            rule.path,
        )
    symptoms = list(net.symptoms)
    if words.language != ENGLISH:
        own = words.rules.get(rule.id)
        translated = own.safety_net if own is not None else None
        if translated is None or len(translated) != len(symptoms):
            raise RuleFileError(
                f"{rule.id} needs its {len(symptoms)} warning signs in {words.language} "
                "(`safety_net:` under its id in `rules:`)",
                f"rules/patient/{words.language}.yaml",
            )
        symptoms = translated
    return [" ".join(s.split()) for s in symptoms], list(net.sources)


def _field_words(names: Iterable[str], words: PatientWords) -> tuple[str, ...]:
    """The words of each field, each said once, in the order given."""
    said: dict[str, None] = {}
    for name in names:
        text = words.fields.get(name)
        if text is None:
            raise RuleFileError(
                f"no words for the case field {name} under `fields:`",
                f"rules/patient/{words.language}.yaml",
            )
        said[text] = None
    return tuple(said)


def _looked_at(
    result: Result, ruleset: Ruleset, case: Mapping[str, object] | None
) -> tuple[list[str], bool]:
    """The fields looked at, in data-dictionary order, and whether the list is complete: the
    fields the case gives that a rule reads, or (without the case) those behind the findings."""
    relevant = relevant_fields(ruleset)
    if case is not None:
        given = {name for name, value in case.items() if value is not None}
        complete = True
    else:
        given = {n for f in [*result.findings, *result.conditional] for n in f.values}
        complete = False
    given |= set(result.assumed)
    return sorted(given & relevant, key=_FIELD_ORDER.__getitem__), complete


def _open_fields(result: Result) -> list[str]:
    """The questions still open: those that can change the verdict, most decisive first, then
    the cautions not yet excluded; each field once."""
    cautions = [m for c in result.open_cautions for m in c.missing]
    return list(dict.fromkeys([*result.deciding_questions, *result.next_questions, *cautions]))


def build_patient_summary(
    result: Result,
    ruleset: Ruleset,
    *,
    case: Mapping[str, object] | None = None,
    language: str = ENGLISH,
) -> PatientSummary:
    """Every text of the summary of one result. `case`: the case as screened; only which fields
    it gives is read (for "what was looked at"), never a value."""
    if result.ruleset.sha256 != ruleset.sha256:
        raise UsageError(
            f"this result was screened with rule set {result.ruleset.name} "
            f"{result.ruleset.version} (sha256 {result.ruleset.sha256[:12]}), not with "
            f"{ruleset.name} {ruleset.version}: give the rules it was screened with"
        )
    words = load_patient_words(ruleset.directory, language)
    by_id = ruleset.by_id
    sections: list[Section] = []

    red = [f for f in result.findings if f.severity is Severity.red_flag]
    if red:
        sections.append(
            Section(
                "urgent",
                words.urgent.heading,
                words.urgent.lead,
                _unique(_patient_text(by_id[f.rule_id], words) for f in red),
                urgent=True,
            )
        )
    open_ids = [n.rule_id for n in result.not_evaluable if n.severity is Severity.red_flag]
    open_ids += [c.rule_id for c in result.conditional if c.severity is Severity.red_flag]
    open_red = [by_id[rule_id] for rule_id in dict.fromkeys(open_ids)]
    if open_red:
        nets = [_safety_net(rule, words) for rule in sorted(open_red, key=lambda r: r.id)]
        sources = {s.citation: s for _, refs in nets for s in refs}
        sections.append(
            Section(
                "safety-net",
                words.safety_net.heading,
                words.safety_net.lead,
                _unique(s for symptoms, _ in nets for s in symptoms),
                tuple(map(source_of, sources.values())),
                words.safety_net.source,
                urgent=True,
            )
        )

    looked, complete = _looked_at(result, ruleset, case)
    sections.append(
        Section(
            "looked-at",
            words.looked_at.heading,
            (words.looked_at.lead if complete else words.looked_at.lead_partial)
            if looked
            else words.looked_at.none,
            _field_words(looked, words),
            inline=True,
        )
    )
    benefits = [f for f in result.findings if f.category is Category.benefit]
    limits = [
        f
        for f in result.findings
        if f.category is not Category.benefit and f.severity is not Severity.red_flag
    ]
    # with nothing about the patient given, "found no special reason" would say nothing true:
    # the sections are left out unless something fired (the check section says all is to come)
    if benefits or looked:
        sections.append(
            Section(
                "benefits",
                words.benefits.heading,
                "" if benefits else words.benefits.none,
                _unique(_patient_text(by_id[f.rule_id], words) for f in benefits),
            )
        )
    if limits or looked:
        sections.append(
            Section(
                "talk",
                words.talk.heading,
                "" if limits else words.talk.none,
                _unique(_patient_text(by_id[f.rule_id], words) for f in limits),
            )
        )
    # a red flag's own questions are said by its warning signs above ("not yet ruled out")
    covered = {m for n in result.not_evaluable if n.rule_id in open_ids for m in n.missing}
    still = [n for n in _open_fields(result) if n not in covered]
    patient_side = [n for n in still if n not in SETTING_FIELDS]
    hospital_side = [n for n in still if n in SETTING_FIELDS]
    if patient_side and not looked:
        # nothing about the patient given yet (the web form's first step): every question is
        # open, said in one sentence rather than a list that would push the page onto a second
        sections.append(Section("check", words.check.heading, words.check.lead_all))
    elif patient_side:
        sections.append(
            Section(
                "check",
                words.check.heading,
                words.check.lead,
                _field_words(patient_side, words),
                inline=True,
            )
        )
    if hospital_side:
        sections.append(
            Section(
                "ask-team",
                "" if patient_side else words.check.heading,
                words.ask_team.lead,
                _field_words(hospital_side, words),
                inline=True,
            )
        )
    sections.append(Section("closing", words.closing.heading, words.closing.text))
    return PatientSummary(
        language=words.language,
        title=words.title,
        intro=" ".join(words.intro.split()),
        sections=tuple(
            dataclasses.replace(
                s,
                lead=" ".join(s.lead.split()),
                items=s.items if s.inline else _unique(map(as_sentence, s.items)),
            )
            for s in sections
        ),
        disclaimer=" ".join(words.disclaimer.split()),
        made_by=words.made_by_line(
            {
                "tool_version": result.tool_version,
                "ruleset": result.ruleset.name,
                "ruleset_version": result.ruleset.version,
            }
        ),
    )


def _unique(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(texts))


def as_sentence(text: str) -> str:
    """A list item as the page prints it: capitalised and ending with a full stop (or its own
    ? or !). A reader, and a readability measure, takes an item as a sentence of its own; an
    unpunctuated item would run on into the next one ("your age the operation planned ...")."""
    text = " ".join(text.split())
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text[-1] in ".!?" else ".")


# --- rendering -----------------------------------------------------------------------------------


def render_patient_text(summary: PatientSummary, width: int = TEXT_WIDTH) -> str:
    """The summary as plain wrapped text (no markup, no colour): what `--for patient` prints."""
    fill = functools.partial(textwrap.fill, width=width, break_on_hyphens=False)
    lines = [summary.title, "=" * min(len(summary.title), width), "", fill(summary.intro)]
    for section in summary.sections:
        lines.append("")
        if section.heading:
            heading = section.heading.upper() if section.urgent else section.heading
            lines += [heading, "-" * min(len(heading), width)]
        if section.lead:
            lines.append(fill(section.lead))
        lines += [
            fill(as_sentence(item), initial_indent="  - ", subsequent_indent="    ")
            for item in section.items
        ]
        if section.sources:
            lines.append(fill(section.source_lead))
            lines += [
                fill(  # an address is never broken inside: it must still work when copied
                    f"{s.short}: <{s.href}>." if s.href else as_sentence(s.citation),
                    initial_indent="  - ",
                    subsequent_indent="    ",
                    break_long_words=False,
                )
                for s in section.sources
            ]
    lines += ["", fill(summary.disclaimer), fill(summary.made_by)]
    return "\n".join(lines) + "\n"


def render_patient_html(summary: PatientSummary) -> str:
    """The summary as one printable page: inline CSS, no script, nothing fetched, all escaped."""
    return report_environment().get_template("patient.html.j2").render(summary=summary)


# --- the one entry point of every face ----------------------------------------------------------


@functools.cache
def _ruleset_at(directory: str) -> Ruleset:
    return load_ruleset(directory)


def ruleset_of(rules: Ruleset | str | Path | None) -> Ruleset:
    """The ruleset given, or loaded from a directory (default: the bundled rules), once."""
    if isinstance(rules, Ruleset):
        return rules
    return _ruleset_at(str(Path(rules if rules is not None else bundled_rules_dir()).resolve()))


def patient_summary(
    result: Result,
    rules: Ruleset | str | Path | None = None,
    *,
    output_format: str = "text",
    case: Mapping[str, object] | None = None,
    language: str = ENGLISH,
) -> str:
    """The patient summary of a result as text or HTML: `screen --for patient`, the web form's
    patient page and Result.patient_summary all call this."""
    if output_format not in FORMATS:
        raise UsageError(f"the patient summary is text or html, not {output_format[:20]!r}")
    summary = build_patient_summary(result, ruleset_of(rules), case=case, language=language)
    return render_patient_html(summary) if output_format == "html" else render_patient_text(summary)
