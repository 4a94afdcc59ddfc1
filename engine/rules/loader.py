"""Load a rules directory into a checked Ruleset; every problem is reported as file:line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from engine.dictionary import FIELDS_BY_NAME, FieldGroup, FieldSpec, FieldType
from engine.errors import RuleFileError
from engine.models import (
    CATEGORY_PREFIX,
    Category,
    ConstraintsFile,
    DerivedFile,
    PolicyFile,
    RuleFile,
    RulesetFile,
    Scalar,
    Severity,
    Verdict,
)
from engine.rules.condition import Cond, fields_of, parse_condition, parse_expression
from engine.rules.ruleset import Constraint, DerivedRule, Rule, Ruleset, points_key
from engine.rules.stamp import stamp_from_cache
from engine.yamlsource import ParsedCache, YamlDocument, YamlError, parse_yaml

Model = TypeVar("Model", bound=BaseModel)
MAX_RULE_FILE_BYTES = 1_000_000
INPUT_FIELDS: dict[str, FieldSpec] = {
    name: spec for name, spec in FIELDS_BY_NAME.items() if spec.group is not FieldGroup.derived
}


class _Collector:
    """Gathers every problem so one run of `rules check` shows them all."""

    def __init__(self, root: Path) -> None:
        self.errors: list[RuleFileError] = []
        self.parsed = ParsedCache()  # the files of one load, parsed once across processes
        self.root = root.resolve()  # once per load, not once per file (a path per level)

    def read(self, path: Path) -> YamlDocument:
        """A file of this rules folder, parsed (RuleFileError if it cannot be)."""
        return read_yaml_file(path, self.parsed, self.root)

    def add(self, error: RuleFileError) -> None:
        self.errors.append(error)

    def raise_if_any(self) -> None:
        if self.errors:
            first, *rest = self.errors
            raise RuleFileError(first.message, first.path, first.line, first.key, extra=rest)


def read_yaml_file(
    path: Path, parsed: ParsedCache | None = None, root: Path | None = None
) -> YamlDocument:
    """Read a YAML file, turning unreadable, binary, empty or malformed files into errors
    (`parsed`: documents parsed before, by their text; `root`: the rules folder, resolved
    (once per load, by the loader), which a symbolic link may not leave: a rule file linked to
    /etc/shadow is not read at all)."""
    where = str(path)
    if root is not None and not path.resolve().is_relative_to(root):
        raise RuleFileError("a link to a file outside the rules folder; not read", where)
    try:  # never more than the limit: a rule file that is /dev/zero must not fill the memory
        with open(path, "rb") as handle:
            raw = handle.read(MAX_RULE_FILE_BYTES + 1)
    except OSError as exc:
        raise RuleFileError(f"cannot read file: {exc.strerror}", where) from None
    if len(raw) > MAX_RULE_FILE_BYTES:
        raise RuleFileError("file is larger than 1 MB", where)
    if b"\x00" in raw:
        raise RuleFileError("file is binary, not YAML text", where)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RuleFileError("file is not UTF-8 text", where) from None
    if not text.strip():
        raise RuleFileError("file is empty", where)
    try:
        return parse_yaml(text) if parsed is None else parsed.parse(text)
    except YamlError as exc:
        raise RuleFileError(str(exc), where, exc.line) from None
    except (RecursionError, ValueError):
        raise RuleFileError("file is nested too deeply or holds a value too long", where) from None


# folders of a rules directory that hold no screening rule (patient: the patient summary's words)
NOT_RULE_FOLDERS = ("derived", "terminology", "patient")
_KEY_SHAPE = re.compile(r"[a-z][a-z0-9_]{0,39}")  # how every key of a rules folder file looks


def _validate(model: type[Model], doc: YamlDocument, path: str, errors: _Collector) -> Model | None:
    if not isinstance(doc.data, dict):
        errors.add(RuleFileError("expected a mapping of keys to values", path, 1))
        return None
    if doc.data and not set(doc.data) & set(model.model_fields):
        # some other file (data, a password file) put here: refuse it whole, echoing nothing
        errors.add(
            RuleFileError(
                "not a rules file: none of its keys is one of "
                f"{', '.join(list(model.model_fields)[:4])}, ... (its content is not shown)",
                path,
            )
        )
        return None
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or None
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                known = list(model.model_fields)
                close = difflib.get_close_matches(str(loc[-1]), known, n=1)
                msg = "unknown key" + (f"; did you mean '{close[0]}'?" if close else "")
                if not all(
                    _KEY_SHAPE.fullmatch(str(part)) for part in loc if isinstance(part, str)
                ):
                    key, msg = None, msg + " (name not shown: it is not shaped like a key)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            errors.add(RuleFileError(msg, path, doc.line_of(loc), key))
        return None


def _condition(
    text: str,
    fields: Mapping[str, FieldSpec],
    doc: YamlDocument,
    path: str,
    loc: tuple[str | int, ...],
    errors: _Collector,
) -> Cond | None:
    key = ".".join(str(p) for p in loc)
    try:
        return parse_condition(text, fields, path=path, key=key)
    except RuleFileError as exc:
        exc.line = doc.line_of(loc)  # found only now: line numbers cost a second YAML pass
        errors.add(exc)
        return None


def load_ruleset(directory: str | Path) -> Ruleset:
    """Load and check every file of a rules directory."""
    root = Path(directory)
    if not root.is_dir():
        raise RuleFileError("rules directory not found", str(root))
    errors = _Collector(root)

    meta = _load_model(root / "ruleset.yaml", RulesetFile, errors)
    policy = _load_model(root / "policy.yaml", PolicyFile, errors)
    if policy is not None:
        _check_policy(policy, str(root / "policy.yaml"), errors)
    constraints = _load_constraints(root / "constraints.yaml", errors)
    derived = _load_derived(root / "derived", errors)
    rules = _load_rules(root, derived, errors)
    errors.raise_if_any()
    errors.parsed.save()
    if meta is None or policy is None:  # pragma: no cover - raise_if_any raised already
        raise RuleFileError("ruleset.yaml or policy.yaml could not be loaded", str(root))
    ruleset = Ruleset(
        name=meta.name,
        version=meta.version,
        directory=str(root),
        rules=tuple(rules),
        derived=tuple(derived),
        constraints=tuple(constraints),
        policy=policy,
    )
    stamp_from_cache(ruleset, errors.parsed)
    return ruleset


def _load_model(path: Path, model: type[Model], errors: _Collector) -> Model | None:
    if not path.is_file():
        errors.add(RuleFileError("required file is missing", str(path)))
        return None
    try:
        doc = errors.read(path)
    except RuleFileError as exc:
        errors.add(exc)
        return None
    return _validate(model, doc, str(path), errors)


def _check_policy(policy: PolicyFile, path: str, errors: _Collector) -> None:
    order = [entry.verdict for entry in policy.verdicts]
    if order != list(Verdict):
        errors.add(
            RuleFileError(
                "verdicts must be listed exactly once each, in this order: " + ", ".join(Verdict),
                path,
            )
        )
        return
    for entry in policy.verdicts[:-1]:
        if entry.if_any is None:
            errors.add(RuleFileError(f"verdict {entry.verdict} needs an if_any condition", path))
    if policy.verdicts[-1].if_any is not None:
        errors.add(RuleFileError("the last verdict is the default and takes no if_any", path))
    undecided = [entry.verdict.value for entry in policy.verdicts if entry.if_undecided]
    if len(undecided) > 1:
        listed = ", ".join(undecided)
        errors.add(RuleFileError(f"only one verdict may take if_undecided, not {listed}", path))
    if policy.verdicts[-1].if_undecided:
        errors.add(RuleFileError("the last verdict is the default and takes no if_undecided", path))


def _load_constraints(path: Path, errors: _Collector) -> list[Constraint]:
    if not path.is_file():
        return []
    try:
        doc = errors.read(path)
    except RuleFileError as exc:
        errors.add(exc)
        return []
    where = str(path)
    parsed = _validate(ConstraintsFile, doc, where, errors)
    if parsed is None:
        return []
    result: list[Constraint] = []
    seen: set[str] = set()
    for i, con in enumerate(parsed.constraints):
        loc: tuple[str | int, ...] = ("constraints", i)
        if con.id in seen:
            errors.add(RuleFileError(f"duplicate id {con.id}", where, doc.line_of(loc)))
        seen.add(con.id)
        spec = INPUT_FIELDS.get(con.field)
        if spec is None or spec.type not in (FieldType.enum, FieldType.boolean):
            errors.add(
                RuleFileError(
                    f"'{con.field}' is not an enum or boolean input field",
                    where,
                    doc.line_of((*loc, "field")),
                    "field",
                )
            )
            continue
        narrowings: list[tuple[Cond, frozenset[Scalar]]] = []
        for j, narrowing in enumerate(con.narrowings):
            nloc = (*loc, "narrowings", j)
            cond = _condition(narrowing.when, INPUT_FIELDS, doc, where, (*nloc, "when"), errors)
            bad = [
                v
                for v in narrowing.allowed
                if v not in spec.domain or isinstance(v, bool) != (spec.type is FieldType.boolean)
            ]
            if bad:
                errors.add(
                    RuleFileError(
                        f"{bad[0]!r} is not a value of '{spec.name}'",
                        where,
                        doc.line_of((*nloc, "allowed")),
                        "allowed",
                    )
                )
            if spec.name in (fields_of(cond) if cond else set()):
                errors.add(
                    RuleFileError(
                        "a narrowing cannot read the field it narrows", where, doc.line_of(nloc)
                    )
                )
            if cond is not None and not bad:
                narrowings.append((cond, frozenset(narrowing.allowed)))
        result.append(Constraint(meta=con, spec=spec, narrowings=tuple(narrowings)))
    return result


def _load_derived(folder: Path, errors: _Collector) -> list[DerivedRule]:
    result: list[DerivedRule] = []
    available: dict[str, FieldSpec] = dict(INPUT_FIELDS)
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        where = str(path)
        try:
            doc = errors.read(path)
        except RuleFileError as exc:
            errors.add(exc)
            continue
        meta = _validate(DerivedFile, doc, where, errors)
        if meta is None:
            continue
        if path.stem != f"{meta.id}-{meta.name}":
            errors.add(RuleFileError(f"file name must be {meta.id}-{meta.name}.yaml", where, 1))
        spec = FIELDS_BY_NAME.get(meta.field)
        if spec is None or spec.group is not FieldGroup.derived:
            errors.add(
                RuleFileError(
                    f"'{meta.field}' is not a derived field of the data dictionary",
                    where,
                    doc.line_of(("field",)),
                    "field",
                )
            )
            continue
        if any(d.field == meta.field for d in result):
            errors.add(
                RuleFileError(f"'{meta.field}' is derived twice", where, doc.line_of(("field",)))
            )
            continue
        kinds = ("expression", "bands", "condition", "points")
        if sum(getattr(meta, kind) is not None for kind in kinds) != 1:
            message = "give exactly one of expression, bands, condition or points"
            errors.add(RuleFileError(message, where, 1))
            continue
        rule = _derived_rule(meta, spec, available, doc, where, errors)
        if rule is not None:
            result.append(rule)
        available[spec.name] = spec
    return result


def _derived_rule(
    meta: DerivedFile,
    spec: FieldSpec,
    available: dict[str, FieldSpec],
    doc: YamlDocument,
    where: str,
    errors: _Collector,
) -> DerivedRule | None:
    if meta.expression is not None:
        if not spec.is_numeric:
            errors.add(
                RuleFileError(
                    "an expression defines numbers only", where, doc.line_of(("expression",))
                )
            )
            return None
        loc = ("expression",)
        try:
            expression = parse_expression(
                meta.expression, available, path=where, line=doc.line_of(loc), key="expression"
            )
        except RuleFileError as exc:
            errors.add(exc)
            return None
        return DerivedRule(meta, where, spec, expression=expression)
    if meta.points is not None:
        return _points_rule(meta, spec, doc, where, errors)
    if meta.supplied_total is not None:
        errors.add(
            RuleFileError(
                "supplied_total goes with points", where, doc.line_of(("supplied_total",))
            )
        )
        return None
    if meta.condition is not None:
        if spec.type is not FieldType.boolean:
            errors.add(
                RuleFileError(
                    "a condition defines booleans only", where, doc.line_of(("condition",))
                )
            )
            return None
        cond = _condition(meta.condition, available, doc, where, ("condition",), errors)
        return DerivedRule(meta, where, spec, condition=cond) if cond is not None else None
    bands: list[tuple[Cond, Scalar]] = []
    for i, band in enumerate(meta.bands or []):
        cond = _condition(band.when, available, doc, where, ("bands", i, "when"), errors)
        if not _value_fits(spec, band.value):
            errors.add(
                RuleFileError(
                    f"{band.value!r} is not a valid {spec.type} value for '{spec.name}'",
                    where,
                    doc.line_of(("bands", i, "value")),
                    "value",
                )
            )
            return None
        if cond is not None:
            bands.append((cond, band.value))
    return DerivedRule(meta, where, spec, bands=tuple(bands))


def _points_rule(
    meta: DerivedFile, spec: FieldSpec, doc: YamlDocument, where: str, errors: _Collector
) -> DerivedRule | None:
    """A score summed from enum or boolean components, e.g. TLICS; every value has points."""
    count = len(errors.errors)
    if spec.type is not FieldType.integer:
        errors.add(
            RuleFileError("points define integer scores only", where, doc.line_of(("points",)))
        )
    terms: list[tuple[str, dict[str, int]]] = []
    for i, term in enumerate(meta.points or []):
        loc: tuple[str | int, ...] = ("points", i)
        component = INPUT_FIELDS.get(term.field)
        if component is None or component.type not in (FieldType.enum, FieldType.boolean):
            errors.add(
                RuleFileError(
                    f"'{term.field}' is not an enum or boolean input field",
                    where,
                    doc.line_of(loc),
                )
            )
            continue
        names = {points_key(v) for v in component.domain}  # a boolean's are "true", "false"
        if set(term.values) != names:
            lacking = sorted(names - set(term.values))
            extra = sorted(set(term.values) - names)
            errors.add(
                RuleFileError(
                    f"points of '{term.field}' must cover exactly its values"
                    f" (missing: {lacking}, unknown: {extra})",
                    where,
                    doc.line_of(loc),
                )
            )
            continue
        terms.append((term.field, dict(term.values)))
    total = meta.supplied_total
    if total is not None:
        total_spec = INPUT_FIELDS.get(total)
        if total_spec is None or total_spec.type is not FieldType.integer:
            errors.add(
                RuleFileError(
                    f"supplied_total '{total}' is not an integer input field",
                    where,
                    doc.line_of(("supplied_total",)),
                )
            )
    if len(errors.errors) > count:
        return None
    return DerivedRule(meta, where, spec, points=tuple(terms), supplied_total=total)


def _value_fits(spec: FieldSpec, value: Scalar) -> bool:
    if spec.type is FieldType.boolean:
        return isinstance(value, bool)
    if spec.type is FieldType.enum:
        return value in spec.values
    if spec.type is FieldType.integer:
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.type is FieldType.number:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def condition_fields(derived: Sequence[DerivedRule]) -> dict[str, FieldSpec]:
    """The fields a screening rule's condition may read: the inputs and the derived ones."""
    available: dict[str, FieldSpec] = dict(INPUT_FIELDS)
    available.update({d.field: d.spec for d in derived})
    return available


def _load_rules(root: Path, derived: list[DerivedRule], errors: _Collector) -> list[Rule]:
    available = condition_fields(derived)
    undefined_derived = {
        name for name, spec in FIELDS_BY_NAME.items() if spec.group is FieldGroup.derived
    } - set(available)
    rules: list[Rule] = []
    ids: dict[str, str] = {}
    names: dict[str, str] = {}
    for path in sorted(root.glob("*/*.yaml")):
        if path.parent.name in NOT_RULE_FOLDERS or path.name.endswith(".cases.yaml"):
            continue
        where = str(path)
        try:
            doc = errors.read(path)
        except RuleFileError as exc:
            errors.add(exc)
            continue
        _merge_case_file(path, doc, errors)
        meta = _validate(RuleFile, doc, where, errors)
        if meta is None:
            continue
        for problem, loc in _rule_problems(meta, path, ids, names):
            errors.add(RuleFileError(problem, where, doc.line_of(loc), loc[0] if loc else None))
        ids.setdefault(meta.id, where)
        names.setdefault(meta.name, where)
        scope = (
            _condition(meta.scope, available, doc, where, ("scope",), errors)
            if meta.scope is not None
            else None
        )
        when = _condition(meta.when, available, doc, where, ("when",), errors)
        if when is None or (meta.scope is not None and scope is None):
            continue
        rule = Rule(meta=meta, path=where, scope=scope, when=when)
        for name in set(rule.fields) & undefined_derived:
            errors.add(
                RuleFileError(
                    f"derived field '{name}' has no file in rules/derived/",
                    where,
                    doc.line_of(("when",)),
                )
            )
        rules.append(rule)
    rules.sort(key=lambda r: r.id)
    return rules


def _merge_case_file(path: Path, doc: YamlDocument, errors: _Collector) -> None:
    """Take `cases:` from <id>-<name>.cases.yaml beside the rule, if that file exists."""
    case_path = path.with_name(path.stem + ".cases.yaml")
    if not case_path.is_file() or not isinstance(doc.data, dict):
        return
    if "cases" in doc.data:
        errors.add(
            RuleFileError(
                f"cases are both here and in {case_path.name}; keep one",
                str(path),
                doc.line_of(("cases",)),
            )
        )
        return
    try:
        cases_doc = errors.read(case_path)
    except RuleFileError as exc:
        errors.add(exc)
        return
    if isinstance(cases_doc.data, dict) and "cases" in cases_doc.data:
        doc.data["cases"] = cases_doc.data["cases"]


def _rule_problems(
    meta: RuleFile, path: Path, ids: dict[str, str], names: dict[str, str]
) -> list[tuple[str, tuple[str, ...]]]:
    problems: list[tuple[str, tuple[str, ...]]] = []
    if meta.id in ids:
        problems.append((f"duplicate id {meta.id} (also in {ids[meta.id]})", ("id",)))
    if meta.name in names:
        problems.append((f"duplicate name {meta.name} (also in {names[meta.name]})", ("name",)))
    if path.stem != f"{meta.id}-{meta.name}":
        problems.append((f"file name must be {meta.id}-{meta.name}.yaml", ("id",)))
    if path.parent.name != meta.category:
        problems.append(
            (f"a {meta.category} rule belongs in rules/{meta.category}/", ("category",))
        )
    if not meta.id.startswith(CATEGORY_PREFIX[meta.category] + "-"):
        problems.append(
            (f"a {meta.category} rule id starts with {CATEGORY_PREFIX[meta.category]}-", ("id",))
        )
    if meta.category is Category.benefit and meta.severity is not Severity.info:
        problems.append(
            ("benefit rules are severity info: they never lower a verdict", ("severity",))
        )
    cases = meta.cases
    # a rule whose condition is the constant true (a bare scope) can never be not evaluable
    kinds = ("fires", "does_not_fire") + (() if meta.when.strip() == "true" else ("not_evaluable",))
    for kind in kinds:
        if cases is None or not getattr(cases, kind):
            problems.append((f"needs at least one golden case under cases.{kind}", ("cases",)))
    if cases is not None:
        for golden in cases.not_evaluable:
            if not golden.missing:
                problems.append(
                    (f"not_evaluable case '{golden.name}' must list missing fields", ("cases",))
                )
    return problems
