"""The web form at `/`: start from the facts a clinic always has, then ask only what can still
change the verdict, until it cannot.

Plain form posts rendered on the server (Jinja2, autoescaped): no JavaScript, no cookies, no
state kept between requests. Every answer so far travels in the form itself, visible and
editable. Fields, allowed values, units and ranges come from the data dictionary
(engine/dictionary.py), the same one the case model and `miss-screen schema case` are built
from. Each post is validated and screened by the service's one Screener; verdicts, ranked
questions and whether the verdict can still change are the engine's (engine/policy.py), never
decided here.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from base64 import b64encode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData

from engine.dictionary import (
    FIELDS,
    FIELDS_BY_NAME,
    INPUT_FIELDS,
    SETTING_FIELDS,
    FieldSpec,
    FieldType,
)
from engine.errors import CaseInputError, CaseProblem
from engine.io.deid import showable, shown_name
from engine.models import DISCLAIMER, Finding, Result, Scalar
from engine.report.case_html import render_case_html, source_link
from engine.report.patient import patient_summary
from engine.report.text import (
    CAUTIONS_HEADING,
    CAUTIONS_NOTE,
    SEVERITY_WORDS,
    VERDICT_WORDS,
    finding_summary,
    open_red_flags,
    possible_words,
    questions_by_field,
    scope_words,
    show_value,
    worked_out_words,
)
from engine.report.words import field_label, value_words
from engine.screener import Screener
from engine.service.app import ServiceConfig, config_of

router = APIRouter()

CASE_ID = "web-form"  # no identifier is ever asked: every case screened here has this id
SOURCE = "form"
# The facts a clinic always has: step one of every consultation.
START_FIELDS = ("age_years", "sex", "diagnosis", "lowest_level", "levels", "planned_procedure")
MAX_FIELDS = 200  # more fields than the dictionary holds: not a post of this form
MAX_TEXT = 200  # a longer value is no number, word or level of the dictionary

# Security headers of every response of the form (no inline script or style: CSP 'self').
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Widget:
    """One form field: what the template needs to render it, from the data dictionary."""

    name: str
    label: str
    kind: str  # "boolean" (yes / no / not known), "enum" (a select), "number" (text input)
    hint: str  # the allowed values in words, with unit and range (FieldSpec.expected)
    question: str  # the dictionary's short question, where the label alone is terse
    value: str  # the value to show, as posted ('' = not known)
    options: tuple[tuple[str, str], ...] = ()  # (value, words) of an enum
    inputmode: str = ""
    error: str | None = None
    why: tuple[str, ...] = ()  # the open rules that ask it, with why they ask it
    setting: bool = False  # a setting of the hospital, not of the patient

    @property
    def dom_id(self) -> str:
        return f"f-{self.name}"


def widget(spec: FieldSpec, value: str = "", error: str | None = None) -> Widget:
    """The form field of one data-dictionary field, holding `value` (the posted text)."""
    if spec.type is FieldType.boolean:
        kind = "boolean"
    elif spec.type is FieldType.enum:
        kind = "enum"
    else:
        kind = "number"
    inputmode = ""
    if kind == "number" and (spec.minimum is None or spec.minimum >= 0):  # no minus key needed
        inputmode = "numeric" if spec.type is FieldType.integer else "decimal"
    return Widget(
        name=spec.name,
        label=field_label(spec.name),
        question=spec.question,
        kind=kind,
        # a select lists its values itself; numbers say their kind, unit and range
        hint={"boolean": "yes, no or not known", "enum": ""}.get(kind, spec.expected()),
        value=value,
        # "unknown" is what the empty choice ("not known") already says: offered once
        options=tuple((v, value_words(v, spec.name)) for v in spec.values if v != "unknown"),
        inputmode=inputmode,
        error=error,
        setting=spec.name in SETTING_FIELDS,
    )


# --- reading a post ------------------------------------------------------------------------------


@dataclass
class Posted:
    """What one post of the form carries: the texts given per field, and problems found
    before validation (a field given twice, a form too large, names that may be data)."""

    texts: dict[str, str] = field(default_factory=dict)
    problems: list[CaseProblem] = field(default_factory=list)
    withheld: set[str] = field(default_factory=set)  # unknown names never shown nor validated


def shown_field_name(name: str) -> bool:
    """Whether an unknown posted field name may be echoed in an error.

    This form posts only dictionary names; any other comes from a hand-made post and may be a
    value (`mrn0012345`). It is shown only as the typo of a field ('slip_pct' for
    'slip_percent'): close to a dictionary name, without a digit, and shaped like a field name
    for engine/io/deid.py (`shown_name`)."""
    return (
        not any(c.isdigit() for c in name)
        and shown_name(name, INPUT_FIELDS) is not None
        and bool(difflib.get_close_matches(name.lower(), INPUT_FIELDS, 1, 0.6))
    )


def read_post(form: FormData) -> Posted:
    """The posted fields as text ('' = not known). A field given twice with different values is
    a problem, as a key given twice is in a case file: never silently the last one."""
    posted = Posted()
    for name, item in form.multi_items():
        text = item if isinstance(item, str) else ""
        if name == "case_id":  # fixed: no identifier is ever taken from the form
            continue
        if name not in FIELDS_BY_NAME and not shown_field_name(name):
            posted.withheld.add(name)
            continue
        text = text.strip()
        if name in posted.texts and posted.texts[name] != text:
            shown = name if name in FIELDS_BY_NAME else None
            posted.problems.append(
                CaseProblem(
                    shown,
                    "is given more than once; give each field once"
                    if shown
                    else "a field is given more than once; give each field once",
                )
            )
            continue
        posted.texts[name] = text
    return posted


def typed_value(name: str, text: str) -> Any:
    """A posted text as a case value. Numbers are read as decimal numbers (never YAML's octal
    '045'); a text that is no finite number is passed on as text, so validation names it as the
    CLI does. Booleans and enum codes are passed as text (the case model reads yes/no/true)."""
    spec = FIELDS_BY_NAME.get(name)
    if spec is None or not spec.is_numeric or len(text) > MAX_TEXT:
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


@dataclass
class Screened:
    """One post, validated and screened: the result, or the problems per field."""

    texts: dict[str, str]
    values: dict[str, Scalar]
    result: Result | None
    errors: dict[str, str]  # field -> message (the CLI's words for that field)
    general: list[str]  # problems naming no field of the form


def screen_post(screener: Screener, posted: Posted) -> Screened:
    """Validate and screen the posted answers with the service's Screener."""
    raw: dict[str, Any] = {"case_id": CASE_ID}
    raw.update({n: typed_value(n, t) for n, t in posted.texts.items() if t != ""})
    problems = list(posted.problems)
    values: dict[str, Scalar] = {}
    result: Result | None = None
    if not problems:
        try:
            case_id, values = screener.validate(raw, source=SOURCE)
            result = screener.screening(case_id, values, source=SOURCE).result
        except CaseInputError as exc:
            problems = list(exc.problems)
    if posted.withheld:  # never screened with a field left out
        result = None
        count = len(posted.withheld)
        problems.append(
            CaseProblem(
                None,
                "unknown field (name withheld: it may be data)"
                if count == 1
                else f"{count} unknown fields (names withheld: they may be data)",
            )
        )
    errors: dict[str, str] = {}
    general: list[str] = []
    for problem in problems:
        if problem.field in FIELDS_BY_NAME and problem.field != "case_id":
            errors.setdefault(problem.field, problem.message)
        else:
            general.append(
                f"{problem.field}: {problem.message}" if problem.field else problem.message
            )
    return Screened(dict(posted.texts), values, result, errors, general)


def kept_text(name: str, text: str) -> str:
    """The posted text to show again in its field after an error, or '' when it might identify
    someone (engine/io/deid.py decides, as for the CLI's error lines)."""
    spec = FIELDS_BY_NAME.get(name)
    choices = spec.values if spec else ()
    return text if showable(typed_value(name, text), choices) else ""


# --- building the page ---------------------------------------------------------------------------


def _form_text(value: Scalar) -> str:
    """A validated value as the form posts it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return show_value(value)


def _why(screener: Screener, result: Result, name: str, verdict_only: bool) -> tuple[str, ...]:
    """The open rules that ask a field: 'red flag RED-001: <why it is asked>', from the rule
    file's `asks_because` (else its message; Ruleset.asked_because), clinical text only."""
    reasons = screener.ruleset.asked_because
    lines = []
    for item in questions_by_field(result).get(name, []):
        if verdict_only and not item.can_change_verdict:
            continue
        reason = reasons.get(item.rule_id, item.name)
        lines.append(f"{SEVERITY_WORDS[item.severity.value]} {item.rule_id}: {reason}")
    return tuple(lines)


def asked_fields(
    screener: Screener, names: Iterable[str], known: Mapping[str, object]
) -> list[str]:
    """Fields a clinician can answer for the engine's questions, in their order: a derived
    attribute (never typed in) is asked as its inputs not yet known."""
    derived = screener.ruleset.derived_by_field
    out: list[str] = []
    for name in names:
        expanded = (
            [n for n in derived[name].inputs if n not in known] if name in derived else [name]
        )
        for item in expanded:
            if item in INPUT_FIELDS and item != "case_id" and item not in out:
                out.append(item)
    return out


@dataclass(frozen=True)
class FindingLine:
    id: str
    severity: str
    severity_words: str
    line: str
    rationale: str
    sources: tuple[Any, ...]


def _finding_line(finding: Finding) -> FindingLine:
    words = "benefit" if finding.category.value == "benefit" else SEVERITY_WORDS[finding.severity]
    return FindingLine(
        id=finding.rule_id,
        severity=finding.severity.value,
        severity_words=words,
        line=finding_summary(finding, words=True),  # the values in words, as the text report
        rationale=finding.rationale,
        sources=tuple(source_link(s) for s in finding.sources),
    )


def page_context(config: ServiceConfig, screened: Screened | None) -> dict[str, Any]:
    """Everything the template shows, for the start page (None) or a screened post."""
    screener = config.screener
    site = [(n, field_label(n), _site_words(v)) for n, v in screener.site.items()]
    context: dict[str, Any] = {
        "disclaimer": DISCLAIMER,
        "dev": config.dev,
        "site": site,
        "stamp": screener.ruleset_stamp,
        "result": None,
        "errors": [],
        "general": [],
    }
    if screened is None:
        context["answers"] = [widget(FIELDS_BY_NAME[n]) for n in START_FIELDS]
        return context
    result = screened.result
    texts = screened.texts
    # the answers so far: the starting facts, then every other field given, in dictionary order
    shown: dict[str, str] = {}
    for name in START_FIELDS:
        shown[name] = texts.get(name, "")
    for spec in FIELDS:
        if spec.name in texts and texts[spec.name] != "" and spec.name not in shown:
            shown[spec.name] = texts[spec.name]
    if result is not None:  # validated: show each value as the form posts it
        for name, value in screened.values.items():
            if name in shown:
                shown[name] = _form_text(value)
    asked: list[Widget] = []
    cautions: list[Widget] = []
    details: list[Widget] = []
    if result is not None:
        known = {**screened.values, **result.assumed, **{i.field: i.value for i in result.inferred}}
        ranked = asked_fields(screener, result.deciding_questions, known)
        caution_names = [
            n
            for n in asked_fields(
                screener, [m for c in result.open_cautions for m in c.missing], known
            )
            if n not in ranked
        ]
        detail_names = [
            n
            for n in asked_fields(screener, sorted(questions_by_field(result)), known)
            if n not in ranked and n not in caution_names
        ]
        for name in ranked:
            shown.pop(name, None)  # an open question asked again ("not known" so far)
            w = widget(FIELDS_BY_NAME[name], texts.get(name, ""))
            w.why = _why(screener, result, name, verdict_only=True)
            asked.append(w)
        for name in caution_names:
            shown.pop(name, None)
            w = widget(FIELDS_BY_NAME[name], texts.get(name, ""))
            w.why = _why(screener, result, name, verdict_only=False)
            cautions.append(w)
        order = {s.name: i for i, s in enumerate(FIELDS)}
        for name in sorted(detail_names, key=order.__getitem__):
            shown.pop(name, None)
            w = widget(FIELDS_BY_NAME[name], texts.get(name, ""))
            w.why = _why(screener, result, name, verdict_only=False)
            details.append(w)
    answers = []
    for name, text in shown.items():
        answered = FIELDS_BY_NAME.get(name)
        if answered is None or answered.group.value == "derived" or name == "case_id":
            continue
        error = screened.errors.get(name)
        answers.append(widget(answered, kept_text(name, text) if error else text, error))
    labels = {w.name: w.label for w in answers}
    context["answers"] = answers
    context["errors"] = [
        (f"f-{n}", labels.get(n, field_label(n)), message) for n, message in screened.errors.items()
    ]
    context["general"] = screened.general
    if result is None:
        return context
    decided = len(result.possible_verdicts) == 1 and not result.next_questions
    # no deciding question left: the verdict is given, open cautions can only add a caution
    given = not decided and not result.deciding_questions and bool(result.open_cautions)
    settings = [w.name for w in asked if w.setting]
    red_flags = open_red_flags(result)
    context.update(
        result=result,
        verdict_words=VERDICT_WORDS[result.verdict][0],
        verdict_class=result.verdict.value.replace("_", "-"),
        decided=decided,
        given=given,
        possible=possible_words(result, words=True),
        red_flags=[(field_label(n), n, ids) for n, ids in red_flags.items()],
        findings=[_finding_line(f) for f in result.findings],
        questions=asked,
        cautions=cautions,
        cautions_heading=CAUTIONS_HEADING,
        cautions_note=CAUTIONS_NOTE,
        details=details,
        settings=[field_label(n) for n in settings],
        conditional=[
            (scope_words(c.scope), SEVERITY_WORDS[c.severity], c.rule_id, c.message)
            for c in result.conditional
        ],
        worked=worked_out_words(result),
    )
    return context


def _site_words(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{value_words(k, 'mis_technique')}: {v}" for k, v in value.items())
    return value_words(value)


# --- responses -----------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("engine.service", "templates"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _stylesheet() -> str:
    return (files("engine.service") / "static" / "form.css").read_text(encoding="utf-8")


def _page(config: ServiceConfig, screened: Screened | None, status: int = 200) -> HTMLResponse:
    html = _environment().get_template("form.html.j2").render(page_context(config, screened))
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


async def _screened(request: Request, config: ServiceConfig) -> Screened:
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    return screen_post(config.screener, read_post(form))


@router.get("/", response_class=HTMLResponse)
def start(config: ServiceConfig = Depends(config_of)) -> HTMLResponse:  # noqa: B008
    """Step one: the starting facts, and the site profile the screen will assume."""
    return _page(config, None)


@router.post("/", response_class=HTMLResponse)
async def screen(request: Request, config: ServiceConfig = Depends(config_of)) -> HTMLResponse:  # noqa: B008
    """Screen the answers so far; show the verdict and the questions that can still change it."""
    screened = await _screened(request, config)
    return _page(config, screened, 200 if screened.result is not None else 422)


NONE = "'none'"
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


@router.post("/report", response_class=HTMLResponse)
async def report(request: Request, config: ServiceConfig = Depends(config_of)) -> Response:  # noqa: B008
    """The printable report of the same answers (engine/report/case_html.py)."""
    screened = await _screened(request, config)
    if screened.result is None:
        return _page(config, screened, 422)
    return _printable(render_case_html(screened.result))


@router.post("/patient", response_class=HTMLResponse)
async def patient(request: Request, config: ServiceConfig = Depends(config_of)) -> Response:  # noqa: B008
    """The summary to hand to the patient, of the same answers, at any step: while questions are
    open it says what the surgeon still needs to check (engine/report/patient.py)."""
    screened = await _screened(request, config)
    if screened.result is None:
        return _page(config, screened, 422)
    page = patient_summary(
        screened.result, config.screener.ruleset, output_format="html", case=screened.values
    )
    return _printable(page)


def _printable(html: str) -> HTMLResponse:
    """A self-contained printable page: its own inline style, allowed by hash; no script."""
    hashes = " ".join(
        "'sha256-" + b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
        for m in _STYLE.findall(html)
    )
    policy = (
        f"default-src 'none'; style-src {hashes or NONE}; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": policy}
    return HTMLResponse(html, headers=headers)


@router.post("/result.json")
async def result_json(request: Request, config: ServiceConfig = Depends(config_of)) -> Response:  # noqa: B008
    """The JSON result (the published contract, `miss-screen screen --format json`)."""
    screened = await _screened(request, config)
    if screened.result is None:
        return _page(config, screened, 422)
    return Response(
        screened.result.model_dump_json(indent=2) + "\n",
        media_type="application/json",
        headers=SECURITY_HEADERS,
    )


@router.get("/static/form.css", include_in_schema=False)
def stylesheet() -> Response:
    return Response(_stylesheet(), media_type="text/css", headers=SECURITY_HEADERS)
