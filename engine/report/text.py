"""The clinician's report: verdict first, then findings by category with values and sources."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from engine.dictionary import FIELDS_BY_NAME, SETTING_FIELDS
from engine.errors import RuleFileError
from engine.models import (
    SEVERITY_ORDER,
    ConditionalFinding,
    Finding,
    NotEvaluable,
    Result,
    SourceRef,
    Verdict,
    evidence_label,
)
from engine.report.trace import TRUTH_WORDS, TraceLine
from engine.report.trace import show_value as show_value  # re-exported: docs, html
from engine.report.words import (
    VERDICT_PHRASES,
    fact_words,
    field_label,
    value_words,
    verdicts_words,
)
from engine.rules.condition import And, Compare, Cond, Const, Known, Member, Or, parse_condition
from engine.rules.logic import compile_kleene

TECHNIQUE = "mis_technique"

# each verdict in words, as every report and the form say it (the text report in capitals)
VERDICT_WORDS = {
    Verdict.urgent_review: ("Urgent review", "bold white on red"),
    Verdict.not_favoured: ("MIS not favoured", "bold red"),
    Verdict.insufficient_data: ("Insufficient data", "bold yellow"),
    Verdict.discuss_with_caution: ("MIS worth discussing, with caution", "bold yellow"),
    Verdict.worth_discussing: ("MIS worth discussing", "bold green"),
}
SEVERITY_STYLE = {"red_flag": "bold red", "major": "red", "caution": "yellow", "info": "cyan"}
CATEGORY_TITLES = {
    "red_flag": "Red flags",
    "indication": "Surgical indication",
    "access": "Access limits",
    "complexity": "Complexity and learning curve",
    "radiation": "Radiation",
    "cost": "Equipment and cost",
    "evidence": "Evidence gaps",
    "benefit": "Expected benefits of MIS",
}


def _technique_words(cond: Cond) -> str | None:
    """Plain words for a scope on the technique or procedure, or None if it is anything else."""
    if isinstance(cond, Or):
        parts = [_technique_words(item) for item in cond.items]
        if any(p is None for p in parts):
            return None
        return " or ".join(dict.fromkeys(p for p in parts if p))  # drop repeats, keep order
    if isinstance(cond, And):  # e.g. technique unknown and a vertebral augmentation planned
        words = [w for w in map(_technique_words, cond.items) if w is not None]
        rest = [i for i in cond.items if _technique_words(i) is None and not isinstance(i, Known)]
        return words[0] if len(words) == 1 and not rest else None
    if isinstance(cond, Member) and cond.field in _SCOPE_FIELDS:
        names = [_display(v, cond.field) for v in cond.values]
        listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        return f"{_SCOPE_FIELDS[cond.field]} other than {listed}" if cond.negated else listed
    if isinstance(cond, Compare) and cond.field in _SCOPE_FIELDS and isinstance(cond.rhs, Const):
        name = _display(cond.rhs.value, cond.field)
        return name if cond.op == "==" else f"{_SCOPE_FIELDS[cond.field]} other than {name}"
    return None


_SCOPE_FIELDS = {"mis_technique": "a technique", "planned_procedure": "a procedure"}


def _display(value: object, name: str = TECHNIQUE) -> str:
    """A technique or procedure in the dictionary's words ('mis_tlif' -> 'MIS TLIF')."""
    return value_words(value, name)


def scope_words(scope: str) -> str:
    """'if tubular decompression is considered' for a technique scope; else the condition."""
    try:
        cond = parse_condition(scope, FIELDS_BY_NAME)
    except RuleFileError:
        return f"if {scope}"
    words = _technique_words(cond)
    return f"if {words} is considered" if words else f"if {scope}"


def source_text(source: SourceRef) -> str:
    ids = [f"doi:{source.doi}" if source.doi else "", f"PMID {source.pmid}" if source.pmid else ""]
    ids.append(source.url or "")
    extra = "; ".join(i for i in ids if i)
    return source.citation + (f" ({extra})" if extra else "")


# The one-line disclaimer of the text report; the result (JSON, HTML) carries the full text.
DISCLAIMER_LINE = (
    "Screening aid: not a diagnosis, recommendation or order to operate; "
    "the treating surgeon decides."
)
SEVERITY_WORDS = {"red_flag": "red flag", "major": "major", "caution": "caution", "info": "info"}
LEGEND = (
    "Legend: severity, highest first: red flag (urgent review), major (MIS probably unsuitable), "
    "caution (discuss first), info (a fact or a benefit, never changes the verdict). "
    "provisional: the threshold is an engineering choice awaiting a better source. "
    "conditional: applies only if that technique is chosen. "
    "[design · level N]: the best source's study design and Oxford CEBM 2011 level of evidence "
    "(1 systematic review of RCTs, 2 RCT, 3 cohort, 4 case series or case-control, "
    "5 mechanism or expert opinion)."
)
QUESTIONS_SHOWN = 6  # ranked questions on lines of their own; the rest share one line
# the reports' words for Result.open_cautions (rules/policy.yaml open_cautions)
CAUTIONS_HEADING = "Cautions not yet excluded"
CAUTIONS_NOTE = "they do not hold the verdict back"
Traces = Mapping[str, list[tuple[str, list[TraceLine]]]]
# rule id -> why its questions are asked, for the clinician (Ruleset.asked_because)
Reasons = Mapping[str, str]


def verdict_words(verdict: Verdict) -> str:
    return VERDICT_WORDS[verdict][0]


def _rows(console: Console, rows: list[tuple[str, str]], indent: int = 2) -> None:
    """Lines of a label and a text wrapped under itself (a hanging indent), markup allowed in
    both; lines are printed as wrapped here, with no trailing blanks."""
    if not rows:
        return
    labels = [Text.from_markup(label) for label, _ in rows]
    width = max(label.cell_len for label in labels)
    room = max(console.width - indent - width - 1, 20)
    for label, (_, text) in zip(labels, rows, strict=True):
        lines = Text.from_markup(text).wrap(console, room, overflow="fold")
        pad = " " * (width - label.cell_len + 1)
        for number, line in enumerate(lines):
            line.rstrip()
            head = (
                Text.assemble(" " * indent, label, pad)
                if number == 0
                else " " * (indent + width + 1)
            )
            console.print(Text.assemble(head, line), soft_wrap=True)


def _para(console: Console, text: str) -> None:
    console.print(text, soft_wrap=False, overflow="fold")


def render_text(
    result: Result,
    console: Console,
    *,
    details: bool = False,
    legend: bool = False,
    traces: Traces | None = None,
    reasons: Reasons | None = None,
) -> None:
    """Print the report of one case: one screen by default, everything with details=True.
    `reasons` (Ruleset.asked_because) says why each open question is asked.

    Order: verdict, red flags not yet excluded, findings, the questions that can change the
    verdict, considerations of techniques not yet chosen, worked-out values, stamp, disclaimer.
    """
    words, style = VERDICT_WORDS[result.verdict]
    words = words.upper()
    console.print(f"[bold]Case {escape(result.case_id)}[/bold]")
    _para(
        console,
        f"Verdict: [{style}]{words}[/{style}] ({result.verdict.value}): {escape(result.summary)}",
    )
    open_flags = open_red_flags(result)
    if open_flags and details:
        listed = ", ".join(f"{name} ({', '.join(ids)})" for name, ids in open_flags.items())
        _para(
            console,
            f"[bold red]Red flags not yet excluded[/bold red]: supply {escape(listed)}",
        )
    elif open_flags:
        asked = [field_label(n) for n in open_flags if n not in CONTEXT_FIELDS] or [
            field_label(n) for n in open_flags
        ]
        _para(
            console,
            f"[bold red]Red flags not yet excluded[/bold red]: {escape(', '.join(asked))}",
        )
    if details or legend:
        console.print(f"[dim]{escape(LEGEND)}[/dim]", soft_wrap=False)

    console.print()
    _findings(console, result, details, traces)
    console.print()
    _questions(console, result, details, traces, reasons)
    if result.conditional:
        console.print()
        _considerations(console, result, details, traces)
    worked = worked_out(result) if details else worked_out_words(result)
    if worked:
        console.print()
        _para(console, f"[bold]Worked out[/bold]: {escape(worked)}")
    stamp = result.ruleset
    console.print(
        f"[dim]Rule set {escape(stamp.name)} {escape(stamp.version)} (sha256 {stamp.sha256[:12]}), "
        f"miss-screen {escape(result.tool_version)}[/dim]",
        soft_wrap=False,
    )
    _para(console, f"[bold]{escape(result.disclaimer if details else DISCLAIMER_LINE)}[/bold]")


def finding_summary(finding: Finding, *, words: bool = False) -> str:
    """The message, the values that triggered it and the evidence label, as one plain line
    (`words`: the values as a clinician reads them, not as field names)."""
    text = finding.message
    if finding.values and words:
        text += " (" + "; ".join(fact_words(k, v) for k, v in finding.values.items()) + ")"
    elif finding.values:
        text += " (" + ", ".join(f"{k} = {show_value(v)}" for k, v in finding.values.items()) + ")"
    text += f" [{evidence_label(finding.sources)}]"
    if finding.provisional:
        text += " provisional"
    return text


def _severity_label(severity: str) -> str:
    style = SEVERITY_STYLE[severity]
    return f"[{style}]{SEVERITY_WORDS[severity]}[/{style}]"


def _finding_label(finding: Finding) -> str:
    """The severity in a fixed width ("benefit" for a benefit finding), styled."""
    severity = finding.severity.value
    word = "benefit" if finding.category.value == "benefit" else SEVERITY_WORDS[severity]
    style = SEVERITY_STYLE[severity]
    return f"[{style}]{word:<8}[/{style}]"


def _findings(console: Console, result: Result, details: bool, traces: Traces | None) -> None:
    if not result.findings:
        console.print("[bold]Findings[/bold]: none")
        return
    console.print("[bold]Findings[/bold]")
    for finding in result.findings:
        _rows(
            console,
            [
                (
                    f"{_finding_label(finding)} {finding.rule_id}",
                    escape(finding_summary(finding, words=not details)),
                )
            ],
        )
        if details:
            _finding_details(console, finding, traces)


def _finding_details(console: Console, finding: Finding, traces: Traces | None) -> None:
    rows = [("why:", escape(finding.rationale))]
    rows += [
        ("source:", f"{escape(source_text(s))} \\[{escape(evidence_label([s]))}]")
        for s in finding.sources
    ]
    _rows(console, rows, indent=6)
    if traces is not None and finding.rule_id in traces:
        _trace(console, traces[finding.rule_id])


def _trace(console: Console, parts: list[tuple[str, list[TraceLine]]]) -> None:
    """Each part of a condition on its line, indented by its depth; a long part wraps under its
    own text, so the tree keeps its shape at any width."""
    width = max((len(name) + 1 for name, _ in parts), default=0)
    indent = 6
    for name, lines in parts:
        for number, line in enumerate(lines):
            label = f"{name}:" if number == 0 else ""
            read = f"  ({line.values})" if line.values else ""
            lead = f"{'  ' * line.depth}{TRUTH_WORDS[line.truth]:<7} "
            room = max(console.width - indent - width - 1 - len(lead), 20)
            wrapped = Text(f"{line.text}{read}").wrap(console, room, overflow="fold")
            for part, piece in enumerate(wrapped):
                piece.rstrip()
                head = f"{' ' * indent}{label if part == 0 else '':<{width}} "
                body = lead if part == 0 else " " * len(lead)
                console.print(Text.assemble(head, body, piece), soft_wrap=True)


def questions_by_field(result: Result) -> dict[str, list[NotEvaluable]]:
    """Each missing field with the open rules that need it, in report order."""
    needed_by: dict[str, list[NotEvaluable]] = defaultdict(list)
    for item in result.not_evaluable:
        for name in item.missing:
            needed_by[name].append(item)
    return needed_by


def field_reasons(
    result: Result, reasons: Reasons | None, *, verdict_only: bool = False
) -> dict[str, list[str]]:
    """Why each open field is asked: the reasons of the open rules that need it, worst severity
    first, each said once (with `verdict_only`, only rules whose answer can change the verdict).
    Empty without `reasons`: a result alone does not carry them."""
    if not reasons:
        return {}
    out: dict[str, list[str]] = {}
    for name, items in questions_by_field(result).items():
        ordered = sorted(items, key=lambda item: SEVERITY_ORDER[item.severity])
        said = [
            reasons[i.rule_id]
            for i in ordered
            if i.rule_id in reasons and (i.can_change_verdict or not verdict_only)
        ]
        out[name] = list(dict.fromkeys(said))
    return out


def needed_words(items: list[NotEvaluable]) -> str:
    """'red flag RED-001; major ACC-012, IND-004; caution EQP-002' (severity, then ids)."""
    return ids_by_severity(items, SEVERITY_WORDS.__getitem__)


def ids_by_severity(
    items: Sequence[NotEvaluable | ConditionalFinding], label: Callable[[str], str]
) -> str:
    """Rule ids grouped by severity, worst first, each group under its label."""
    by_severity: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_severity[item.severity.value].append(item.rule_id)
    return "; ".join(
        f"{label(s)} {', '.join(by_severity[s])}" for s in SEVERITY_WORDS if s in by_severity
    )


def possible_words(result: Result, *, words: bool = False) -> str:
    """The verdicts still possible: as codes, or (`words`) as a clinician reads them."""
    if words:
        return verdicts_words(result.possible_verdicts) + (
            "" if result.possible_verdicts_exact else " (perhaps not all of them)"
        )
    codes = ", ".join(v.value for v in result.possible_verdicts)
    return codes + ("" if result.possible_verdicts_exact else "; a bound: some rules share a field")


@dataclass(frozen=True)
class QuestionPlan:
    """What a report says about open questions, chosen and ranked once for every renderer
    (the text report, the CDS Hooks card): the questions that can change the verdict, ranked as
    the policy ranks them (next_questions), and the details that cannot."""

    any_open: bool  # some rule is still open (False: every rule was decided)
    shown: list[tuple[str, str]]  # deciding (field, the rules that need it), most decisive first
    reasons: dict[str, str]  # deciding field -> why it is asked (its worst rule's), when known
    rest: list[str]  # further deciding questions, named only
    cautions: list[tuple[str, str, list[str]]]  # open cautions: (rule id, why asked, fields)
    cautions_can_change: bool  # some open caution could still change the verdict
    possible: str  # the verdicts still possible, in words
    settings: list[str]  # ranked questions that are settings of the hospital
    details_only: list[tuple[str, str]]  # (field, rules) that cannot change the verdict


def question_plan(
    result: Result, *, details: bool = False, reasons: Reasons | None = None
) -> QuestionPlan:
    """The open questions of a result as every report shows them (QUESTIONS_SHOWN ranked
    questions on lines of their own unless `details`, the rest named on one line), each with
    why it is asked where `reasons` (Ruleset.asked_because) are given; an open caution falls
    back to its message."""
    needed_by = questions_by_field(result)
    ranked = result.next_questions
    deciding = result.deciding_questions
    asked = {*ranked, *(m for c in result.open_cautions for m in c.missing)}
    shown = deciding if details else deciding[:QUESTIONS_SHOWN]
    why = field_reasons(result, reasons, verdict_only=True)
    said = reasons or {}
    return QuestionPlan(
        any_open=bool(needed_by),
        shown=[(name, needed_words(needed_by[name])) for name in shown],
        reasons=_said_once(shown, why),
        rest=list(deciding[len(shown) :]),
        cautions=[
            (c.rule_id, said.get(c.rule_id, c.message), c.missing) for c in result.open_cautions
        ],
        cautions_can_change=any(c.can_change_verdict for c in result.open_cautions),
        possible=possible_words(result),
        settings=[n for n in ranked if n in SETTING_FIELD_SET],
        details_only=[
            (name, needed_words(needed_by[name])) for name in sorted(set(needed_by) - asked)
        ],
    )


def _said_once(shown: Sequence[str], why: Mapping[str, list[str]]) -> dict[str, str]:
    """Each shown question's reason (its worst rule's), or 'as for N' when question N above
    already gave that reason (a red flag asks its level and its sign alike)."""
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for number, name in enumerate(shown, 1):
        if why.get(name):
            reason = why[name][0]
            out[name] = reason if reason not in first else f"as for {first[reason]}"
            first.setdefault(reason, number)
    return out


def settings_note(
    settings: list[str], option: str = "a site profile (--site FILE)", *, words: bool = False
) -> str:
    """Why a setting among the questions is asked once for all cases, not per patient."""
    one = len(settings) == 1
    names = [field_label(n) for n in settings] if words else settings
    return (
        f"{', '.join(names)} {'is a setting' if one else 'are settings'} of the hospital, not "
        f"of the patient: {option} sets {'it' if one else 'them'} once for all cases"
    )


def _questions(
    console: Console,
    result: Result,
    details: bool,
    traces: Traces | None,
    reasons: Reasons | None = None,
) -> None:
    """(a) The questions that can change the verdict, ranked by the policy (next_questions),
    with the verdicts still possible and why each is asked; (b) open cautions, with why they
    are asked; (c) details that cannot change it, on one line."""
    plan = question_plan(result, details=details, reasons=reasons)
    if not plan.any_open:
        console.print("[bold]Open questions[/bold]: none; every rule was decided")
        return

    def name_of(name: str) -> str:
        return name if details else field_label(name)

    if plan.shown:
        possible = plan.possible if details else possible_words(result, words=True)
        _para(
            console,
            "[bold]Questions that decide the verdict[/bold], most decisive first"
            f"; {'verdicts still possible' if details else 'it could still be'}: "
            f"{escape(possible)}",
        )
        needed = questions_by_field(result)
        rows = [
            (
                f"{n}.",
                f"{escape(name)}: {words}"
                if details
                else f"{escape(field_label(name))}: {_severities(needed[name])}"
                + (f" — {escape(plan.reasons[name])}" if name in plan.reasons else ""),
            )
            for n, (name, words) in enumerate(plan.shown, 1)
        ]
        _rows(console, rows)
        if plan.rest:
            _rows(console, [("then:", escape(", ".join(map(name_of, plan.rest))))])
    else:
        stands = result.verdict.value if details else VERDICT_PHRASES[result.verdict]
        _para(
            console,
            f"[bold]Questions that decide the verdict[/bold]: none; {escape(stands)} stands",
        )
    decided = result.verdict is not Verdict.insufficient_data
    if plan.cautions and (details or (plan.cautions_can_change and decided)):
        _para(console, f"[bold]{CAUTIONS_HEADING}[/bold] ({CAUTIONS_NOTE})")
        _rows(
            console,
            [
                (rule_id, escape(f"{message} Ask: {', '.join(map(name_of, fields))}."))
                for rule_id, message, fields in plan.cautions
            ],
        )
    elif plan.cautions:  # under a verdict they cannot change: the questions on one line
        asked = "; ".join(f"{', '.join(map(name_of, f))} ({i})" for i, _, f in plan.cautions)
        _rows(console, [(f"{CAUTIONS_HEADING.lower()}:", escape(asked))])
    if plan.settings:
        note = settings_note(plan.settings, words=not details)
        _rows(console, [("note:", escape(note))])
    if details and traces is not None:
        _open_traces(console, result, traces)
    if plan.details_only:
        if details:
            rows = [(f"{escape(name)}:", words) for name, words in plan.details_only]
            console.print("  Details only (cannot change the verdict)")
            _rows(console, rows, indent=4)
        else:
            names = ", ".join(field_label(name) for name, _ in plan.details_only)
            _rows(
                console,
                [("details only:", escape(names) + " (cannot change the verdict)")],
            )


def _open_traces(console: Console, result: Result, traces: Traces) -> None:
    """Each open rule once, the ones that can change the verdict first, with its trace."""
    console.print("  Why each rule is still open")
    ordered = sorted(result.not_evaluable, key=lambda item: not item.can_change_verdict)
    for item in ordered:
        if item.rule_id in traces:
            weight = "can change the verdict" if item.can_change_verdict else "detail"
            _rows(
                console,
                [
                    (
                        f"{SEVERITY_WORDS[item.severity.value]} {item.rule_id}",
                        f"{escape(item.name)} ({weight}; needs {escape(', '.join(item.missing))})",
                    )
                ],
                indent=4,
            )
            _trace(console, traces[item.rule_id])


def technique_groups(
    result: Result,
) -> tuple[dict[str, list[ConditionalFinding]], list[ConditionalFinding]]:
    """Conditional considerations grouped by the technique that would bring them in.

    A scope is decided for each technique over the narrowed scope the result carries, so only
    techniques the case still allows appear. A scope true for most techniques (e.g. "any
    technique but vertebral augmentation") joins the groups of the techniques other scopes name;
    one that names no such technique is returned apart with its scope in words.
    """
    domain = FIELDS_BY_NAME[TECHNIQUE].domain
    matched: list[tuple[ConditionalFinding, list[str]]] = []
    for cond in result.conditional:
        try:
            scope = parse_condition(cond.scope, FIELDS_BY_NAME)
        except RuleFileError:
            matched.append((cond, []))
            continue
        decide = compile_kleene(scope)
        matched.append((cond, [str(t) for t in domain if decide({TECHNIQUE: t}, {}) is True]))
    named = {t for _, ts in matched if len(ts) <= len(domain) // 2 for t in ts}
    groups: dict[str, list[ConditionalFinding]] = defaultdict(list)
    apart: list[ConditionalFinding] = []
    for cond, techniques in matched:
        keep = (
            techniques
            if len(techniques) <= len(domain) // 2
            else [t for t in techniques if t in named]
        )
        if not keep:
            apart.append(cond)
        for technique in keep:
            groups[technique].append(cond)
    worst = {t: min(SEVERITY_ORDER[c.severity] for c in cs) for t, cs in groups.items()}
    ordered = sorted(groups, key=lambda t: (worst[t], domain.index(t)))
    return {t: groups[t] for t in ordered}, apart


def _ids_by_severity(conds: list[ConditionalFinding]) -> str:
    return ids_by_severity(conds, _severity_label)


def _considerations(console: Console, result: Result, details: bool, traces: Traces | None) -> None:
    console.print("[bold]If a technique not yet chosen is considered[/bold]")
    groups, apart = technique_groups(result)
    rows = [(f"If {escape(_display(t))}:", _ids_by_severity(cs)) for t, cs in groups.items()]
    rows += [(f"{escape(scope_words(c.scope))}:", _ids_by_severity([c])) for c in apart]
    _rows(console, rows)
    if not details:
        return
    for cond in result.conditional:
        _rows(
            console,
            [
                (
                    f"{_finding_label(cond)} {cond.rule_id}",
                    escape(f"{scope_words(cond.scope)}: {finding_summary(cond)}"),
                )
            ],
        )
        _finding_details(console, cond, traces)
        if cond.missing:
            _rows(console, [("would also need:", escape(", ".join(cond.missing)))], indent=6)


def _severities(items: list[NotEvaluable]) -> str:
    """The severities of the open rules that ask a question, worst first: 'red flag, major'."""
    present = {item.severity.value for item in items}
    return ", ".join(SEVERITY_WORDS[s] for s in SEVERITY_WORDS if s in present)


def worked_out_words(result: Result) -> str:
    """Derived, inferred and assumed values as one line a clinician reads: labels and words."""
    parts = [fact_words(k, v) for k, v in result.derived.items()]
    parts += [f"{fact_words(i.field, i.value)} (from the other answers)" for i in result.inferred]
    parts += [f"{fact_words(k, v)} (from the site profile)" for k, v in result.assumed.items()]
    return "; ".join(parts)


def worked_out(result: Result) -> str:
    """Derived, inferred and assumed values as one line."""
    parts = [f"{k} = {show_value(v)}" for k, v in result.derived.items()]
    parts += [
        f"{i.field} = {show_value(i.value)} (inferred by {i.constraint})" for i in result.inferred
    ]
    parts += [f"{k} = {show_value(v)} (from the site profile)" for k, v in result.assumed.items()]
    return "; ".join(parts)


SETTING_FIELD_SET = frozenset(SETTING_FIELDS)
# what places the case, asked by a red flag only to know whether it applies: named among the
# questions, not in the red-flag headline
CONTEXT_FIELDS = frozenset({"diagnosis", "region", "lowest_level", "levels", "planned_procedure"})


def open_red_flags(result: Result) -> dict[str, list[str]]:
    """Every field a red-flag rule still needs, with those rules, whatever the verdict: a red
    flag not yet excluded is said first even when another one has already fired."""
    fields: dict[str, list[str]] = defaultdict(list)
    for item in result.not_evaluable:
        if item.severity.value == "red_flag":
            for name in item.missing:
                fields[name].append(item.rule_id)
    return dict(sorted(fields.items()))


def red_flags_open(result: Result) -> list[str]:
    """Fields of red-flag rules left unknown whose answer can change the verdict.

    Whether an answer can change the verdict is the policy's call (engine/policy.py), carried
    by each not-evaluable item; under urgent_review no red flag can.
    """
    return sorted(
        {
            m
            for n in result.not_evaluable
            if n.can_change_verdict and n.severity.value == "red_flag"
            for m in n.missing
        }
    )


def brief_line(result: Result) -> str:
    """One line per case: id, verdict and the ids of what fired, for a quick look at a cohort."""
    fired = ", ".join(f.rule_id for f in result.findings if f.category.value != "benefit")
    benefits = ", ".join(f.rule_id for f in result.findings if f.category.value == "benefit")
    parts = [f"{result.case_id:<10}", f"{result.verdict.value:<21}"]
    if fired:
        parts.append(f"findings: {fired}")
    if benefits:
        parts.append(f"benefits: {benefits}")
    if result.verdict is Verdict.insufficient_data:  # what keeps the verdict open, ranked
        parts.append(f"needs: {', '.join(result.deciding_questions)}")
    else:
        open_flags = red_flags_open(result)
        if open_flags:
            parts.append(f"red flags not yet excluded: {', '.join(open_flags)}")
    return "  ".join(parts).rstrip()
