"""`engine.Screener`: the one entry point for screening, from a notebook, a service or the CLI.

```python
from engine import Screener

screener = Screener.load()                      # the bundled rules
result = screener.screen({"case_id": "x", "age_years": 40})   # durable-rules
frame = screener.screen_frame(df)               # pandas or polars in, the same library out:
                                                # the cohort engine (vectorised)
```

A Screener is built once and never changes: it owns the compiled ruleset (whose per-case caches
live on it, `Ruleset.memo` and the condition nodes), the evaluator, the verdict policy and the
site profile. It can be called from several threads: the durable-rules handles are held by one
thread at a time (engine.evaluate.durable.HandleSet), and every other step only reads shared
state or fills caches idempotently. Threads give no speed-up (the C engine holds the GIL);
for speed, batch runs use processes, each with its own Screener (engine.batch.worker).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from engine.derive import Facts
from engine.dictionary import DERIVED_FIELDS, INPUT_FIELDS
from engine.errors import CaseInputError, CaseProblem, UsageError
from engine.evaluate.base import Evaluator
from engine.io.cases import check_site, read_site, validate_case
from engine.io.deid import case_id_identifier_kinds, escape_text, scan_columns, shown_name
from engine.models import (
    Result,
    RulesetStamp,
    RuleStatus,
    Scalar,
    Severity,
    SiteProfile,
    SiteValue,
    Verdict,
)
from engine.policy import VerdictPolicy, policy_for
from engine.rules.bundled import bundled_rules_dir
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset
from engine.screen import (
    Decision,
    Screening,
    decide,
    decide_many,
    prepare,
    screening_of,
)

if TYPE_CHECKING:  # screen_frame imports them when it runs: a single case never needs them
    from engine.evaluate.vectorised import CohortPlan
    from engine.mapping import ColumnMapping

EngineName = Literal["durable", "reference", "vectorised"]
ENGINES: tuple[str, ...] = ("durable", "reference", "vectorised")
# the engine of every cohort command (batch, rules diff, rules sweep, agree) unless --engine says
# otherwise; single cases and the service keep durable-rules. The one place to switch it: the
# vectorised engine, which the identity tests hold byte-identical to durable-rules and the
# reference (docs/vectorised.md says which)
COHORT_ENGINE: EngineName = "vectorised"
CaseLike = Mapping[str, Any] | BaseModel
SUBGROUP_FIELDS = ("diagnosis", "planned_procedure", "region")  # verdicts broken down by these
FRAME_CHUNK_ROWS = 50_000  # rows screen_frame hands the vectorised engine at once
BATCH = 512  # cases screened together by screen_many and screen_frame (durable-rules batches)
SEVERITY_COLUMNS = tuple(f"fired_{s.value}" for s in Severity)
# enum members and values as plain names: flat_outcomes runs once per batch row, and looking up
# a member on its class or reading `.value` is a Python-level call each time
_SEVERITIES = tuple(s.value for s in Severity)  # the columns' order
_FIRED, _CONDITIONAL, _NOT_EVALUABLE = (
    RuleStatus.fired,
    RuleStatus.conditional,
    RuleStatus.not_evaluable,
)
# screen_frame's columns: batch --format csv's, then what a notebook needs without merging
FRAME_COLUMNS = (
    "case_id",
    "verdict",
    *SEVERITY_COLUMNS,
    "conditional",
    "not_evaluable",
    "missing_fields",
    "open_cautions",
    "possible_verdicts",
    "next_questions",
    "deciding_questions",
    "rejected",
)


@dataclass(frozen=True)
class InputError:
    """A case that could not be screened: a value in the stream, never raised mid-stream.

    `row` is the case's position in the input, counted from 0 (as `df.iloc`); `case_id` is
    None when the id is missing, invalid or shaped like an identifier; `field` and `reason`
    name the first problem, `problems` lists every one. No value that might identify someone
    is ever carried: reasons withhold them as the CLI's error lines do.
    """

    row: int | None
    case_id: str | None
    field: str | None
    reason: str
    problems: tuple[CaseProblem, ...]
    source: str = "<input>"

    @classmethod
    def from_error(cls, error: CaseInputError, row: int | None = None) -> InputError:
        first = error.problems[0] if error.problems else CaseProblem(None, "invalid case")
        case_id = (
            error.case_id if error.case_id and not case_id_identifier_kinds(error.case_id) else None
        )
        return cls(
            row=row if row is not None else error.row,
            case_id=case_id,
            field=first.field,
            reason=first.message,
            problems=tuple(error.problems),
            source=error.source,
        )

    @property
    def reasons(self) -> str:
        """Every problem as `field: reason`, joined by "; " (the `rejected` column)."""
        return "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in self.problems)

    def __str__(self) -> str:
        where = [self.source]
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (case_id {self.case_id})" if self.case_id else ""))
        elif self.case_id:
            where.append(f"case_id {self.case_id}")
        return f"{': '.join(where)}: {self.reasons}"


def check_engine(engine: str) -> str:
    """`engine` if ENGINES lists it; otherwise a UsageError naming the ones there are."""
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def is_unknown(value: object) -> bool:
    """None, NaN, pandas' NA and NaT, and empty text: a value not given (unknown, not false)."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")  # pandas, without importing it


def plain_values(case: CaseLike) -> dict[str, Any]:
    """A case as plain values with every unknown left out (numpy scalars made Python ones)."""
    raw = case.model_dump(exclude_none=True) if isinstance(case, BaseModel) else case
    plain: dict[str, Any] = {}
    for name, value in raw.items():
        if is_unknown(value):
            continue
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            value = value.item()
            if is_unknown(value):
                continue
        plain[name] = value
    return plain


@dataclass(frozen=True, eq=False)
class Screener:
    """Screens cases with one ruleset, evaluator, verdict policy and site profile (immutable).

    Build it with `Screener.load(...)`; every method can be called from several threads.
    """

    ruleset: Ruleset
    evaluator: Evaluator
    engine: str  # single cases (screen, screen_many); "vectorised" screens them with durable
    _site: Mapping[str, SiteValue]
    _cohort_engine: str | None = None  # screen_frame's, when not `engine` (see cohort_engine)

    @classmethod
    def load(
        cls,
        rules: str | Path | None = None,
        engine: EngineName | str | None = None,
        site: str | Path | Mapping[str, Any] | None = None,
        *,
        few_cases: bool = False,
    ) -> Screener:
        """Load and check a rules directory (default: the bundled rules), build its evaluator and
        validate the site profile (a YAML/JSON file or a mapping, checked as `--site` is).

        `engine`: None (the default) screens single cases with durable-rules and frames with
        the cohort engine (COHORT_ENGINE, vectorised), as the CLI's `screen` and `batch` do; a
        named engine is used for both (`durable` and `reference` frames run row by row, for the
        differential). `few_cases`: the process screens a handful of cases (the `screen`
        command); durable-rules gets a layout quicker to build and slower per case, with the
        same outcomes."""
        if engine is not None:
            check_engine(str(engine))
        ruleset = load_ruleset(rules if rules is not None else bundled_rules_dir())
        screener = cls.from_ruleset(
            ruleset, engine=str(engine or "durable"), site=site, few_cases=few_cases
        )
        return screener if engine is not None else replace(screener, _cohort_engine=COHORT_ENGINE)

    @property
    def cohort_engine(self) -> str:
        """The engine screen_frame uses: the one named when the Screener was loaded, or, when
        none was, the cohort engine (COHORT_ENGINE)."""
        return self._cohort_engine or self.engine

    @classmethod
    def from_ruleset(
        cls,
        ruleset: Ruleset,
        engine: EngineName | str = "durable",
        site: str | Path | Mapping[str, Any] | None = None,
        *,
        few_cases: bool = False,
    ) -> Screener:
        """A Screener for a ruleset already loaded (its caches are shared with other users);
        `few_cases` as for load."""
        profile = _site_profile(site)
        if str(engine) == "reference":
            from engine.evaluate.reference import ReferenceEvaluator

            evaluator: Evaluator = ReferenceEvaluator(ruleset)
        elif str(engine) == "vectorised":
            # cohorts go through cohort_plan; durable-rules screens single cases and the rows
            # the plan leaves to the per-row path, built when the first one comes (deferred.py)
            from engine.evaluate.deferred import DeferredEvaluator

            evaluator = DeferredEvaluator(ruleset, partial(_durable, ruleset, few_cases))
        else:
            evaluator = _durable(ruleset, few_cases)
        return cls(ruleset, evaluator, str(engine), profile)

    def with_site(self, site: str | Path | Mapping[str, Any] | None) -> Screener:
        """The same rules and evaluator with another site profile (nothing is rebuilt)."""
        return replace(self, _site=_site_profile(site))

    def with_cohort_plan(self, plan: CohortPlan) -> Screener:
        """The same Screener deciding its cohorts with `plan`, compiled from its own ruleset and
        site profile (`rules sweep`'s plan also gives the statuses of edited copies of a rule)."""
        if plan.ruleset is not self.ruleset:
            raise ValueError("a cohort plan must be compiled from the Screener's own ruleset")
        screener = replace(self)  # the same fields (the cohort engine too), no cached plan
        screener.__dict__["cohort_plan"] = plan  # the cached_property below, filled in
        return screener

    @cached_property
    def cohort_plan(self) -> CohortPlan:
        """The ruleset and site compiled for cohorts (engine.evaluate.vectorised), built once."""
        from engine.evaluate.vectorised import CohortPlan

        return CohortPlan(self.ruleset, probes=SUBGROUP_FIELDS, site=self._site)

    def cohort_prepare(self, values: dict[str, Scalar]) -> Facts:
        """The facts of a cohort's representative row (CaseInputError if they contradict)."""
        return self.prepare("", values)[0]

    # --- what it screens with ------------------------------------------------------------------

    @property
    def ruleset_stamp(self) -> RulesetStamp:
        """Name, version and sha256 of the rules every result is stamped with."""
        return self.ruleset.stamp

    @property
    def site(self) -> Mapping[str, SiteValue]:
        """The site profile applied to cases that lack a setting (read-only)."""
        return self._site

    @property
    def policy(self) -> VerdictPolicy:
        """The verdict policy (rules/policy.yaml): the one place that decides verdicts."""
        return policy_for(self.ruleset)

    def __repr__(self) -> str:
        stamp = self.ruleset.stamp
        site = f", site={dict(self._site)!r}" if self._site else ""
        cohort = f", cohort_engine={self._cohort_engine!r}" if self._cohort_engine else ""
        return (
            f"Screener(rules={stamp.name!r} {stamp.version} sha256 {stamp.sha256[:12]}, "
            f"engine={self.engine!r}{cohort}{site})"
        )

    # --- one case ------------------------------------------------------------------------------

    def validate(
        self, case: CaseLike, *, source: str = "<case>", row: int | None = None
    ) -> tuple[str, dict[str, Scalar]]:
        """The case_id and known values of a case (unknowns dropped); CaseInputError if invalid."""
        return validate_case(plain_values(case), source, row=row)

    def screen(self, case: CaseLike, *, source: str = "<case>") -> Result:
        """Screen one case (a mapping of data-dictionary fields, or a Case); the JSON contract.

        Raises CaseInputError (a UserError) when the case is invalid; screen_many never does.
        """
        case_id, values = self.validate(case, source=source)
        return self.screening(case_id, values, source=source).result

    def screening(
        self, case_id: str, values: Mapping[str, Scalar], *, source: str = "<case>"
    ) -> Screening:
        """The result and every rule's outcome of one validated case."""
        return screening_of(case_id, self.decide(case_id, values, source=source), self.ruleset)

    def decide(
        self, case_id: str, values: Mapping[str, Scalar], *, source: str = "<case>"
    ) -> Decision:
        """Facts, outcomes and verdict of one validated case, before any report is built."""
        return decide(case_id, values, self.ruleset, self.evaluator, site=self._site, source=source)

    def prepare(
        self, case_id: str, values: Mapping[str, Scalar], *, source: str = "<case>"
    ) -> tuple[Facts, dict[str, Scalar]]:
        """A validated case's facts and assumed values (CaseInputError if they contradict)."""
        return prepare(case_id, values, self.ruleset, site=self._site, source=source)

    def decide_many(self, prepared: list[tuple[Facts, dict[str, Scalar]]]) -> list[Decision]:
        """decide() for many prepared cases at once (durable-rules takes them in batches)."""
        return decide_many(prepared, self.ruleset, self.evaluator)

    def result_of(self, case_id: str, decision: Decision) -> Result:
        """The full result (the JSON contract) of a decided case."""
        return screening_of(case_id, decision, self.ruleset).result

    # --- many cases ----------------------------------------------------------------------------

    def screen_many(
        self, cases: Iterable[CaseLike], *, source: str = "<input>"
    ) -> Iterator[Result | InputError]:
        """Screen cases lazily, in order: a Result per valid case, an InputError per invalid one.

        Never raises for a bad case, so one bad row never stops a cohort. Each case is screened
        as `screen` screens it, on the Screener's evaluator (durable-rules unless `reference`
        was named): a full Result shows values the cohort engine does not build (as `batch
        --detail full`); screen_frame is the cohort path.
        """
        for case_id_values in self._decided(enumerate(cases), source):
            case_id, decided = case_id_values
            yield decided if isinstance(decided, InputError) else self.result_of(case_id, decided)

    def _decided(
        self, numbered: Iterable[tuple[int, CaseLike | InputError]], source: str
    ) -> Iterator[tuple[str, Decision | InputError]]:
        """(case_id, Decision or InputError) per case in order, screened BATCH at a time."""
        numbered = iter(numbered)
        while chunk := list(islice(numbered, BATCH)):
            slots: list[tuple[str, int | InputError]] = []
            prepared: list[tuple[Facts, dict[str, Scalar]]] = []
            for row, case in chunk:
                if isinstance(case, InputError):  # refused before validation (by a mapping)
                    slots.append(("", case))
                    continue
                try:
                    case_id, values = self.validate(case, source=source, row=row)
                    prepared.append(self.prepare(case_id, values, source=source))
                except CaseInputError as exc:
                    slots.append(("", InputError.from_error(exc, row)))
                    continue
                slots.append((case_id, len(prepared) - 1))
            decisions = self.decide_many(prepared)
            for case_id, slot in slots:
                yield case_id, (slot if isinstance(slot, InputError) else decisions[slot])

    def screen_frame(
        self,
        frame: Any,
        *,
        ignore: Sequence[str] = (),
        mapping: str | Path | Mapping[str, Any] | ColumnMapping | None = None,
        strict_columns: bool = False,
        pseudonymise_ids: str | Path | None = None,
    ) -> Any:
        """Screen every row of a pandas or polars DataFrame; a DataFrame of the same library.

        One output row per input row, in order, on the caller's index (pandas) (columns:
        FRAME_COLUMNS). Rule ids are joined with ";" as in `batch --format csv`; a row that
        failed validation has its reasons in `rejected` and nothing else but its case_id (when
        valid), so nothing needs merging back. NaN, None, pd.NA and empty strings are unknown;
        values are normalised as everywhere (`Male`, `L4/5`, ids read as 101 or 101.0 come back
        as the text `101`). Columns the data dictionary does not know (a note, a surgeon) are
        left out, listed in the result's `attrs["ignored_columns"]` (pandas); one whose name
        says it identifies someone (a name, an MRN, a date of birth) refuses the frame.
        `ignore`: columns to leave out without that check; `strict_columns`: refuse unknown
        columns instead (as `batch --strict-columns`).
        `mapping`: a mapping file (docs/mapping.md) as a path or the same structure as a dict,
        applied to each row first, as `batch --map` does; the columns checked are then the
        mapped ones (the identifier guard also reads the names of those it maps).
        `pseudonymise_ids`: a key file, as `batch --pseudonymise-ids` takes (created if absent):
        each case_id (after the mapping) is replaced by its keyed pseudonym before it is
        checked.
        Engine: `cohort_engine`, the cohort engine (vectorised) for a Screener loaded without
        one, so a notebook gets batch's speed without asking. There the frame's Arrow columns
        go through batch's own columnar validation and cohort plan and the output is built
        column by column; only the rows the plan leaves (and every row, with a mapping) are
        screened one by one. A Screener loaded for `durable` or `reference` screens every row
        one by one: the same frame, for the differential.
        """
        import numpy as np
        import pyarrow as pa

        from engine.io.pseudonymise import load_key, pseudonymise_column, pseudonymise_row
        from engine.mapping import ColumnMapping, load_mapping

        library = type(frame).__module__.split(".")[0]
        if library not in ("pandas", "polars"):
            raise UsageError(f"screen_frame takes a pandas or polars DataFrame, got {type(frame)}")
        mapper = None
        names: Iterable[object] = frame.columns
        if mapping is not None:  # the columns checked are those the mapping gives
            mapper = mapping if isinstance(mapping, ColumnMapping) else load_mapping(mapping)
            raw = [str(name) for name in frame.columns if name not in ignore]
            # the guard, by name; as in batch, a column that becomes the pseudonymised case_id
            # is hashed before anything reads it, so its name (MRN, ...) does not refuse it
            hashed = frozenset(mapper.sources_of("case_id")) if pseudonymise_ids else frozenset()
            read = [name for name in mapper.read_columns(raw) if name not in hashed]
            _unknown_columns(read, ignore, False)
            names = mapper.output_columns(raw)
        skipped = frozenset(ignore) | _unknown_columns(names, ignore, strict_columns)
        key = load_key(str(pseudonymise_ids)) if pseudonymise_ids is not None else None
        table, typed = _frame_table(frame, library)
        # by column, as batch screens a record batch: without a mapping, whose rows are mapped
        # one by one (batch does the same)
        decided: list[_FrameRows] = []
        if self.cohort_engine == "vectorised" and table is not None and mapper is None:
            given = table.drop_columns([n for n in table.column_names if n in skipped])
            column = given.column("case_id") if "case_id" in given.column_names else None
            if column is not None and _id_type(column.type):
                # ids as text, as the row path reads them (else the rows go one by one)
                ids = (
                    pseudonymise_column(key, column.combine_chunks())
                    if key is not None
                    else _text_ids(column.combine_chunks())
                )
                position = given.column_names.index("case_id")
                given = given.set_column(position, "case_id", ids)
            if key is None or (column is not None and _id_type(column.type)):
                decided = self._frame_decided(given)
        taken = np.concatenate([np.zeros(0, np.int64), *(part.rows for part in decided)])
        numbers = np.setdiff1d(np.arange(len(frame)), taken)  # screened one by one
        rows = _frame_rows(frame, table if typed else None, numbers.tolist())
        mapped: list[dict[str, Any] | InputError] = list(rows)
        if mapper is not None:
            mapped = [
                _mapped(mapper, number, row)
                for number, row in zip(numbers.tolist(), rows, strict=True)
            ]
        if key is not None:  # after the mapping, which may name the case_id
            mapped = [m if isinstance(m, InputError) else pseudonymise_row(key, m) for m in mapped]
        cases: list[CaseLike | InputError] = [
            m
            if isinstance(m, InputError) or not skipped
            else {k: v for k, v in m.items() if k not in skipped}
            for m in mapped
        ]
        others = [
            self._frame_row(*found)
            for found in self._decided(zip(numbers.tolist(), cases, strict=True), "<frame>")
        ]
        cells = list(zip(*others, strict=True)) if others else [() for _ in FRAME_COLUMNS]
        order = pa.array(np.argsort(np.concatenate([taken, numbers]), kind="stable"))
        table = pa.table(  # the decided rows' parts, then the others, taken in row order
            {
                name: pa.chunked_array(
                    [*(part.columns[n] for part in decided), pa.array(slow, pa.string())],
                    pa.string(),
                ).take(order)
                for n, (name, slow) in enumerate(zip(FRAME_COLUMNS, cells, strict=True))
            }
        )
        if library == "polars":
            import polars

            return polars.from_arrow(table)
        result = table.to_pandas()
        result.index = frame.index
        result.attrs["ignored_columns"] = sorted(skipped - frozenset(ignore))
        return result

    def _frame_decided(self, table: Any) -> list[_FrameRows]:
        """screen_frame's rows the vectorised engine decides (engine.evaluate.vectorised), as
        batch's screen_chunk does for a record batch: their numbers and FRAME_COLUMNS, a part
        per chunk; the others are screened one by one."""
        import numpy as np
        import pyarrow as pa

        from engine.cohort import flat_columns
        from engine.io.columnar import validate_columns

        parts: list[_FrameRows] = []
        for start in range(0, table.num_rows, FRAME_CHUNK_ROWS):
            part = table.slice(start, FRAME_CHUNK_ROWS)
            batches = part.to_batches()  # one, without a copy, unless the frame is chunked
            batch = batches[0] if len(batches) == 1 else part.combine_chunks().to_batches()[0]
            columns = validate_columns(batch, normalise=True)  # no counts to keep here
            if not columns.values:
                continue
            decided = self.cohort_plan.decide(
                columns.values,
                columns.plain.to_numpy(zero_copy_only=False),
                self.cohort_prepare,
                partial(_values_only, columns),
            )
            ids = columns.values["case_id"].take(pa.array(decided.rows, pa.int64()))
            ids = ids.cast(pa.string())
            flat = flat_columns(decided, ids, self.ruleset, compact=False, questions=True)
            assert flat.questions is not None  # noqa: S101  # asked for just above
            parts.append(
                _FrameRows(
                    decided.rows.astype(np.int64) + start,
                    [ids, *flat.columns, *flat.questions.lists(), _nulls(len(ids))],
                )
            )
        return parts

    def flat_row(self, case_id: str, decision: Decision) -> tuple[str, ...]:
        """The `batch --format csv` row of a decided case (engine.batch.worker.FLAT_COLUMNS)."""
        return flat_row(case_id, decision, self.ruleset)

    def _frame_row(self, case_id: str, decided: Decision | InputError) -> tuple[str | None, ...]:
        if isinstance(decided, InputError):
            return (decided.case_id, *([None] * (len(FRAME_COLUMNS) - 2)), decided.reasons)
        assessment = self.policy.assess(decided.outlook, decided.notable)
        return (
            *self.flat_row(case_id, decided),
            ";".join(assessment.possible),
            ";".join(assessment.next_questions),
            ";".join(assessment.deciding_questions),
            None,
        )


def flat_row(case_id: str, decision: Decision, ruleset: Ruleset) -> tuple[str, ...]:
    """A decided case as one flat row: id, verdict, fired rule ids by severity, conditional and
    not-evaluable rule ids and the missing fields, each list joined by ";".

    Reads the notable outcomes only (every fired, conditional and not-evaluable one).
    """
    return flat_outcomes(case_id, decision.policy.verdict, decision.notable, ruleset)


def flat_outcomes(
    case_id: str, verdict: Verdict, notable: Sequence[Any], ruleset: Ruleset
) -> tuple[str, ...]:
    """flat_row from a verdict and the notable outcomes (screen.notable_outcomes); the last
    column lists the open rules of the severities the policy's open_cautions names."""
    severity_of = ruleset.severity_of
    listed = policy_for(ruleset).listed
    cautions: list[str] = []
    by_severity: dict[str, list[str]] = {s: [] for s in _SEVERITIES}
    conditional: list[str] = []
    not_evaluable: list[str] = []
    missing: set[str] = set()
    for outcome in notable:
        status = outcome.status
        if status is _FIRED:
            by_severity[severity_of[outcome.rule_id]].append(outcome.rule_id)
        elif status is _CONDITIONAL:
            conditional.append(outcome.rule_id)
        elif status is _NOT_EVALUABLE:
            not_evaluable.append(outcome.rule_id)
            missing.update(outcome.missing)
            if severity_of[outcome.rule_id] in listed:
                cautions.append(outcome.rule_id)
    return (
        case_id,
        verdict._value_,
        *map(";".join, by_severity.values()),
        ";".join(conditional),
        ";".join(not_evaluable),
        ";".join(sorted(missing)),
        ";".join(cautions),
    )


def _mapped(
    mapping: ColumnMapping, number: int, row: Mapping[str, Any]
) -> dict[str, Any] | InputError:
    """A frame row through the mapping (unknowns first made None), or the rejection it makes."""
    try:
        return mapping.apply(
            {k: None if is_unknown(v) else v for k, v in row.items()}, "<frame>", number
        )
    except CaseInputError as exc:
        return InputError.from_error(exc, number)


def _durable(ruleset: Ruleset, few_cases: bool) -> Evaluator:
    """durable-rules' evaluator of a ruleset (imported here: a vectorised cohort may never ask)."""
    from engine.evaluate.durable import DurableEvaluator

    return DurableEvaluator(ruleset, few_cases=few_cases)


def _site_profile(site: str | Path | Mapping[str, Any] | None) -> Mapping[str, SiteValue]:
    """A site profile from a file or a mapping, validated as `--site` is; read-only."""
    if site is None:
        profile: SiteProfile = {}
    elif isinstance(site, MappingProxyType):
        return site  # already checked (with_site of a Screener's own profile)
    elif isinstance(site, str | Path):
        profile = read_site(str(site))
    else:
        profile = check_site(site)
    return MappingProxyType(profile)


def _unknown_columns(
    names: Iterable[object], ignore: Sequence[str], strict: bool
) -> frozenset[str]:
    """A frame's columns the dictionary does not know, to leave out; UsageError for one named
    like an identifier (always) or for any (strict)."""
    unknown = [
        str(name)
        for name in names
        if name not in INPUT_FIELDS and name not in DERIVED_FIELDS and name not in ignore
    ]
    flagged = scan_columns(unknown)
    if flagged:
        shown = ", ".join(_column_label(f.column) for f in flagged)
        raise UsageError(
            f"screen_frame: columns that look like direct identifiers: {shown}; remove them"
        )
    if strict and unknown:
        shown = ", ".join(_column_label(name) for name in unknown)
        raise UsageError(f"screen_frame: columns not in the data dictionary: {shown}")
    return frozenset(unknown)


def _column_label(name: str) -> str:
    """A column name as an error shows it: withheld when it might be a value (digits in it)."""
    shown = shown_name(name, INPUT_FIELDS)
    if shown is None and not any(ch.isdigit() for ch in name):
        shown = escape_text(name)  # a name that names its kind ("Patient Name")
    return f"'{shown}'" if shown is not None else "(name withheld: it may be data)"


def _values_only(columns: Any, rows: list[int]) -> list[dict[str, Scalar]]:
    """The validated values of some rows of a columnar batch (io.columnar.Columns)."""
    return [values for _, values in columns.row_values(rows)]


def _frame_table(frame: Any, library: str) -> tuple[Any, bool]:
    """A DataFrame as an Arrow table (nulls and NaN become None), and whether its rows can be
    read from it (else from the frame itself, see _mixed_table); (None, False) if neither."""
    import pyarrow as pa

    if library == "polars":
        return frame.to_arrow(), True
    try:
        return pa.Table.from_pandas(frame, preserve_index=False), True
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _mixed_table(frame), False


def _frame_rows(frame: Any, table: Any, numbers: list[int]) -> list[dict[str, Any]]:
    """Some rows of a DataFrame as plain dicts: from its Arrow table when Arrow typed every
    column, else the frame's own records, whose NaN and pd.NA plain_values drops."""
    import pyarrow as pa

    if not numbers:
        return []
    if table is not None:
        every = len(numbers) == table.num_rows
        rows: list[dict[str, Any]] = (
            table if every else table.take(pa.array(numbers, pa.int64()))
        ).to_pylist()
        return rows
    part = frame if len(numbers) == len(frame) else frame.iloc[numbers]
    return [dict(row) for row in part.to_dict("records")]


def _mixed_table(frame: Any) -> Any:
    """A pandas frame some column of which Arrow cannot type, as an Arrow table for the
    vectorised engine: such a column as text (io.columnar.mixed_text), the others as Arrow
    types them; None when even that fails (text column names, say)."""
    import pyarrow as pa

    from engine.io.columnar import mixed_text

    columns: dict[str, Any] = {}
    for name in frame.columns:
        if not isinstance(name, str) or name in columns:
            return None
        try:
            columns[name] = pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            given = plain_values({str(n): v for n, v in enumerate(frame[name])})
            column = [given.get(str(n)) for n in range(len(frame))]
            columns[name] = pa.array([mixed_text(name, v) for v in column], pa.string())
    return pa.table(columns)


@dataclass(frozen=True)
class _FrameRows:
    """Rows of a frame decided by column: their numbers and their FRAME_COLUMNS (Arrow text)."""

    rows: Any  # numpy int64
    columns: list[Any]  # pyarrow string arrays, one per FRAME_COLUMNS


def _nulls(rows: int) -> Any:
    import pyarrow as pa

    return pa.nulls(rows, pa.string())


def _text_ids(column: Any) -> Any:
    """A case_id column as the text the normaliser reads each id as (101 and 101.0 are `101`),
    once per distinct value; null where it gives no text (101.5 stays for the row path)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from engine.io.normalise import normalise_value

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    encoded = pc.dictionary_encode(column)
    read = [normalise_value("case_id", v) for v in encoded.dictionary.to_pylist()]
    text = pa.array([v if isinstance(v, str) and "." not in v else None for v in read], pa.string())
    return text.take(encoded.indices)


def _id_type(kind: Any) -> bool:
    """Whether a case_id column of this Arrow type is pseudonymised by column: text or numbers,
    whose values pseudonymise_row reads alike (others, row by row, as they were)."""
    import pyarrow as pa

    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
    )
