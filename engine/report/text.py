"""The clinician's report: verdict first, then findings by category with values and sources."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.markup import escape

from engine.dictionary import FIELDS_BY_NAME, SETTING_FIELDS
from engine.errors import RuleFileError
from engine.models import Finding, Result, Scalar, SourceRef, Verdict, evidence_label
from engine.rules.condition import And, Compare, Cond, Const, Known, Member, Or, parse_condition

VERDICT_WORDS = {
    Verdict.urgent_review: ("URGENT REVIEW", "bold white on red"),
    Verdict.not_favoured: ("MIS NOT FAVOURED", "bold red"),
    Verdict.insufficient_data: ("INSUFFICIENT DATA", "bold yellow"),
    Verdict.discuss_with_caution: ("MIS WORTH DISCUSSING, WITH CAUTION", "bold yellow"),
    Verdict.worth_discussing: ("MIS WORTH DISCUSSING", "bold green"),
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
        names = [_display(v) for v in cond.values]
        listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        return f"{_SCOPE_FIELDS[cond.field]} other than {listed}" if cond.negated else listed
    if isinstance(cond, Compare) and cond.field in _SCOPE_FIELDS and isinstance(cond.rhs, Const):
        name = _display(cond.rhs.value)
        return name if cond.op == "==" else f"{_SCOPE_FIELDS[cond.field]} other than {name}"
    return None


_SCOPE_FIELDS = {"mis_technique": "a technique", "planned_procedure": "a procedure"}
_DISPLAY = {
    "llif": "LLIF",
    "mis_tlif": "MIS TLIF",
    "mis_tumor": "MIS tumour surgery",
    "mis_deformity": "MIS deformity surgery",
    "other": "another technique",
}


def _display(value: object) -> str:
    return _DISPLAY.get(str(value), str(value).replace("_", " "))


def scope_words(scope: str) -> str:
    """'if tubular decompression is considered' for a technique scope; else the condition."""
    try:
        cond = parse_condition(scope, FIELDS_BY_NAME)
    except RuleFileError:
        return f"if {scope}"
    words = _technique_words(cond)
    return f"if {words} is considered" if words else f"if {scope}"


def show_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def source_text(source: SourceRef) -> str:
    ids = [f"doi:{source.doi}" if source.doi else "", f"PMID {source.pmid}" if source.pmid else ""]
    ids.append(source.url or "")
    extra = "; ".join(i for i in ids if i)
    return source.citation + (f" ({extra})" if extra else "")


def render_text(result: Result, console: Console) -> None:
    """Print the report of one case."""
    words, style = VERDICT_WORDS[result.verdict]
    console.print(f"[bold]Case {escape(result.case_id)}[/bold]")
    console.print(f"Verdict: [{style}]{words}[/{style}] ({result.verdict.value})")
    console.print(escape(result.summary))
    open_flags = red_flags_open(result)
    if open_flags:
        fields = escape(", ".join(open_flags))
        console.print(f"[bold red]Red flags not yet excluded[/bold red]: supply {fields}")
    console.print()

    console.print("[bold]Findings[/bold]" if result.findings else "[bold]Findings[/bold]: none")
    by_category: dict[str, list[Finding]] = defaultdict(list)
    for finding in result.findings:
        by_category[finding.category.value].append(finding)
    for category, title in CATEGORY_TITLES.items():
        if category in by_category:
            console.print(f"  [underline]{title}[/underline]")
            for finding in by_category[category]:
                _finding(console, finding)

    if result.conditional:
        console.print()
        console.print("[bold]If a technique or setting not yet chosen is considered[/bold]")
        for cond in result.conditional:
            _finding(console, cond, prefix=f"{scope_words(cond.scope)}: ")
            if cond.missing:
                console.print(f"      would also need: {escape(', '.join(cond.missing))}")

    console.print()
    _questions(console, result)

    facts: list[str] = []
    facts += [f"{k} = {show_value(v)} (derived)" for k, v in result.derived.items()]
    facts += [
        f"{i.field} = {show_value(i.value)} (inferred by {i.constraint})" for i in result.inferred
    ]
    facts += [
        f"{k} = {show_value(v)} (assumed from the site profile)" for k, v in result.assumed.items()
    ]
    if facts:
        console.print()
        console.print("[bold]Values the engine worked out[/bold]")
        for fact in facts:
            console.print(f"  - {escape(fact)}")

    console.print()
    stamp = result.ruleset
    console.print(
        f"[dim]Rule set {escape(stamp.name)} {escape(stamp.version)} (sha256 {stamp.sha256[:12]}), "
        f"miss-screen {escape(result.tool_version)}[/dim]"
    )
    console.print(f"[bold]{escape(result.disclaimer)}[/bold]")


def _finding(console: Console, finding: Finding, prefix: str = "") -> None:
    style = SEVERITY_STYLE[finding.severity.value]
    provisional = " [magenta](provisional threshold)[/magenta]" if finding.provisional else ""
    console.print(
        f"    [{style}]{finding.severity.value}[/{style}] {finding.rule_id} "
        f"{escape(prefix + finding.message)}{provisional} "
        f"\\[{escape(evidence_label(finding.sources))}]"
    )
    if finding.values:
        shown = ", ".join(f"{k} = {show_value(v)}" for k, v in finding.values.items())
        console.print(f"      values: {escape(shown)}")
    console.print(f"      why: {escape(finding.rationale)}")
    for source in finding.sources:
        label = evidence_label([source])
        console.print(f"      source: {escape(source_text(source))} \\[{escape(label)}]")


def _questions(console: Console, result: Result) -> None:
    """The open questions, split: (a) those whose answer can change the verdict, ranked as the
    policy ranks them (result.next_questions), with the verdicts still possible; (b) details that
    only settle findings without changing the verdict."""
    needed_by: dict[str, list[str]] = defaultdict(list)
    for item in result.not_evaluable:
        for name in item.missing:
            needed_by[name].append(f"{item.rule_id} ({item.severity.value})")
    title = "[bold]Data that would settle open questions[/bold]"
    if not needed_by:
        console.print(f"{title}: none; every rule was decided")
        return
    console.print(title)
    possible = ", ".join(v.value for v in result.possible_verdicts)
    bound = "" if result.possible_verdicts_exact else "; a bound: some rules share a field"
    if result.next_questions:
        console.print(
            "  [underline]Can change the verdict[/underline], most decisive first "
            f"(verdicts still possible: {escape(possible)}{bound})"
        )
        for number, name in enumerate(result.next_questions, 1):
            console.print(f"    {number}. {escape(name)}: needed by {', '.join(needed_by[name])}")
        settings = [n for n in result.next_questions if n in SETTING_FIELD_SET]
        if settings:
            one = len(settings) == 1
            console.print(
                f"    {escape(', '.join(settings))}: {'a setting' if one else 'settings'} of the "
                "hospital, not of the patient: a site profile (--site FILE) sets "
                f"{'it' if one else 'them'} once for all cases"
            )
    else:
        console.print(f"  none can change the verdict ({escape(result.verdict.value)})")
    details = sorted(set(needed_by) - set(result.next_questions))
    if details:
        console.print("  [underline]Details only[/underline] (cannot change the verdict)")
        for name in details:
            setting = " (a site setting: --site FILE)" if name in SETTING_FIELD_SET else ""
            console.print(f"    - {escape(name)}{setting}: needed by {', '.join(needed_by[name])}")


SETTING_FIELD_SET = frozenset(SETTING_FIELDS)


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
        parts.append(f"needs: {', '.join(result.next_questions)}")
    else:
        open_flags = red_flags_open(result)
        if open_flags:
            parts.append(f"red flags not yet excluded: {', '.join(open_flags)}")
    return "  ".join(parts).rstrip()
