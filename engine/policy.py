"""From rule outcomes to a verdict (rules/policy.yaml): the one place that decides verdicts.

Besides the verdict, the policy says what the open questions can still do to it: the verdicts
still possible if every not-evaluable rule resolved either way (fired or not fired), which of those
rules can change the verdict, and the fields to ask first. No other module decides which
severities or statuses block a verdict: they ask a `VerdictPolicy` (`policy_for(ruleset)`).

Possible verdicts are computed from the notable outcomes only (fired, conditional, not
evaluable): the verdict of a settled case depends only on which (status, severity) pairs are
present, so each open rule adds its severity as fired or not, and the answers for one set of
present pairs are computed once per ruleset and reused (at most a few dozen sets occur).
Conditional considerations (scope unknown) never count toward the verdict, resolved or not.

Open rules of the severities `open_cautions` lists (the bundled policy: caution) never hold a
verdict back: the verdict is the one the settled rules give, and they are listed as cautions not
yet excluded. The questions of the other open rules that can change the verdict (red flag and
major) are the deciding ones, ranked first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from engine.models import PolicyEntry, RuleOutcome, RuleStatus, Severity, Verdict
from engine.rules.ruleset import Ruleset

Present = frozenset[tuple[RuleStatus, str]]
NOT_EVALUABLE = RuleStatus.not_evaluable
FIRED = RuleStatus.fired
_SEVERITY_RANK = {s.value: i for i, s in enumerate(Severity)}


@dataclass(frozen=True, slots=True)
class Outlook:
    """What the policy makes of one set of present (status, severity) pairs."""

    entry: PolicyEntry  # the verdict given now
    possible: tuple[Verdict, ...]  # reachable by resolving the open rules, best first
    changing: frozenset[str]  # severities whose open rules can change the verdict


@dataclass(frozen=True, slots=True)
class Assessment:
    """The verdict of one case and what its open questions can do to it."""

    entry: PolicyEntry
    possible: tuple[Verdict, ...]
    exact: bool
    changing: tuple[RuleOutcome, ...]  # not-evaluable outcomes that can change the verdict
    next_questions: tuple[str, ...]  # their fields, most decisive first (deciding ones first)
    deciding_questions: tuple[str, ...]  # the next_questions of non-listed (deciding) rules
    open_cautions: tuple[RuleOutcome, ...]  # not-evaluable outcomes of a listed severity


class VerdictPolicy:
    """A ruleset's verdict policy, with its answers cached per set of present outcome kinds."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.severity_of = ruleset.severity_of
        self.triggers = ruleset.policy_triggers
        self.ignores_inert = ruleset.policy_ignores_inert
        undecided = [i for i, (entry, _) in enumerate(self.triggers) if entry.if_undecided]
        self.undecided_at = undecided[0] if undecided else None
        listing = ruleset.policy.open_cautions
        self.listed = frozenset(s.value for s in listing.severity) if listing else frozenset()
        self._outlooks: dict[Present, Outlook] = {}
        self._group = _linked_fields(ruleset)

    # --- verdicts ------------------------------------------------------------------------------

    def present(self, outcomes: Iterable[RuleOutcome]) -> Present:
        severity_of = self.severity_of
        return frozenset((o.status, severity_of[o.rule_id]) for o in outcomes)

    def outlook(self, present: Present) -> Outlook:
        found = self._outlooks.get(present)
        if found is None:
            found = self._outlooks[present] = self._outlook(present)
        return found

    def decide(self, outcomes: Sequence[RuleOutcome], notable: Sequence[RuleOutcome]) -> Outlook:
        """The outlook of a case from its outcomes (`notable`: screen.notable_outcomes)."""
        if self.ignores_inert:
            return self.outlook(self.present(notable))
        # a policy that reads not-fired or not-applicable outcomes needs them all (not cached)
        return self._outlook(self.present(outcomes))

    def _first(self, present: Present) -> int:
        for index, (_, triggers) in enumerate(self.triggers):
            if triggers is None or not triggers.isdisjoint(present):
                return index
        raise AssertionError("unreachable: the policy's last entry is a default")  # load check

    def _outlook(self, present: Present) -> Outlook:
        settled = frozenset(p for p in present if p[0] is not NOT_EVALUABLE)
        open_severities = sorted({s for status, s in present if status is NOT_EVALUABLE})

        def verdict_if(fired: Iterable[str]) -> Verdict:
            resolved = settled | {(FIRED, s) for s in fired}
            return self.triggers[self._first(resolved)][0].verdict

        possible = {
            verdict_if(subset)
            for size in range(len(open_severities) + 1)
            for subset in combinations(open_severities, size)
        }
        changing = frozenset(
            severity
            for severity in open_severities
            if any(
                verdict_if((*subset, severity)) != verdict_if(subset)
                for others in ([s for s in open_severities if s != severity],)
                for size in range(len(others) + 1)
                for subset in combinations(others, size)
            )
        )
        index = self._first(present)
        at = self.undecided_at
        if at is not None and index > at and changing - self.listed:
            index = at
        ordered = tuple(sorted(possible, key=verdict_rank, reverse=True))
        return Outlook(self.triggers[index][0], ordered, changing)

    # --- questions -----------------------------------------------------------------------------

    def assess(self, outlook: Outlook, notable: Sequence[RuleOutcome]) -> Assessment:
        """Which open rules can change the verdict, whether the possible verdicts are exact,
        and the fields to ask first."""
        changing = self.changing(outlook, notable)
        ranked, deciding = self.questions(changing)
        severity_of, listed = self.severity_of, self.listed
        return Assessment(
            outlook.entry,
            outlook.possible,
            self.exact(changing),
            changing,
            ranked,
            deciding,
            tuple(
                o for o in notable if o.status is NOT_EVALUABLE and severity_of[o.rule_id] in listed
            )
            if listed
            else (),
        )

    def questions(self, changing: Sequence[RuleOutcome]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The next and the deciding questions of the verdict-changing outcomes (assess's, and
        a cohort's without the rest of an assessment: engine.cohort)."""
        ranked = self.rank_questions(changing)
        severity_of, listed = self.severity_of, self.listed
        deciding = {
            name for o in changing if severity_of[o.rule_id] not in listed for name in o.missing
        }
        return ranked, tuple(name for name in ranked if name in deciding)

    def changing(self, outlook: Outlook, notable: Sequence[RuleOutcome]) -> tuple[RuleOutcome, ...]:
        """The not-evaluable outcomes whose answer can change the verdict."""
        if not outlook.changing:
            return ()
        severity_of, severities = self.severity_of, outlook.changing
        return tuple(
            o for o in notable if o.status is NOT_EVALUABLE and severity_of[o.rule_id] in severities
        )

    def exact(self, changing: Sequence[RuleOutcome]) -> bool:
        """The possible verdicts are exact when the rules that can change the verdict share no
        field (fields a constraint links count as shared): each can then resolve either way
        whatever the others do. Otherwise they are a bound: every reachable verdict is listed,
        and some listed ones may not be reachable together."""
        if len(changing) < 2:
            return True
        group = self._group
        seen: set[str] = set()
        for outcome in changing:
            groups = {group.get(f, f) for f in outcome.missing}
            if not seen.isdisjoint(groups):
                return False
            seen |= groups
        return True

    def rank_questions(self, changing: Sequence[RuleOutcome]) -> tuple[str, ...]:
        """Fields of the verdict-changing rules, most decisive first: the deciding ones (needed
        by a rule of a severity open_cautions does not list) before the others; then a field
        needed by more red-flag rules first, then by more major rules, then caution, ...; then
        by name."""
        if not changing:
            return ()
        counts: dict[str, list[int]] = {}
        severity_of, rank, listed = self.severity_of, _SEVERITY_RANK, self.listed
        for outcome in changing:
            severity = severity_of[outcome.rule_id]
            position = rank[severity] + 1
            for name in outcome.missing:
                tally = counts.get(name)
                if tally is None:
                    tally = counts[name] = [0] * (len(rank) + 1)
                tally[position] -= 1  # negative: more rules sort first
                if severity not in listed:
                    tally[0] = -1  # deciding: before every question only listed rules need
        return tuple(sorted(counts, key=lambda name: (counts[name], name)))

    def reports_open_questions(self, verdict: Verdict) -> bool:
        """Whether this verdict already says that open questions keep it from being settled
        (its policy entry is selected by not-evaluable rules or by an undecided outcome)."""
        for entry, triggers in self.triggers:
            if entry.verdict is verdict:
                return entry.if_undecided or any(
                    status is NOT_EVALUABLE for status, _ in triggers or ()
                )
        return False


def policy_for(ruleset: Ruleset) -> VerdictPolicy:
    """The ruleset's verdict policy, built once and kept by the ruleset itself."""
    found = ruleset.__dict__.get("_verdict_policy")  # as functools.cached_property stores it
    if not isinstance(found, VerdictPolicy):
        found = ruleset.__dict__["_verdict_policy"] = VerdictPolicy(ruleset)
    return found


def decide_verdict(outcomes: Iterable[RuleOutcome], ruleset: Ruleset) -> PolicyEntry:
    """The policy entry a case's outcomes select (every outcome, or its notable ones)."""
    policy = policy_for(ruleset)
    return policy.outlook(policy.present(outcomes)).entry


def verdict_rank(verdict: Verdict) -> int:
    """0 for the highest verdict (urgent_review), 4 for the lowest."""
    return list(Verdict).index(verdict)


def _linked_fields(ruleset: Ruleset) -> dict[str, str]:
    """Field -> a representative of the fields constraints link to it (union-find)."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.get(name, name) != name:
            name = parent[name]
        return name

    for _, name, _, _, _, reads in ruleset.compiled_narrowings:
        for other in reads:
            a, b = find(name), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {name: find(name) for name in parent} | {root: root for root in map(find, list(parent))}
