"""The CDS Hooks 2.0 service: discovery, the screen as one card, feedback (issue 19 item 4).

- `GET /cds-services`: two services, one per hook, as CDS Hooks 2.0 discovery lists one hook per
  service: `miss-screen` (order-select) and `miss-screen-order-sign` (order-sign). Both take
  either hook and answer alike; the draft ServiceRequest is read from `context.draftOrders`.
- `POST /cds-services/{id}`: prefetch + draft orders -> `fhir_to_case` -> `Screener.screen` ->
  one card. No draft order for a spine operation: `{"cards": []}`.
- `POST /cds-services/{id}/feedback`: for a card this service issued in the last day, once:
  recorded in memory and, with a feedback log, as JSON lines (service, card uuid, outcome,
  reason code, the card's verdict; nothing that identifies anyone); 404 for any other uuid.
- `GET /rules/` and `GET /rules/{id}`: the rule docs (engine/report/docs.py) as HTML, without the
  rule authors' notes; the cards' `source.url` points here.

Errors are FHIR OperationOutcomes: 400 malformed, 401 not authenticated, 412 a required
prefetch was not sent (this service never queries the EHR's FHIR server), 413 too large, 500
internal (no traceback, nothing of the request logged). Every JSON response goes through
`cards.clean`: no null and no empty value, except the `cards` list the spec requires.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import __version__
from engine.dictionary import SETTING_FIELDS
from engine.errors import CaseInputError
from engine.fhir import fhir_to_case
from engine.io.deid import case_id_identifier_kinds
from engine.jsonsource import NonFiniteError, RepeatedKeyError, loads_strict
from engine.report.docs import page_name, render_docs
from engine.report.markdown import md
from engine.screener import Screener
from engine.service.app import ServiceConfig, allowed_methods
from engine.service.auth import AuthError, Verifier
from engine.service.cards import OVERRIDE_REASONS, clean, problem_card, result_card

log = logging.getLogger("miss_screen.service")

SERVICES = {"miss-screen": "order-select", "miss-screen-order-sign": "order-sign"}
HOOKS = frozenset(SERVICES.values())
PREFIX = "/cds-services"
EXT = "org.example.miss-screen"
LOINC = "http://loinc.org"
LOCAL = "http://miss-screen.example.org/fhir/CodeSystem/spine"
_PATIENT = "{{context.patientId}}"


def _latest(*codes: str, count: int = 1) -> str:
    listed = ",".join(f"{LOINC}|{c}" for c in codes)
    return f"Observation?patient={_PATIENT}&code={listed}&_sort=-date&_count={count}"


# The FHIR queries the CDS Client runs before each call. `patient` and `conditions` are
# required (412 without them); the others, when not sent, leave their values unknown.
PREFETCH = {
    "patient": f"Patient/{_PATIENT}",
    "conditions": f"Condition?patient={_PATIENT}&clinical-status=active,recurrence,relapse",
    "refutedConditions": f"Condition?patient={_PATIENT}&verification-status=refuted",
    "bmi": _latest("39156-5"),
    "smoking": _latest("72166-2"),
    "pregnancy": _latest("82810-3"),
    "dxa": _latest("38267-1", "38263-0", "104938-6", count=3),
    "alignment": f"Observation?patient={_PATIENT}&code={LOCAL}|&_sort=-date&_count=50",
}
REQUIRED_PREFETCH = ("patient", "conditions")
INLINE_BODY = 256 * 2**10  # bytes: a larger request is screened in a thread, off the event loop
_UUID = re.compile(r"^(urn:uuid:)?[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_REQUEST_FIELDS = frozenset(
    {"body", "hook", "hookInstance", "fhirServer", "fhirAuthorization", "context", "prefetch"}
    | {"feedback", "card", "outcome", "overrideReason", "reason", "code", "system"}
    | {"acceptedSuggestions", "outcomeTimestamp", "userComment", "id"}
    | {"draftOrders", "selections", "patientId", "userId", "encounterId"}
)


# --- request and response models (the OpenAPI schema; bodies are parsed by hand) ------------


class OrderContext(BaseModel):
    """The context of order-select and order-sign (CDS Hooks 2.0 hook definitions)."""

    model_config = ConfigDict(extra="allow")
    userId: str | None = None
    patientId: str | None = None
    encounterId: str | None = None
    selections: list[str] | None = Field(None, description="order-select: the orders chosen")
    draftOrders: dict[str, Any] = Field(description="a FHIR Bundle of the draft orders")


class CdsRequest(BaseModel):
    """A CDS Hooks call (CDS Hooks 2.0 "HTTP Request")."""

    model_config = ConfigDict(extra="allow")
    hook: Literal["order-select", "order-sign"]
    hookInstance: str = Field(min_length=1, description="A UUID for this hook call; the case id")
    fhirServer: str | None = None
    fhirAuthorization: dict[str, Any] | None = None
    context: OrderContext
    prefetch: dict[str, Any] | None = None


class Coding(BaseModel):
    model_config = ConfigDict(extra="allow")
    system: str | None = None
    code: str | None = None
    display: str | None = None


class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="allow")
    reason: Coding | None = None
    userComment: str | None = None  # never recorded


class FeedbackEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    card: str
    outcome: str = Field(description="accepted or overridden")
    overrideReason: OverrideReason | None = None
    acceptedSuggestions: list[dict[str, Any]] | None = None
    outcomeTimestamp: str | None = None  # never recorded


class FeedbackRequest(BaseModel):
    feedback: list[FeedbackEntry]


class Source(BaseModel):
    label: str
    url: str | None = None


class Card(BaseModel):
    uuid: str | None = None
    summary: str = Field(max_length=139)
    indicator: str = Field(pattern="^(info|warning|critical)$")
    detail: str | None = None
    source: Source
    overrideReasons: list[Coding] | None = None
    links: list[dict[str, str]] | None = None


class CardsResponse(BaseModel):
    cards: list[Card]


class ServiceEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    hook: str
    id: str
    title: str | None = None
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None
    extension: dict[str, Any] | None = None


class Discovery(BaseModel):
    services: list[ServiceEntry]


class Issue(BaseModel):
    severity: str
    code: str
    diagnostics: str | None = None


class OperationOutcome(BaseModel):
    resourceType: str = "OperationOutcome"
    issue: list[Issue]


class FeedbackAck(BaseModel):
    recorded: int


# --- responses -----------------------------------------------------------------------------


class CleanJSONResponse(JSONResponse):
    """JSON with no null and no empty value anywhere (cards.clean), compact, UTF-8; never
    cached (a card holds clinical detail) nor sniffed as another type."""

    def __init__(self, content: Any, status_code: int = 200, **kwargs: Any) -> None:
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        headers.update(kwargs.pop("headers", None) or {})
        super().__init__(content, status_code=status_code, headers=headers, **kwargs)

    def render(self, content: Any) -> bytes:
        cleaned = clean(content)
        return json.dumps(
            cleaned if cleaned is not None else {}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")


class CdsError(Exception):
    """A refusal answered with an OperationOutcome."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics


def outcome(
    status: int, code: str, diagnostics: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return CleanJSONResponse(body, status_code=status, headers=dict(headers or {}))


_ERRORS = {
    400: ("invalid", OperationOutcome),
    401: ("login", OperationOutcome),
    403: ("forbidden", OperationOutcome),
    404: ("not-found", OperationOutcome),
    409: ("conflict", OperationOutcome),
    412: ("incomplete", OperationOutcome),
    413: ("too-costly", OperationOutcome),
    500: ("exception", OperationOutcome),
    503: ("throttled", OperationOutcome),
}
_DOCUMENTED: dict[int | str, dict[str, Any]] = {
    status: {"model": model, "description": f"OperationOutcome ({code})"}
    for status, (code, model) in _ERRORS.items()
}


# --- state ---------------------------------------------------------------------------------


CARD_TTL = 24 * 3600.0  # seconds a card takes feedback after it was issued
MAX_CARDS = 10_000  # cards remembered for feedback at once; the oldest are forgotten first


@dataclass
class IssuedCard:
    """A card this service sent, as its feedback will be recorded."""

    service: str
    ruleset: str
    issued: float  # time.monotonic()
    verdict: str | None = None  # None: a card that could not screen (problem_card)
    answered: bool = False


@dataclass
class FeedbackStore:
    """Feedback on the cards this service issued (no identifiers): in memory, bounded, and
    appended to a JSONL file. Only a card issued by this process, at most CARD_TTL ago and among
    the MAX_CARDS latest, takes feedback, once: so the log grows by one line per card at most
    and never for a uuid someone made up."""

    path: Path | None = None
    records: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_CARDS))
    issued: OrderedDict[str, IssuedCard] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    clock: Callable[[], float] = time.monotonic

    def card_issued(
        self, card_uuid: str, service: str, ruleset: str, verdict: str | None = None
    ) -> None:
        with self.lock:
            now = self.clock()
            self.issued[card_uuid.lower()] = IssuedCard(service, ruleset, now, verdict)
            while self.issued and (
                len(self.issued) > MAX_CARDS
                or now - next(iter(self.issued.values())).issued > CARD_TTL
            ):
                self.issued.popitem(last=False)

    def add(self, records: list[dict[str, str]]) -> None:
        """Record feedback on issued cards; refuse the whole post (404, 409) when one entry is
        for a card not issued here (or forgotten) or already answered."""
        with self.lock:
            now = self.clock()
            cards: list[IssuedCard] = []
            for number, record in enumerate(records):
                card = self.issued.get(record["card"])
                if (
                    card is None
                    or card.service != record["service"]
                    or (now - card.issued > CARD_TTL)
                ):
                    raise CdsError(
                        404,
                        "not-found",
                        f"feedback[{number}]: no card with this uuid was issued by this service "
                        f"in the last {CARD_TTL / 3600:g} hours",
                    )
                if card.answered or any(card is other for other in cards):
                    raise CdsError(
                        409, "conflict", f"feedback[{number}]: this card's feedback is recorded"
                    )
                cards.append(card)
            for record, card in zip(records, cards, strict=True):
                card.answered = True
                if card.verdict is not None:
                    record["verdict"] = card.verdict
                record["ruleset"] = card.ruleset
                self.records.append(record)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as out:
                    for record in records:
                        out.write(json.dumps(record, sort_keys=True) + "\n")


@dataclass
class CdsState:
    verifier: Verifier
    feedback: FeedbackStore


def state_of(request: Request) -> CdsState:
    state: CdsState = request.app.state.cds
    return state


# --- the router ----------------------------------------------------------------------------

router = APIRouter(default_response_class=CleanJSONResponse)


def _base_url(request: Request, config: ServiceConfig) -> str:
    public = config.public_url if config.public_url else str(request.base_url)
    return public.rstrip("/")


async def _authenticate(request: Request, config: ServiceConfig) -> None:
    state = state_of(request)
    endpoint = _base_url(request, config) + request.url.path
    try:
        authorization = request.headers.get("authorization")
        if authorization and state.verifier.fetches:
            # an issuer's JWKS URL may be fetched (up to 5 s): in a thread, off the event loop
            await run_in_threadpool(state.verifier.check, authorization, endpoint)
        else:  # local keys only: a signature check of about a millisecond, inline
            state.verifier.check(authorization, endpoint)
    except AuthError as exc:
        raise CdsError(
            exc.status, "login" if exc.status == 401 else "throttled", exc.reason
        ) from None


@router.get(PREFIX, response_model=Discovery, tags=["CDS Hooks"])
def discovery(request: Request) -> Response:
    """CDS Hooks discovery: the services, their hooks and prefetch templates."""
    config: ServiceConfig = request.app.state.config
    stamp = config.screener.ruleset_stamp
    dev = (
        " DEV MODE: unauthenticated calls are accepted; not for patient care." if config.dev else ""
    )
    base = _base_url(request, config)
    services = []
    for service_id, hook in SERVICES.items():
        services.append(
            {
                "hook": hook,
                "id": service_id,
                "title": "miss-screen: is minimally invasive spine surgery worth discussing?",
                "description": (
                    "Screens a draft spine-surgery ServiceRequest against the patient's record "
                    "and returns one card: the verdict, red flags not yet excluded, findings "
                    "with their evidence, and the questions that could change the verdict. A "
                    "screening aid for a conversation, never an order to operate." + dev
                ),
                "prefetch": PREFETCH,
                "usageRequirements": (
                    "Prefetch `patient` and `conditions` are required (the service never queries "
                    "the FHIR server); the draft order carries the spine procedure codes of "
                    "rules/terminology. Surgeon and setting fields come from the site profile."
                ),
                "extension": {
                    EXT: {
                        "ruleset": {
                            "name": stamp.name,
                            "version": stamp.version,
                            "sha256": stamp.sha256,
                        },
                        "toolVersion": __version__,
                        "devMode": config.dev,
                        "ruleDocs": f"{base}/rules/",
                        "feedback": f"{base}{PREFIX}/{service_id}/feedback",
                    }
                },
            }
        )
    return CleanJSONResponse({"services": services})


async def _json_body(request: Request) -> Any:
    body = await request.body()
    try:
        return loads_strict(body)
    except RepeatedKeyError:
        raise CdsError(400, "invalid", "the request body gives a key more than once") from None
    except NonFiniteError:
        raise CdsError(400, "invalid", "the request body holds NaN or Infinity") from None
    except (ValueError, RecursionError):
        raise CdsError(400, "invalid", "the request body is not JSON") from None


def _validation_error(exc: ValidationError | RequestValidationError, what: str) -> CdsError:
    """A 400 naming where the request is wrong by field names only, never by its values."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(
        str(p) for p in first.get("loc", ()) if str(p) in _REQUEST_FIELDS or isinstance(p, int)
    )
    reason = {"missing": "is required", "extra_forbidden": "is not allowed"}.get(
        str(first.get("type")), "has the wrong type or value"
    )
    return CdsError(400, "invalid", f"{what}: {where or 'the body'} {reason}")


def _bundle_resources(value: Any, name: str) -> list[Any]:
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        raise CdsError(400, "invalid", f"{name} must be a FHIR Bundle")
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        raise CdsError(400, "invalid", f"{name}: Bundle.entry must be a list")
    return [e.get("resource") if isinstance(e, dict) else e for e in entries]


def _same_patient(resource: Any, patient_id: str | None, name: str) -> None:
    """Refuse a resource that names another patient than the call's (a wrong-patient screen)."""
    if not patient_id or not isinstance(resource, dict):
        return
    if resource.get("resourceType") == "Patient":
        other = resource.get("id")
        if isinstance(other, str) and other and other != patient_id:
            raise CdsError(400, "invalid", f"{name}: the Patient is not the context's patient")
        return
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if (
        isinstance(reference, str)
        and re.match(r"^(.*/)?Patient/[^/]+$", reference)
        and reference.rsplit("/", 1)[1] != patient_id
    ):
        raise CdsError(400, "invalid", f"{name}: a resource names another patient")


def _screen_call(
    config: ServiceConfig, call: CdsRequest, base: str, store: FeedbackStore, service_id: str
) -> dict[str, Any]:
    if call.hook not in HOOKS:
        raise CdsError(400, "not-supported", f"hook must be one of {', '.join(sorted(HOOKS))}")
    context = call.context.model_dump(exclude_unset=True)
    patient_id = context.get("patientId")
    patient_id = patient_id if isinstance(patient_id, str) else None
    if "draftOrders" not in context:
        raise CdsError(400, "required", "context.draftOrders is required")
    orders = _bundle_resources(context["draftOrders"], "context.draftOrders")
    orders = [
        o for o in orders if isinstance(o, dict) and o.get("resourceType") == "ServiceRequest"
    ]
    selections = context.get("selections")
    if call.hook == "order-select" and isinstance(selections, list) and selections:
        chosen = {s for s in selections if isinstance(s, str)}
        orders = [o for o in orders if f"ServiceRequest/{o.get('id')}" in chosen]
    for order in orders:
        _same_patient(order, patient_id, "context.draftOrders")
    prefetch = call.prefetch or {}
    # a key sent as null means "the record has none": missing data, a card (age and sex
    # unknown), not an error; a key not sent at all cannot be fetched here
    missing = [key for key in REQUIRED_PREFETCH if key not in prefetch]
    if missing:
        raise CdsError(
            412,
            "incomplete",
            f"prefetch {', '.join(missing)} not sent; this service does not query the EHR's FHIR "
            "server, so the CDS Client must prefetch them (see discovery)",
        )
    resources: list[Any] = []
    for key in PREFETCH:
        value = prefetch.get(key)
        if value is None:
            continue
        if key == "patient":
            if not isinstance(value, dict) or value.get("resourceType") != "Patient":
                raise CdsError(400, "invalid", "prefetch patient must be a FHIR Patient")
            found = [value]
        else:
            found = _bundle_resources(value, f"prefetch {key}")
        for resource in found:
            _same_patient(resource, patient_id, f"prefetch {key}")
        resources.extend(found)
    hook_instance = call.hookInstance if not case_id_identifier_kinds(call.hookInstance) else None
    mapped = fhir_to_case(
        [*resources, *orders], dt.datetime.now(dt.UTC).date(), hook_instance=hook_instance
    )
    if not mapped.spine_orders:
        return {"cards": []}
    case = {k: v for k, v in mapped.case.items() if k not in SETTING_FIELDS}  # the site's, only
    docs_url = f"{base}/rules/"
    notes = []
    unsent = [key for key in PREFETCH if key not in prefetch]
    if unsent:
        notes.append(f"Not sent by the EHR (left unknown): {', '.join(unsent)}")
    if mapped.warnings:
        shown = "; ".join(mapped.warnings[:5]) + ("; ..." if len(mapped.warnings) > 5 else "")
        notes.append(f"Record notes: {shown}")
    stamp = config.screener.ruleset_stamp
    ruleset = f"{stamp.name} {stamp.version} {stamp.sha256[:12]}"
    try:
        result = config.screener.screen(case, source="CDS Hooks")
    except CaseInputError as exc:
        fields = sorted({p.field for p in exc.problems if p.field})
        card = problem_card(
            fields, label=f"{stamp.name} {stamp.version}", docs_url=docs_url, dev=config.dev
        )
        store.card_issued(card["uuid"], service_id, ruleset)
        return {"cards": [card]}
    card = result_card(
        result,
        docs_url=docs_url,
        dev=config.dev,
        notes=[md(n) for n in notes],
        reasons=config.screener.ruleset.asked_because,
    )
    store.card_issued(card["uuid"], service_id, ruleset, result.verdict.value)
    return {"cards": [card]}


def _record(service_id: str, entry: FeedbackEntry) -> dict[str, str]:
    if not _UUID.fullmatch(entry.card):
        raise CdsError(400, "invalid", "feedback: card must be the uuid of a card")
    if entry.outcome not in ("accepted", "overridden"):
        raise CdsError(400, "invalid", "feedback: outcome must be accepted or overridden")
    record = {
        "service": service_id,
        "card": entry.card.removeprefix("urn:uuid:").lower(),
        "outcome": entry.outcome,
    }
    reason = entry.overrideReason.reason if entry.overrideReason else None
    if reason is not None:  # only our own codes are recorded; anything else is "other"
        record["reason"] = reason.code if reason.code in OVERRIDE_REASONS else "other"
    return record


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of a route that reads its JSON itself (to answer 400, not 422)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _service_routes(service_id: str) -> None:
    @router.post(
        f"{PREFIX}/{service_id}",
        response_model=CardsResponse,
        responses=_DOCUMENTED,
        openapi_extra=_body_doc(CdsRequest),
        tags=["CDS Hooks"],
        name=f"call {service_id}",
    )
    async def call(request: Request) -> Response:
        config: ServiceConfig = request.app.state.config
        await _authenticate(request, config)
        raw = await _json_body(request)
        try:
            parsed = CdsRequest.model_validate(raw)
        except ValidationError as exc:
            raise _validation_error(exc, "request") from None
        base = _base_url(request, config)
        store = state_of(request).feedback
        if len(await request.body()) <= INLINE_BODY:
            # an ordinary call is ~2 ms of CPU under the GIL: run inline, first come first
            # served, rather than in a thread pool where 8 concurrent calls convoy on the GIL
            body = _screen_call(config, parsed, base, store, service_id)
        else:  # a large record (up to a second): never block every other caller meanwhile
            body = await run_in_threadpool(_screen_call, config, parsed, base, store, service_id)
        return CleanJSONResponse(body)

    @router.post(
        f"{PREFIX}/{service_id}/feedback",
        response_model=FeedbackAck,
        responses=_DOCUMENTED,
        openapi_extra=_body_doc(FeedbackRequest),
        tags=["CDS Hooks"],
        name=f"feedback on {service_id}",
    )
    async def feedback(request: Request) -> Response:
        config: ServiceConfig = request.app.state.config
        await _authenticate(request, config)
        raw = await _json_body(request)
        try:
            parsed = FeedbackRequest.model_validate(raw)
        except ValidationError as exc:
            raise _validation_error(exc, "feedback") from None
        records = [_record(service_id, entry) for entry in parsed.feedback]
        await run_in_threadpool(state_of(request).feedback.add, records)
        return CleanJSONResponse({"recorded": len(records)})


for _service_id in SERVICES:
    _service_routes(_service_id)


# --- rule docs -----------------------------------------------------------------------------


@functools.cache
def _doc_pages(screener: Screener) -> dict[str, str]:
    """The rule docs as HTML pages, by rule id, page file name and "" (the index)."""
    from markdown_it import MarkdownIt

    ruleset = screener.ruleset
    pages = render_docs(ruleset, Path(ruleset.directory), notes=False)
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    html: dict[str, str] = {}
    for name, text in pages.items():
        body = "\n".join(line for line in text.splitlines() if not line.startswith("<!--"))
        title = "miss-screen rules" if name == "README.md" else name.removesuffix(".md")
        page = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>body{{font-family:sans-serif;max-width:50em;"
            "margin:1em auto;padding:0 1em}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:.2em .4em}</style></head><body>"
            f"{renderer.render(body)}</body></html>"
        )
        html["" if name == "README.md" else name] = page
    for rule in ruleset.rules:
        html[rule.id] = html[page_name(rule)]
    return html


_DOC_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "HTML page"}


@router.get("/rules/", tags=["rule docs"], responses={200: _HTML}, response_model=None)
def rules_index(request: Request) -> Response:
    """The index of the rules (by the points of MISS and by category), as HTML."""
    config: ServiceConfig = request.app.state.config
    return HTMLResponse(_doc_pages(config.screener)[""], headers=_DOC_HEADERS)


@router.get(
    "/rules/{name}",
    tags=["rule docs"],
    responses={200: _HTML, 404: {"model": OperationOutcome}},
    response_model=None,
)
def rule_page(name: str, request: Request) -> Response:
    """One rule's page (its id, e.g. ACC-008, or its page name), as HTML."""
    config: ServiceConfig = request.app.state.config
    page = _doc_pages(config.screener).get(name)
    if page is None:
        raise CdsError(404, "not-found", "no such rule")
    return HTMLResponse(page, headers=_DOC_HEADERS)


# --- installing: handlers and middleware ---------------------------------------------------


def _ours(request: Request) -> bool:
    path = request.url.path
    return path.startswith((PREFIX, "/rules"))


def install(app: FastAPI, config: ServiceConfig) -> None:
    """Add the CDS Hooks routes, their error handlers, CORS and the request guard to `app`."""
    app.state.cds = CdsState(
        Verifier(config.trusted_issuers, dev=config.dev, audiences=config.audiences),
        FeedbackStore(config.feedback_log),
    )
    app.include_router(router)

    async def cds_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CdsError)  # noqa: S101
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else {}
        return outcome(exc.status, exc.code, exc.diagnostics, headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        if not _ours(request):
            return await request_validation_exception_handler(request, exc)
        err = _validation_error(exc, "request")
        return outcome(400, err.code, err.diagnostics)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101
        if exc.status_code == 405:
            allow = {"Allow": allowed_methods(request)}
            exc = StarletteHTTPException(405, exc.detail, {**(exc.headers or {}), **allow})
        if not _ours(request):
            return await http_exception_handler(request, exc)
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return outcome(exc.status_code, code, "no such endpoint or method", exc.headers)

    app.add_exception_handler(CdsError, cds_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(PathCORS, origins=config.cors_origins)
    app.add_middleware(Guard, max_body=config.max_body_bytes)


class PathCORS:
    """CORS with an explicit origin allow-list, on the CDS Hooks paths only."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(PREFIX):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class Guard:
    """The outermost layer: bodies over `max_body` bytes get 413; a client gone before its
    request was read is logged as such; any other exception is a 500 OperationOutcome with no
    traceback, logged by its type and route only (never a token, resource or value)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the body is larger than {self.max_body} bytes"
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            await _send(send, outcome(413, "too-costly", too_large))
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        path = str(scope.get("path", ""))
        route = path if path in _KNOWN_PATHS else "another path"
        try:
            await self.app(scope, limited, tracked)
        except _TooLarge:
            if not started:
                await _send(send, outcome(413, "too-costly", too_large))
        except ClientDisconnect:
            # the server's own deadline or cap closed it (protocol.py logs why), or the client
            if "miss_screen.closed" not in (scope.get("extensions") or {}):
                log.info("client disconnected before its request was read (%s)", route)
        except Exception as exc:  # the catch-all: never a traceback, never the request
            log.error("internal error on %s %s: %s", scope.get("method"), route, type(exc).__name__)
            if not started:
                await _send(
                    send,
                    outcome(500, "exception", "internal error; nothing of the request was logged"),
                )


_KNOWN_PATHS = frozenset(
    {PREFIX, "/rules/", "/", "/report", "/result.json", "/static/form.css"}
    | {f"{PREFIX}/{s}" for s in SERVICES}
    | {f"{PREFIX}/{s}/feedback" for s in SERVICES}
)


async def _send(send: Send, response: Response) -> None:
    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response({"type": "http"}, nothing, send)
