"""How many deciding questions a bare clinic case gets, per diagnosis (docs/questions.md).

A bare clinic case is what a surgeon brings: age, sex, diagnosis, lowest level, number of levels
and planned procedure. The cases are the distinct bare cases of a synthetic cohort
(engine/synth.py, fixed seed: its mix of levels and procedures per diagnosis), screened without and
with a site profile. A question decides when the policy says so (engine/policy.py: a red-flag or
major rule that can change the verdict needs it, result.deciding_questions); the questions of
the cautions not yet excluded (result.open_cautions) are counted apart.
tests/test_questions_table.py fails when the committed page is stale: run
`python benchmarks/questions_table.py` after changing rules or policy.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.dictionary import FIELDS_BY_NAME
from engine.io.cases import validate_case
from engine.models import Result, SiteProfile, Verdict
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset
from engine.screener import Screener
from engine.synth import generate_rows

PAGE = ROOT / "docs" / "questions.md"
BARE = ("age_years", "sex", "diagnosis", "lowest_level", "levels", "planned_procedure")
SITE: SiteProfile = {
    "mis_equipment_available": True,
    "navigation_available": True,
    "surgeon_mis_cases": 50,
}
# Routine intake a clinic usually has on file: shown beside the targets, never counted in them
# (the targets are for the bare case). A BMI of 25 and no operation at the level.
INTAKE: dict[str, object] = {"bmi": 25, "prior_surgery_same_level": False}
ROWS, SEED = 2000, 2026
# issue 28's targets for the mean number of deciding questions with the site profile
TARGETS: dict[str, float] = {
    "disc_herniation": 3,
    "spinal_stenosis": 3,
    "degenerative_disc_disease": 3,
    "spondylolisthesis": 3.5,  # the two red flags and the slip; SVA for multilevel fusions
    "fracture": 6,
    "tumor": 6,
    "infection": 6,
}
TOP_FIELDS = 8


def bare_cases() -> list[dict[str, object]]:
    """The distinct bare cases of the synthetic cohort, in a stable order."""
    seen: dict[tuple[object, ...], dict[str, object]] = {}
    for row in generate_rows(ROWS, seed=SEED, missing=0.0, corrupt=0.0):
        bare = {name: row[name] for name in BARE if row[name] is not None}
        if "diagnosis" in bare:
            seen.setdefault(tuple(bare.get(name) for name in BARE), bare)
    return [seen[key] for key in sorted(seen, key=lambda k: tuple(map(str, k)))]


def deformity_limit(ruleset: Ruleset) -> tuple[int, list[str]]:
    """The adult-deformity target: the inputs of the MISDEF classification plus the red flags
    that concern every diagnosis (red-flag rules that do not read the diagnosis)."""
    misdef = ruleset.derived_by_field["misdef_class"]
    inputs: set[str] = set()
    pending = list(misdef.inputs)
    while pending:
        name = pending.pop()
        derived = ruleset.derived_by_field.get(name)
        if derived is not None:
            pending.extend(derived.inputs)
        elif name not in inputs:
            inputs.add(name)
    flags = {
        f
        for rule in ruleset.rules
        if rule.meta.severity.value == "red_flag" and "diagnosis" not in rule.fields
        for f in ruleset.explanation_inputs[rule.id]
    }
    fields = sorted((inputs | flags) - set(BARE))
    return len(fields), fields


def _show(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _cautions(result: Result) -> list[str]:
    """The questions of the cautions not yet excluded, not already a deciding question."""
    deciding = set(result.deciding_questions)
    return sorted({m for c in result.open_cautions for m in c.missing} - deciding)


def _red_flags(result: Result) -> int:
    """How many of the deciding questions are red-flag exclusions."""
    return len(
        {
            name
            for item in result.not_evaluable
            if item.can_change_verdict and item.severity.value == "red_flag"
            for name in item.missing
        }
    )


def render(ruleset: Ruleset | None = None) -> str:
    ruleset = ruleset or load_ruleset(ROOT / "rules")
    bare_screener = Screener.from_ruleset(ruleset, "reference")
    sited_screener = bare_screener.with_site(SITE)
    by_diagnosis: dict[str, list[tuple[list[str], list[str], Verdict, int, list[str]]]] = {}
    with_intake: dict[str, list[int]] = {}
    for case in bare_cases():
        case_id, values = validate_case({"case_id": "bare", **case}, "synth")
        bare = bare_screener.screening(case_id, values).result
        sited = sited_screener.screening(case_id, values).result
        by_diagnosis.setdefault(str(case["diagnosis"]), []).append(
            (
                bare.deciding_questions,
                sited.deciding_questions,
                sited.verdict,
                _red_flags(sited),
                _cautions(sited),
            )
        )
        _, intake_values = validate_case({"case_id": "bare", **case, **INTAKE}, "synth")
        intake = sited_screener.screening(case_id, intake_values).result
        with_intake.setdefault(str(case["diagnosis"]), []).append(len(intake.deciding_questions))
    limit, deformity_fields = deformity_limit(ruleset)
    site = ", ".join(f"{k}: {_show(v)}" for k, v in SITE.items())
    intake = ", ".join(f"`{k}: {_show(v)}`" for k, v in INTAKE.items())
    lines = [
        "# Deciding questions and cautions not yet excluded, per diagnosis",
        "",
        "Generated by `python benchmarks/questions_table.py` (a test fails when this page is "
        "stale). Each row is the distinct bare clinic cases of one diagnosis (age, sex, "
        "diagnosis, lowest level, levels, planned procedure; the mix of levels and procedures "
        f"of a synthetic cohort, {ROWS} rows, seed {SEED}), screened without and with the site "
        f"profile `{site}`. A deciding question is one a red-flag or major rule that can "
        "change the verdict needs (`deciding_questions` in the JSON result): only these make "
        "a case `insufficient_data`. The questions of the cautions not yet excluded "
        "(`open_cautions`) are counted apart: they never hold a verdict back. Targets (issue "
        "28), the mean number of deciding questions with the site profile: at most 3 for disc "
        "herniation, stenosis and degenerative disc disease, 3.5 for spondylolisthesis, 6 for "
        "fracture, tumour and infection, and for adult deformity no more than the inputs of "
        f"the MISDEF classification plus the red flags ({limit}: "
        f"{', '.join(deformity_fields)}). For comparison only (not the target's case): the "
        f"same cases with the site profile and routine intake recorded ({intake}).",
        "",
        "| diagnosis | cases | deciding, bare: mean (max) | deciding, with site: mean (max) "
        "| of which red flags | target | met | insufficient_data with site "
        "| deciding, with site and intake: mean (max) | deciding questions with site (share "
        "of cases) | caution questions with site: mean | caution questions (share of cases) |",
        "|---|---:|---:|---:|---:|---:|:-:|---:|---:|---|---:|---|",
    ]
    for diagnosis in FIELDS_BY_NAME["diagnosis"].values:
        found = by_diagnosis.get(diagnosis)
        if not found:
            continue
        bare_counts = [len(b) for b, _, _, _, _ in found]
        site_counts = [len(s) for _, s, _, _, _ in found]
        flags = statistics.fmean(f for _, _, _, f, _ in found)
        mean = statistics.fmean(site_counts)
        target: float | None = TARGETS.get(diagnosis)
        if diagnosis == "adult_deformity":
            target = limit
        met = "" if target is None else ("yes" if mean <= target else "no")
        asked = Counter(name for _, s, _, _, _ in found for name in s)
        fields = _shares(asked, len(found))
        cautions = Counter(name for *_, c in found for name in c)
        caution_mean = statistics.fmean(len(c) for *_, c in found)
        insufficient = sum(v is Verdict.insufficient_data for _, _, v, _, _ in found)
        intake_counts = with_intake[diagnosis]
        lines.append(
            f"| {diagnosis} | {len(found)} | {statistics.fmean(bare_counts):.1f} "
            f"({max(bare_counts)}) | {mean:.1f} ({max(site_counts)}) | {flags:.1f} | "
            f"{'' if target is None else target} | {met} | "
            f"{100 * insufficient / len(found):.0f} % | {statistics.fmean(intake_counts):.1f} "
            f"({max(intake_counts)}) | {fields or 'none'} | {caution_mean:.1f} | "
            f"{_shares(cautions, len(found)) or 'none'} |"
        )
    lines.append("")
    return "\n".join(lines)


def _shares(asked: Counter[str], cases: int) -> str:
    """The fields most often asked, each with its share of the cases."""
    fields = ", ".join(
        f"`{name}` ({100 * count / cases:.0f} %)"
        for name, count in sorted(asked.items(), key=lambda i: (-i[1], i[0]))[:TOP_FIELDS]
    )
    if len(asked) > TOP_FIELDS:
        fields += f", and {len(asked) - TOP_FIELDS} more"
    return fields


def main() -> None:
    PAGE.write_text(render())
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
