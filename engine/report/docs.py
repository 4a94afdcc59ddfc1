"""Rule documentation generated from the rule files: one page per rule and an index."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from engine.models import CITATION_WORDS, Category, Claim, Scalar, Severity, evidence_label
from engine.report.text import CATEGORY_TITLES, show_value, source_text
from engine.rules.condition import to_text
from engine.rules.ruleset import Rule, Ruleset

CLAIM_WORDS = {
    Claim.less_tissue_disruption: "less tissue disruption",
    Claim.faster_recovery: "faster recovery",
    Claim.less_pain_and_scarring: "less pain and scarring",
    Claim.lower_infection_risk: "lower infection risk",
    Claim.improved_accuracy: "improved accuracy",
    Claim.limited_access: "limited access",
    Claim.learning_curve: "learning curve",
    Claim.equipment_cost: "equipment cost",
    Claim.radiation_exposure: "radiation exposure",
    Claim.limited_long_term_research: "limited long-term research",
}
EVIDENCE_WORDS = {
    "V": "verified: the number or statement was read in the source named",
    "P": "partly verified: the rationale says which numbers were seen",
    "M": "recalled, not yet seen in a source",
}
_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("engine.report", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701  # Markdown pages, not HTML
    )
    env.filters["code"] = lambda text: f"`{text}`"
    return env


def page_name(rule: Rule) -> str:
    return f"{rule.id}-{rule.meta.name}.md"


def _case_text(case: object) -> str:
    values: dict[str, Scalar] = getattr(case, "case", {})
    text = ", ".join(f"{k} = {show_value(v)}" for k, v in values.items()) or "(no data)"
    missing = getattr(case, "missing", None)
    if missing:
        text += f"; missing: {', '.join(missing)}"
    return text.replace("|", "\\|")


def render_docs(ruleset: Ruleset, root: Path, *, notes: bool = True) -> dict[str, str]:
    """Every generated page, by file name, for the rules directory `root` is relative to.

    notes=False leaves out the rule authors' notes (pages served to clinicians)."""
    env = _environment()
    pages: dict[str, str] = {}
    rule_template = env.get_template("rule.md.j2")
    for rule in ruleset.rules:
        cases = rule.meta.cases
        examples = [
            (kind.replace("_", " "), case)
            for kind in ("fires", "does_not_fire", "not_evaluable", "conditional")
            for case in (getattr(cases, kind) if cases else [])
        ]
        pages[page_name(rule)] = rule_template.render(
            rule=rule,
            path=_relative(rule.path, root),
            when=to_text(rule.when),
            scope=to_text(rule.scope) if rule.scope else "",
            rationale=" ".join(rule.meta.rationale.split()),
            evidence_words=EVIDENCE_WORDS[rule.meta.evidence.value],
            citation_words=CITATION_WORDS[rule.meta.evidence.value],
            evidence_label=evidence_label(rule.meta.sources),
            source_label=lambda source: evidence_label([source]),
            notes=" ".join((rule.meta.notes or "").split()) if notes else "",
            examples=examples,
            source_text=source_text,
            case_text=_case_text,
        )
    by_category = [
        (
            category.value,
            sorted(
                (r for r in ruleset.rules if r.meta.category is category),
                key=lambda r: (_SEVERITY_RANK[r.meta.severity], r.id),
            ),
        )
        for category in Category
    ]
    claims = [(claim, [r for r in ruleset.rules if claim in r.meta.claims]) for claim in Claim]
    pages["README.md"] = env.get_template("index.md.j2").render(
        ruleset=ruleset,
        claims=claims,
        claim_words=CLAIM_WORDS,
        by_category=[(c, rules) for c, rules in by_category if rules],
        category_titles=CATEGORY_TITLES,
        page=page_name,
        cond_text=to_text,
    )
    return pages


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def write_docs(ruleset: Ruleset, out: Path, root: Path) -> list[Path]:
    """Write the pages to `out`, removing pages of rules that no longer exist."""
    out.mkdir(parents=True, exist_ok=True)
    pages = render_docs(ruleset, root)
    for stale in out.glob("*.md"):
        if stale.name not in pages:
            stale.unlink()
    written = []
    for name, text in pages.items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written
