"""Map FHIR R4 resources to one anonymised case: `fhir_to_case(resources, reference_date)`.

Each resource is parsed on its own with the fhir.resources R4B models, so one bad entry is a
warning naming its index and resource type (never its content) and the rest still count. The
Patient is reduced at once to age_years (capped at 90) and sex; no id, name, identifier, date or
free text is copied into the case, the provenance or a warning. Unknown stays unknown: a field is
set only by a coded resource that says so, and only an explicit negation (a refuted Condition, a
negative coded Observation) sets a boolean false.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import importlib.util
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.dictionary import FIELDS_BY_NAME, SEGMENTS, FieldType
from engine.errors import UserError
from engine.fhir.terminology import UCUM, Terminology, load_terminology
from engine.jsonsource import JsonInputError, RepeatedKeyError, loads_strict, place

Scalar = bool | int | float | str
# A patient's Bundle (or a CDS Hooks request) is read at most this large: an EHR export of one
# patient's conditions and observations outgrows a case file's 1 MB
MAX_FHIR_BYTES = 5 * 2**20
MAX_AGE = 90  # HIPAA Safe Harbor: ages over 89 are reported as 90
BUNDLE_TYPES = ("collection", "searchset", "transaction")
_PROCESS_SALT = secrets.token_bytes(16)
_CASE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_USED = ("Patient", "Observation", "Condition", "ServiceRequest")
_OBS_SKIP = {"entered-in-error", "cancelled", "registered"}
_SR_USE = {"draft", "active", "on-hold"}
_CLINICAL_OFF = {"inactive", "remission", "resolved"}


class FhirInputError(UserError):
    """A FHIR input that cannot be read at all (not JSON, not a Bundle, wrong Bundle type)."""


@dataclass(frozen=True)
class Source:
    """Where one case value came from: a resource type and a code (never an id or text)."""

    resource_type: str
    system: str = ""
    code: str = ""

    def __str__(self) -> str:
        return " ".join(p for p in (self.resource_type, self.system, self.code) if p)


@dataclass
class Mapped:
    """The result of mapping: case values, where each came from, and warnings to show."""

    case: dict[str, Scalar]
    provenance: dict[str, Source]
    warnings: list[str] = field(default_factory=list)
    spine_orders: int = 0  # usable ServiceRequests for a spine operation (0: nothing to screen)

    def __iter__(self) -> Any:  # unpack as (case, provenance, warnings)
        return iter((self.case, self.provenance, self.warnings))


def read_bundle(text: str | bytes, source: str = "FHIR input") -> list[Any]:
    """The entry resources of a collection, searchset or transaction Bundle (JSON text)."""
    try:
        doc = loads_strict(text)
    except JsonInputError as exc:
        raise FhirInputError(f"{source}: {_json_place(exc)}: {_json_reason(exc)}") from None
    except (ValueError, RecursionError):
        raise FhirInputError(f"{source}: not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        raise FhirInputError(f"{source}: expected a FHIR Bundle (resourceType Bundle)")
    if doc.get("type") not in BUNDLE_TYPES:
        raise FhirInputError(f"{source}: Bundle type must be one of {', '.join(BUNDLE_TYPES)}")
    entries = doc.get("entry", [])
    if not isinstance(entries, list):
        raise FhirInputError(f"{source}: Bundle.entry must be a list")
    return [e.get("resource") if isinstance(e, dict) else e for e in entries]


_ELEMENT = re.compile(r"[a-z][A-Za-z]{0,63}|resourceType")  # FHIR element names: letters only


def _element(key: str) -> str | None:
    """An element name as a message may show it; a key of any other shape could be data."""
    return key if _ELEMENT.fullmatch(key) else None


def _json_place(exc: JsonInputError) -> str:
    """Where in a Bundle: `entry 3 (Condition) verificationStatus`, by index, type and element
    names only."""
    path = (*exc.path, exc.key or "") if isinstance(exc, RepeatedKeyError) else exc.path
    if len(path) >= 3 and path[0] == "entry" and isinstance(path[1], int):
        entries = exc.document.get("entry") if isinstance(exc.document, dict) else None
        entry = entries[path[1]] if isinstance(entries, list) else None
        resource = entry.get("resource") if isinstance(entry, dict) else None
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        label = f"entry {path[1]}" + (f" ({_known_type(kind)})" if isinstance(kind, str) else "")
        rest = path[3:] if path[2] == "resource" else path[2:]
        return label + (f" {place(rest, _element)}" if rest else "")
    return place(path, _element)


def _json_reason(exc: JsonInputError) -> str:
    if isinstance(exc, RepeatedKeyError):
        return "given more than once (JSON would keep only the last); send each element once"
    return f"{exc}; FHIR has no NaN or Infinity"


class _Warnings:
    """The mapper's warnings grouped by wording: one line per kind, with its count and first
    entries (400,000 empty entries are one line, not 400,000)."""

    SHOWN_ENTRIES = 5
    MAX_LINES = 20

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str | None], list[int]] = {}
        self.counts: collections.Counter[tuple[str, str | None]] = collections.Counter()

    def add(self, text: str, entry: int | None = None, kind: str | None = None) -> None:
        key = (text, kind)
        self.counts[key] += 1
        found = self.groups.setdefault(key, [])
        if entry is not None and len(found) < self.SHOWN_ENTRIES:
            found.append(entry)

    def lines(self) -> list[str]:
        out: list[str] = []
        for (text, kind), entries in self.groups.items():
            count = self.counts[(text, kind)]
            label = f" ({kind})" if kind else ""
            if not entries:
                out.append(text + (f" ({count:,} times)" if count > 1 else ""))
            elif count == 1:
                out.append(f"entry {entries[0]}{label}: {text}")
            else:
                shown = ", ".join(str(e) for e in entries) + (
                    ", ..." if count > len(entries) else ""
                )
                out.append(f"{count:,} entries ({shown}){label}: {text}")
        if len(out) > self.MAX_LINES:
            more = len(out) - self.MAX_LINES + 1
            out = [*out[: self.MAX_LINES - 1], f"and {more:,} more kinds of warning"]
        return out


def fhir_to_case(
    resources: Iterable[Any],
    reference_date: dt.date,
    *,
    hook_instance: str | None = None,
    salt: bytes | None = None,
    terminology: Path | None = None,
) -> Mapped:
    """Map FHIR R4 resources (dicts, as in Bundle.entry.resource) to one anonymised case.

    case_id is the hookInstance when it is a valid case id, else a salted hash (the salt is
    per process unless given), never Patient.id. Returns case, provenance and warnings.
    """
    m = _Mapper(load_terminology(terminology), reference_date)
    patient_key = m.read_all(list(resources))
    if hook_instance is not None and _CASE_ID.fullmatch(hook_instance):
        m.case["case_id"] = hook_instance
        m.prov["case_id"] = Source("hookInstance")
    else:
        digest = hashlib.sha256((salt or _PROCESS_SALT) + patient_key).hexdigest()
        m.case["case_id"] = f"fhir-{int(digest[:16], 16) % 10**12:012d}"
        m.prov["case_id"] = Source("salted hash")
    return Mapped(m.case, m.prov, m.warnings.lines(), m.spine_orders)


# --- the mapper ---------------------------------------------------------------------------------


MAX_TYPES_SHOWN = 10
# Conditions that can begin within days (red flags and acute infection): a "ruled out" Condition
# excludes one only when recorded at this encounter (the reference date or the day before). An
# undated or older refutation leaves the field unknown, to be asked: unknown is not false. A
# design choice of this mapper, not a clinical threshold from a source.
ACUTE_FIELDS = frozenset(
    {"cauda_equina_syndrome", "epidural_abscess", "sepsis", "spondylodiscitis", "myelopathy"}
)
REFUTATION_DAYS = 1


def _known_type(kind: str) -> str:
    """A resource type as a warning may name it: a real R4B type, else "other" (a made-up type
    name is free text a sender chose, and may identify someone)."""
    if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", kind):
        return "other"
    try:
        found = importlib.util.find_spec(f"fhir.resources.R4B.{kind.lower()}")
    except (ImportError, ValueError):
        return "other"
    return kind if found is not None else "other"


def _models() -> dict[str, Any]:
    from fhir.resources.R4B.condition import Condition
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.patient import Patient
    from fhir.resources.R4B.servicerequest import ServiceRequest

    return {
        "Patient": Patient,
        "Observation": Observation,
        "Condition": Condition,
        "ServiceRequest": ServiceRequest,
    }


def _codings(concept: Any) -> list[tuple[str, str]]:
    if concept is None:
        return []
    return [(c.system or "", c.code or "") for c in (concept.coding or []) if c.code]


def _when(value: Any) -> tuple[int, dt.datetime]:
    """A sortable key for an effective time (no value sorts first); never shown."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return (1, aware)
    if isinstance(value, dt.date):
        return (1, dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC))
    return (0, dt.datetime.min.replace(tzinfo=dt.UTC))


class _Mapper:
    def __init__(self, term: Terminology, reference_date: dt.date) -> None:
        self.term = term
        self.ref = reference_date
        self.case: dict[str, Scalar] = {}
        self.prov: dict[str, Source] = {}
        self.warnings = _Warnings()
        # field -> (time key, value, source) of the latest observation
        self.latest: dict[tuple[str, str], tuple[tuple[int, dt.datetime], Scalar, Source]] = {}
        self.flags: dict[str, list[tuple[Scalar, Source]]] = {}
        self.stale_refutations: set[str] = set()  # acute fields ruled out long ago, or undated
        self.diagnoses: dict[str, Source] = {}
        self.orders: list[tuple[int, Any]] = []
        self.spine_orders = 0

    def read_all(self, resources: list[Any]) -> bytes:
        models = _models()
        patients: list[Any] = []
        ignored: set[str] = set()
        for index, raw in enumerate(resources):
            kind = raw.get("resourceType") if isinstance(raw, Mapping) else None
            if not isinstance(kind, str) or not kind:
                self.warnings.add("not a FHIR resource; skipped", index)
                continue
            if kind not in _USED:
                ignored.add(_known_type(kind))
                continue
            try:
                resource = models[kind].model_validate(dict(raw))
            except (ValidationError, ValueError, TypeError, RecursionError):
                self.warnings.add(f"not a valid R4 {kind}; skipped", index, kind)
                continue
            try:
                if kind == "Patient":
                    patients.append(resource)
                elif kind == "Observation":
                    self._observation(resource, index)
                elif kind == "Condition":
                    self._condition(resource)
                else:
                    self.orders.append((index, resource))
            except (ValueError, TypeError, AttributeError, ArithmeticError):
                self.warnings.add("could not be read; skipped", index, kind)
        if ignored:
            shown = sorted(ignored)[:MAX_TYPES_SHOWN]
            more = f" and {len(ignored) - len(shown)} more" if len(ignored) > len(shown) else ""
            self.warnings.add(f"ignored resource types not used: {', '.join(shown)}{more}")
        key = self._patient(patients)
        self._orders()
        self._settle()
        return key

    # Patient: age and sex only, at once
    def _patient(self, patients: list[Any]) -> bytes:
        if len(patients) > 1:
            self.warnings.add(f"{len(patients)} Patient resources; age and sex left unknown")
            return secrets.token_bytes(16)
        if not patients:
            return secrets.token_bytes(16)
        patient = patients[0]
        key = (patient.id or "").encode() or secrets.token_bytes(16)
        if patient.gender in ("female", "male", "other", "unknown"):
            self._set("sex", patient.gender, Source("Patient", "gender"))
        age = self._age(patient.birthDate)
        if age is not None:
            self._set("age_years", min(age, MAX_AGE), Source("Patient", "birthDate"))
        return key

    def _age(self, birth: Any) -> int | None:
        if birth is None:
            return None
        if isinstance(birth, dt.date):
            year, month, day = birth.year, birth.month, birth.day
        else:  # partial date: YYYY or YYYY-MM; count the birthday as not yet passed
            parts = [int(p) for p in str(birth).split("-")]
            year, month, day = parts[0], parts[1] if len(parts) > 1 else 12, 31
        age = self.ref.year - year - ((self.ref.month, self.ref.day) < (month, day))
        if not 0 <= age <= 120:
            self.warnings.add("Patient birthDate gives an age outside 0-120; age left unknown")
            return None
        return age

    def _observation(self, obs: Any, index: int) -> None:
        if obs.status in _OBS_SKIP:
            return
        when = _when(obs.effectiveDateTime or (obs.effectivePeriod and obs.effectivePeriod.end))
        if when[0] and when[1].date() > self.ref:
            self.warnings.add("dated after the reference date", index, "Observation")
            return
        for system, code in _codings(obs.code):
            quantity = self.term.quantities.get((system, code))
            if quantity is not None:
                self._quantity(obs, quantity.field, quantity.units, when, system, code)
                return
            coded = self.term.coded.get((system, code))
            if coded is not None:
                src = Source("Observation", self.term.system_name(system), code)
                for answer in _codings(obs.valueCodeableConcept):
                    if answer in coded.answers:
                        self._observe(coded.field, when, coded.answers[answer], src)
                        return
                return

    def _quantity(
        self,
        obs: Any,
        name: str,
        units: tuple[str, ...],
        when: Any,
        system: str,
        code: str,
    ) -> None:
        src = Source("Observation", self.term.system_name(system), code)
        q = obs.valueQuantity
        if q is None or q.value is None:
            return
        if q.comparator:
            self.warnings.add(f"{name}: {src} has a comparator (< or >); value not used")
            return
        unit = q.code if q.system == UCUM else None
        if unit is None and not q.system and units == ("{T-score}", "{SD}", "1"):
            unit = "1"  # a T-score sent without a unit is a plain number of SDs
        if unit not in units:
            self.warnings.add(
                f"{name}: {src} has unit other than UCUM {' or '.join(units)}; value not used"
            )
            return
        value = float(Decimal(q.value))
        self._observe(name, when, value, src)

    def _observe(self, name: str, when: Any, value: Scalar, src: Source) -> None:
        key = (name, f"{src.system} {src.code}")
        old = self.latest.get(key)
        if old is None or when >= old[0]:
            self.latest[key] = (when, value, src)

    def _recent(self, recorded: Any) -> bool:
        """Whether a Condition was recorded within REFUTATION_DAYS before the reference date."""
        if recorded is None:
            return False
        day = recorded.date() if isinstance(recorded, dt.datetime) else recorded
        if not isinstance(day, dt.date):
            return False
        return 0 <= (self.ref - day).days <= REFUTATION_DAYS

    def _condition(self, cond: Any) -> None:
        verification = {c for _, c in _codings(cond.verificationStatus)}
        clinical = {c for _, c in _codings(cond.clinicalStatus)}
        if "entered-in-error" in verification:
            return
        refuted = "refuted" in verification
        uncertain = verification & {"unconfirmed", "provisional", "differential"}
        if not refuted and (uncertain or clinical & _CLINICAL_OFF):
            return
        for system, code in _codings(cond.code):
            for name, value in self.term.condition_values(system, code):
                src = Source("Condition", self.term.system_name(system), code)
                if name == "diagnosis":
                    if not refuted:
                        self.diagnoses.setdefault(str(value), src)
                elif refuted:
                    if name in ACUTE_FIELDS and not self._recent(cond.recordedDate):
                        self.stale_refutations.add(name)
                        continue
                    self.flags.setdefault(name, []).append((False, src))
                else:
                    self.flags.setdefault(name, []).append((value, src))

    def _orders(self) -> None:
        spine = []
        for index, order in self.orders:
            if order.status not in _SR_USE:
                continue
            codes = _codings(order.code)
            if (
                any(s == self.term.local for s, _ in codes)
                or any(self.term.spine_procedure(s, c)[0] for s, c in codes)
                or any(
                    s == self.term.local for site in order.bodySite or [] for s, _ in _codings(site)
                )
            ):
                spine.append((index, order))
        self.spine_orders = len(spine)
        if not spine:
            return
        if len(spine) > 1:
            self.warnings.add(f"{len(spine)} spine ServiceRequests; the first one is used")
        index, order = spine[0]
        for system, code in _codings(order.code):
            if system != self.term.local:
                _, procedure = self.term.spine_procedure(system, code)
                if procedure is not None:  # a confirmed SNOMED CT code, safe to name
                    src = Source("ServiceRequest.code", "SNOMED CT", code)
                    self._set("planned_procedure", procedure, src)
                continue
            src = Source("ServiceRequest.code", "local", code)
            kind, _, value = code.partition("-")
            if kind == "procedure" and value in FIELDS_BY_NAME["planned_procedure"].values:
                self._set("planned_procedure", value, src)
            elif kind == "technique" and value in FIELDS_BY_NAME["mis_technique"].values:
                self._set("mis_technique", value, src)
        segments: set[str] = set()
        for site in order.bodySite or []:
            for system, code in _codings(site):
                if system == self.term.local and code.startswith("segment-"):
                    if code[8:] in SEGMENTS:
                        segments.add(code[8:])
                elif (system, code) in self.term.body_sites:
                    region = self.term.body_sites[(system, code)]
                    self._set(
                        "region", region, Source("ServiceRequest.bodySite", "SNOMED CT", code)
                    )
        if segments:
            src = Source("ServiceRequest.bodySite", "local", "segment")
            lowest = max(segments, key=SEGMENTS.index)
            self._set("levels", len(segments), src)
            self._set("lowest_level", lowest, src)
            region = {"C": "cervical", "T": "thoracic", "L": "lumbar"}[lowest[0]]
            if lowest == "C7-T1":
                region = "cervical"
            if "region" not in self.case:
                self._set("region", region, src)
        reasons: dict[str, Source] = {}
        for concept in order.reasonCode or []:
            for system, code in _codings(concept):
                for name, value in self.term.condition_values(system, code):
                    if name == "diagnosis":
                        src = Source(
                            "ServiceRequest.reasonCode", self.term.system_name(system), code
                        )
                        reasons.setdefault(str(value), src)
        if len(reasons) == 1:
            ((value, src),) = reasons.items()
            self._set("diagnosis", value, src)
        elif len(reasons) > 1:
            self.warnings.add("ServiceRequest.reasonCode names several diagnoses; left unknown")

    def _settle(self) -> None:
        by_field: dict[str, list[tuple[Any, Scalar, Source]]] = {}
        for (name, _), latest in self.latest.items():
            by_field.setdefault(name, []).append(latest)
        for name, candidates in by_field.items():
            if name == "dexa_t_score":  # the lowest of the latest per site
                _, value, src = min(candidates, key=lambda f: f[1])
            else:
                _, value, src = max(candidates, key=lambda f: f[0])
            self._set(name, value, src)
        for name, stated in self.flags.items():
            if len({v for v, _ in stated}) > 1:
                self.warnings.add(f"{name}: confirmed and refuted Conditions; taken as true")
            flag, flag_src = next(((v, s) for v, s in stated if v is True), stated[0])
            self._set(name, flag, flag_src)
        for name in sorted(self.stale_refutations - self.flags.keys()):
            self.warnings.add(
                f"{name}: ruled out by a Condition not recorded at this encounter (undated or "
                f"older than {REFUTATION_DAYS} day); left unknown, to be asked now"
            )
        if "diagnosis" not in self.case and self.diagnoses:
            if len(self.diagnoses) == 1:
                ((value, src),) = self.diagnoses.items()
                self._set("diagnosis", value, src)
            else:
                self.warnings.add(
                    "diagnosis: several spine diagnoses among the Conditions and no "
                    "ServiceRequest.reasonCode; left unknown (give it with --set diagnosis=...)"
                )

    def _set(self, name: str, value: Scalar, src: Source) -> None:
        spec = FIELDS_BY_NAME[name]
        if spec.type is FieldType.integer and isinstance(value, float):
            if not value.is_integer():
                self.warnings.add(f"{name}: {src} is not a whole number; not used")
                return
            value = int(value)
        if spec.is_numeric and not isinstance(value, bool):
            low, high = spec.minimum, spec.maximum
            if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
                self.warnings.add(f"{name}: {src} is out of range ({spec.expected()}); not used")
                return
        if name in self.case and self.case[name] != value:
            self.warnings.add(f"{name}: {src} disagrees with {self.prov[name]}; first kept")
            return
        self.case.setdefault(name, value)
        self.prov.setdefault(name, src)
