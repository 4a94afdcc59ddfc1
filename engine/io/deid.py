"""De-identification guard: refuse cohorts that carry direct identifiers (HIPAA Safe Harbor).

Two checks, both conservative (a false alarm is cheaper than a leak; `allowed` silences one):
column names (`scan_columns`) and value patterns in a sample of rows (`scan_values`).
A finding names the column and the kind of identifier, never a value from the data: nothing
here logs, prints or returns what it read.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from engine.io.case_ids import CASE_ID_SUSPECT, case_id_kinds
from engine.io.clinical import is_clinical

__all__ = [
    "CASE_ID_SUSPECT",
    "IdentifierFinding",
    "case_id_identifier_kinds",
    "check_deidentified",
    "escape_text",
    "identifier_id_message",
    "identifier_kinds",
    "kind_words",
    "looks_like_person",
    "scan_columns",
    "scan_values",
    "showable",
    "shown_case_id",
    "shown_name",
    "withheld_reason",
]


@dataclass(frozen=True)
class IdentifierFinding:
    """One column that looks like it carries a direct identifier; `reason` holds no data value."""

    column: str
    kind: str
    reason: str


# --------------------------------------------------------------------------------------------
# Column names
# --------------------------------------------------------------------------------------------

# camelCase humps, ALLCAPS runs and digit runs; letters keep trailing digits ("ipv4", "zip4").
_TOKEN = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*|[0-9]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Tokens that turn a qualifier ("patient", "plan", "device") into an identifier ("patient_id").
_ID_WORDS = _words("id ids no nr num number numbers code identifier key ref uid")
_ID_SUFFIXES = ("id", "no", "nr", "num", "number", "identifier")

# "<x>_name" where x is a thing, not a person: rule_name, file_name, procedure_name.
_NON_PERSON = _words(
    "rule rules file field column col variable var table db database dataset data study cohort "
    "trial protocol procedure technique approach operation diagnosis dx drug medication implant "
    "device product brand manufacturer vendor model test scenario arm group category class type "
    "score scale level segment region code display short host path sheet source batch run "
    "project program software app package tag label event outcome complication criterion "
    "criteria check verdict finding"
)
# Words ending in "date" that are not dates.
_NOT_DATES = _words(
    "candidate candidates update validate invalidate mandate accommodate consolidate sedate "
    "liquidate"
)
# An event of a person's life, and what after it makes a date: admitted_on, birth_month.
_EVENTS = _words(
    "birth born death died deceased admission admitted admit discharge discharged surgery "
    "operation operated visit seen injury onset"
)
_EVENT_PARTS = _words("on at month day dt dttm")


@dataclass(frozen=True)
class _NameRule:
    """How a column name points at one kind of identifier."""

    kind: str
    reason: str
    words: frozenset[str] = frozenset()  # a whole token
    stems: tuple[str, ...] = ()  # inside the name with separators removed ("dateofbirth")
    alone: frozenset[str] = frozenset()  # only as the entire name ("mobile", "serial")
    with_id: frozenset[str] = frozenset()  # only beside an id word ("plan_id", "device_no")
    also: Callable[[tuple[str, ...]], bool] | None = None

    def matches(self, tokens: tuple[str, ...], compact: str) -> bool:
        if any(t in self.words for t in tokens):
            return True
        if len(tokens) == 1 and tokens[0] in self.alone:
            return True
        if any(stem in compact for stem in self.stems):
            return True
        if self.with_id:
            if any(t in self.with_id for t in tokens) and any(t in _ID_WORDS for t in tokens):
                return True
            if any(q + s in compact for q in self.with_id if len(q) >= 3 for s in _ID_SUFFIXES):
                return True
        return self.also is not None and self.also(tokens)


def _is_date_name(tokens: tuple[str, ...]) -> bool:
    for i, tok in enumerate(tokens):
        if tok.endswith("date") and tok not in _NOT_DATES:
            return True
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in _EVENTS and nxt in _EVENT_PARTS:
            return True
        if tok in ("month", "day") and nxt == "of" and tokens[i + 2 : i + 3] == ("birth",):
            return True
    return False


def _is_person_name(tokens: tuple[str, ...]) -> bool:
    for i, tok in enumerate(tokens):
        if tok in ("name", "names"):
            if i == 0 or tokens[i - 1] not in _NON_PERSON:
                return True
        elif tok.endswith("name") and len(tok) > 4 and tok[:-4] not in _NON_PERSON:
            return True  # patientname, surgeonname; not filename, rulename
    return False


def _is_coordinate(tokens: tuple[str, ...]) -> bool:
    return "lat" in tokens and bool({"lon", "lng", "long"} & set(tokens))


# First match wins, so the specific kinds come before the generic ones:
# "email_address" is an email, "ip_address" an IP, "licence_plate" a vehicle, "street_name" an
# address.
_NAME_RULES: tuple[_NameRule, ...] = (
    _NameRule(
        "email",
        "column name suggests an email address",
        words=_words("email emails courriel correo epost sahkoposti"),
        stems=("email", "courriel", "correoelectronico", "sahkoposti"),
        alone=_words("mail"),
    ),
    _NameRule(
        "ip",
        "column name suggests an IP address",
        words=_words("ip ips ipv4 ipv6 ipaddr"),
        stems=("ipaddress", "ipaddr", "ipv4", "ipv6"),
    ),
    _NameRule(
        "url",
        "column name suggests a web address (URL)",
        words=_words("url urls uri uris website websites homepage webpage href"),
        stems=("website", "homepage", "webpage", "webaddress"),
        alone=_words("web link"),
    ),
    _NameRule(
        "vehicle",
        "column name suggests a vehicle identifier or licence plate",
        words=_words("vin vins"),
        stems=("licenceplate", "licenseplate", "numberplate", "registrationplate"),
        alone=_words("plate"),  # anterior_plate, plate_fixation are implants
        with_id=_words("vehicle car plate"),
    ),
    _NameRule(
        "device",
        "column name suggests a device identifier or serial number",
        words=_words("udi imei imsi meid iccid"),
        stems=("serialnumber", "serialno", "macaddress", "deviceserial", "implantserial"),
        alone=_words("serial"),
        with_id=_words("device implant serial mac pacemaker stimulator pump"),
    ),
    _NameRule(
        "ssn",
        "column name suggests a social security or national identity number",
        # national numbers abroad: the Swedish and Norwegian personnummer, the Danish CPR, the
        # Finnish henkilotunnus, the Icelandic kennitala, the Dutch BSN, the French NIR, the
        # Spanish DNI and NSS, the Italian codice fiscale, the Brazilian CPF and RG, the German
        # social insurance and tax numbers
        words=_words("ssn ssns nino bsn nir insee dni nie nss curp rut cpf cpr hetu amka egn"),
        stems=(
            "socialsecurity",
            "socsec",
            "nationalinsurance",
            "personnummer",
            "personnr",
            "fodselsnummer",
            "foedselsnummer",
            "henkilotunnus",
            "kennitala",
            "burgerservicenummer",
            "codicefiscale",
            "sozialversicherung",
            "versicherungsnummer",
            "versichertennummer",
            "steuernummer",
            "steueridentifikation",
            "securitesociale",
            "seguridadsocial",
            "segurancasocial",
            "numerosecu",
            "cartaosus",
            "tesserasanitaria",
            "cprnummer",
        ),
        alone=_words("rg"),
        with_id=_words("national tax"),
    ),
    _NameRule(
        "mrn",
        "column name suggests a medical record, patient or encounter number",
        words=_words("mrn mrns pid mpi ipp nhc"),
        stems=(
            "medicalrecord",
            "healthrecord",
            "recordnumber",
            "hospitalnumber",
            "hospno",
            "patientennummer",
            "patientnummer",
            "fallnummer",
            "numeropatient",
            "numerodossier",
            "historiaclinica",
            "numerohistoria",
            "cartellaclinica",
            "prontuario",
            "journalnummer",
        ),
        alone=_words("chi"),  # the Scottish Community Health Index number
        with_id=_words(
            "patient pt nhs chi hospital emr ehr chart medical encounter visit episode admission"
        ),
    ),
    _NameRule(
        "account",
        "column name suggests an account, health plan or beneficiary number",
        words=_words(
            "account accounts acct iban beneficiary beneficiaries medicare medicaid username login"
        ),
        stems=("accountnumber", "beneficiary", "creditcard", "bankaccount"),
        with_id=_words(
            "plan member insurance insurer policy payer subscriber claim invoice billing card "
            "bank user"
        ),
    ),
    _NameRule(
        "licence",
        "column name suggests a licence, certificate or passport number",
        words=_words("licence license licences licenses passport passports certificate"),
        stems=("licence", "license", "passport", "certificatenumber"),
        with_id=_words("cert certificate permit"),
    ),
    _NameRule(
        "phone",
        "column name suggests a telephone or fax number",
        words=_words(
            "phone phones telephone tel fax pager msisdn telefon telefono telefone telefoon "
            "telefonnummer telefoonnummer handy movil celular cellulare portable puhelin"
        ),
        stems=("phone", "telno", "telnr", "faxno", "faxnumber", "telefon", "telefoon", "rufnummer"),
        alone=_words("mobile cell"),
        with_id=_words("mobile cell contact"),
    ),
    _NameRule(
        "zip",
        "column name suggests a ZIP or postal code",
        words=_words(
            "zip zip4 zip5 zipcode zipcodes postcode postcodes postal plz postleitzahl "
            "postnummer postinumero"
        ),
        stems=(
            "zipcode",
            "postcode",
            "postalcode",
            "postleitzahl",
            "codepostal",
            "codigopostal",
            "codicepostale",
            "postnummer",
            "postinumero",
        ),
    ),
    _NameRule(
        "date",
        "column name suggests a date tied to a person (birth, admission, discharge, death); "
        "only the year may be kept",
        words=_words("date dates datetime timestamp dob dod dt dttm datum fecha"),
        # the word for birth in German, French, Spanish, Italian, Portuguese, Dutch and the
        # Nordic languages, and admission, discharge and death dates in some of them
        stems=(
            "dateofbirth",
            "dateofdeath",
            "birthday",
            "timestamp",
            "geburt",
            "naissance",
            "nacimiento",
            "nascita",
            "nascimento",
            "geboorte",
            "fodselsdato",
            "foedselsdato",
            "fodelsedatum",
            "fodselsdag",
            "syntymaaika",
            "syntymapaiva",
            "sterbedatum",
            "todesdatum",
            "aufnahmedatum",
            "entlassungsdatum",
            "fechaingreso",
            "fechaalta",
        ),
        also=_is_date_name,
    ),
    _NameRule(
        "photo",
        "column name suggests a photograph of a person",
        words=_words("photo photos photograph photographs headshot selfie portrait mugshot"),
        stems=("facephoto", "facialphoto", "photoid", "faceimage", "facialimage", "profilepic"),
        alone=_words("face picture"),
    ),
    _NameRule(
        "biometric",
        "column name suggests a biometric identifier",
        words=_words("biometric biometrics retina iris"),
        stems=(
            "fingerprint",
            "thumbprint",
            "palmprint",
            "voiceprint",
            "faceprint",
            "biometric",
            "retinascan",
            "retinalscan",
            "irisscan",
            "facialrecognition",
        ),
    ),
    _NameRule(
        "address",
        "column name suggests a street address, city or other place smaller than a state",
        words=_words(
            "address addresses addr street city town county village suburb borough municipality "
            "neighborhood neighbourhood latitude longitude geolocation gps fips adres adresse "
            "ville ciudad citta cidade calle rua stad stadt gemeente kommune"
        ),
        stems=(
            "address",
            "street",
            "birthplace",
            "placeofbirth",
            "censustract",
            "censusblock",
            "adresse",
            "anschrift",
            "strasse",
            "wohnort",
            "direccion",
            "domicilio",
            "indirizzo",
            "endereco",
            "straat",
            "woonplaats",
            "gatuadress",
            "katuosoite",
        ),
        also=_is_coordinate,
    ),
    _NameRule(
        "name",
        "column name suggests a person's name or initials",
        # first and family names in German, French, Spanish, Italian, Portuguese, Dutch and
        # the Nordic languages
        words=_words(
            "initials surname surnames forename forenames nom noms prenom nombre nombres "
            "apellido apellidos nome cognome sobrenome naam navn namn nimi"
        ),
        stems=(
            "surname",
            "forename",
            "firstname",
            "lastname",
            "fullname",
            "givenname",
            "middlename",
            "maidenname",
            "familyname",
            "patientname",
            "nextofkin",
            "vorname",
            "nachname",
            "familienname",
            "geburtsname",
            "nomdefamille",
            "nomdupatient",
            "nompatient",
            "prenom",
            "apellido",
            "cognome",
            "sobrenome",
            "voornaam",
            "achternaam",
            "fornavn",
            "efternavn",
            "etternavn",
            "fornamn",
            "efternamn",
            "etunimi",
            "sukunimi",
        ),
        also=_is_person_name,
    ),
)


# letters NFKD does not split into an ASCII base letter and an accent
_UNDECOMPOSED = str.maketrans(
    {"ß": "ss", "ẞ": "SS", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ð": "d", "þ": "th", "ł": "l"}
)


def _name_tokens(column: str) -> tuple[str, ...]:
    column = column.translate(_UNDECOMPOSED)
    ascii_name = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode()
    return tuple(t.lower() for t in _TOKEN.findall(ascii_name))


def _name_finding(column: str) -> IdentifierFinding | None:
    tokens = _name_tokens(column)
    compact = "".join(tokens)
    for rule in _NAME_RULES:
        if rule.matches(tokens, compact):
            return IdentifierFinding(column, rule.kind, rule.reason)
    return None


def scan_columns(columns: Sequence[str], allowed: Collection[str] = ()) -> list[IdentifierFinding]:
    """Columns whose names suggest a direct identifier, in column order; `allowed` never counts."""
    findings = []
    for column in columns:
        if column in allowed:
            continue
        finding = _name_finding(column)
        if finding is not None:
            findings.append(finding)
    return findings


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

_MAX_TEXT = 4096  # longer values are only scanned this far

_EMAIL = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
_URL = re.compile(r"\b(?:https?|ftp|sftp)://\S+|\bwww\.[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\d.]*\d)"
)
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])[0-9A-Fa-f:]{2,}(?:%\w+)?(?![\w:])")
_MAC = re.compile(r"(?<![\w:-])[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}(?![\w:-])")
_SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
_ZIP4 = re.compile(r"(?<![\d-])\d{5}-\d{4}(?![\d-])")

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_YMD = re.compile(r"(?<![\d./-])(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?!\d)")
_DMY = re.compile(r"(?<![\d./-])(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?![\d./-]?\d)")
_MY = re.compile(r"(?<![\d./-])(\d{1,2})/(\d{4})(?![\d/])")
_NAMED_DATES = (
    # 12 Mar 1961, 12-Mar-61, 12th March 1961, 12Mar1961
    re.compile(
        rf"\b\d{{1,2}}(?:st|nd|rd|th)?[\s./-]*{_MONTH}\.?,?[\s./-]*(?:\d{{4}}|\d{{2}})\b",
        re.IGNORECASE,
    ),
    # March 12, 1961; Mar 12 1961
    re.compile(
        rf"\b{_MONTH}\.?[\s./-]+\d{{1,2}}(?:st|nd|rd|th)?,?[\s./-]+\d{{4}}\b", re.IGNORECASE
    ),
    # March 1961 (a month is an element of a date too)
    re.compile(rf"\b{_MONTH}\.?[\s,./-]+\d{{4}}\b", re.IGNORECASE),
)

# Digit runs with phone-like separators; _is_phone decides.
_PHONE_CANDIDATE = re.compile(r"(?<![\w.+/-])(?:\+\s?)?\(?\d[\d ().-]*\d\)?")


def _year_ok(text: str) -> bool:
    return len(text) == 2 or 1800 <= int(text) <= 2199


def _valid_ymd(m: re.Match[str]) -> bool:
    year, month, day = int(m[1]), int(m[3]), int(m[4])
    return 1800 <= year <= 2199 and 1 <= month <= 12 and 1 <= day <= 31


def _valid_dmy(m: re.Match[str]) -> bool:
    a, b = int(m[1]), int(m[3])
    if m[2] == "." and len(m[4]) == 2:  # 1.10.20 is more likely a version than a date
        return False
    if not _year_ok(m[4]) or a < 1 or b < 1:
        return False
    return (a <= 31 and b <= 12) or (a <= 12 and b <= 31)


def _valid_my(m: re.Match[str]) -> bool:
    return 1 <= int(m[1]) <= 12 and _year_ok(m[2])


def _valid_ipv6(m: re.Match[str]) -> bool:
    text = m[0]
    address = text.split("%")[0]
    if address.count(":") < 2 or not address.strip(":"):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_phone(m: re.Match[str]) -> bool:
    text = m[0]
    groups = re.findall(r"\d+", text)
    digits = sum(len(g) for g in groups)
    if not 8 <= digits <= 15:
        return False
    if text.startswith("+"):
        return True
    if text.startswith("(") and ")" in text:
        return True
    separators = set(re.sub(r"[\d()]", "", text))
    if separators == {"."}:  # 27.5 or 0.123456789 are numbers; 212.555.1234 is not
        return len(groups) >= 3 and all(len(g) >= 2 for g in groups)
    if len(groups) >= 3:
        return True
    # 07700 900123, 01632 960001: a trunk prefix and two groups
    return len(groups) == 2 and groups[0].startswith("0") and digits in (10, 11)


_Check = tuple[re.Pattern[str], Callable[[re.Match[str]], bool] | None]

# Checked in this order; what one kind matched is masked before the next looks, so an SSN or a
# date is not also counted as a phone number.
_VALUE_KINDS: tuple[tuple[str, str, tuple[_Check, ...]], ...] = (
    ("email", "email addresses", ((_EMAIL, None),)),
    ("url", "web addresses (URLs)", ((_URL, None),)),
    ("device", "hardware (MAC) addresses", ((_MAC, None),)),
    ("ip", "IP addresses", ((_IPV4, None), (_IPV6_CANDIDATE, _valid_ipv6))),
    ("ssn", "US social security numbers", ((_SSN, None),)),
    ("zip", "ZIP+4 codes", ((_ZIP4, None),)),
    (
        "date",
        "dates more specific than a year",
        (
            (_YMD, _valid_ymd),
            (_DMY, _valid_dmy),
            (_MY, _valid_my),
            *((p, None) for p in _NAMED_DATES),
        ),
    ),
    ("phone", "telephone or fax numbers", ((_PHONE_CANDIDATE, _is_phone),)),
)
_NOUNS = {kind: noun for kind, noun, _ in _VALUE_KINDS}


def _text_of(value: object) -> str | None:
    """The text to scan, or None for values that are not text (numbers, booleans, None)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return None


def _value_kinds(value: object) -> set[str]:
    """The kinds of identifier one value looks like (empty for numbers and plain text)."""
    if isinstance(value, dt.date):  # datetime is a date too; a bare time of day is neither
        return {"date"}
    if type(value).__name__ == "datetime64":  # numpy, without importing it
        return {"date"}
    text = _text_of(value)
    if text is None:
        return set()
    text = text[:_MAX_TEXT]
    kinds: set[str] = set()
    for kind, _noun, checks in _VALUE_KINDS:
        for pattern, valid in checks:
            if kind == "email" and "@" not in text:
                continue
            spans = [m.span() for m in pattern.finditer(text) if valid is None or valid(m)]
            if spans:
                kinds.add(kind)
                for start, end in spans:
                    text = text[:start] + "#" * (end - start) + text[end:]
    return kinds


def identifier_kinds(value: object) -> set[str]:
    """The kinds of direct identifier a single value looks like (to withhold it from errors)."""
    return _value_kinds(value)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    text = _text_of(value)
    return text is not None and not text.strip()


def _values_reason(hits: int, seen: int, kind: str) -> str:
    values = "value" if seen == 1 else "values"
    verb = "looks" if hits == 1 else "look"
    return f"{hits} of {seen} sampled {values} {verb} like {_NOUNS[kind]}"


def scan_values(
    rows: Iterable[Mapping[str, object]],
    columns: Sequence[str],
    allowed: Collection[str] = (),
    *,
    min_hits: int = 1,
) -> list[IdentifierFinding]:
    """Columns whose sampled text values look like identifiers (emails, phones, dates, ...).

    Only text (and date/datetime objects) is examined: numbers and booleans never count. A
    column is reported for a kind once at least `min_hits` sampled values look like it.
    """
    if min_hits < 1:
        raise ValueError("min_hits must be at least 1")
    watched = [c for c in dict.fromkeys(columns) if c not in allowed]
    seen = dict.fromkeys(watched, 0)
    hits: dict[tuple[str, str], int] = {}
    for row in rows:
        for column in watched:
            value = row.get(column)
            if _is_missing(value):
                continue
            seen[column] += 1
            for kind in _value_kinds(value):
                hits[column, kind] = hits.get((column, kind), 0) + 1
    order = {kind: i for i, (kind, _, _) in enumerate(_VALUE_KINDS)}
    position = {column: i for i, column in enumerate(watched)}
    return [
        IdentifierFinding(column, kind, _values_reason(count, seen[column], kind))
        for (column, kind), count in sorted(
            hits.items(), key=lambda item: (position[item[0][0]], order[item[0][1]])
        )
        if count >= min_hits
    ]


def check_deidentified(
    columns: Sequence[str],
    sample_rows: Iterable[Mapping[str, object]],
    allowed: Collection[str] = (),
) -> list[IdentifierFinding]:
    """Every identifier finding by name and by value, one per (column, kind), sorted by column.

    An empty list means the guard lets the cohort through.
    """
    merged: dict[tuple[str, str], IdentifierFinding] = {}
    for finding in scan_columns(columns, allowed) + scan_values(sample_rows, columns, allowed):
        merged.setdefault((finding.column, finding.kind), finding)
    return sorted(merged.values(), key=lambda f: (f.column, f.kind))


# --------------------------------------------------------------------------------------------
# What a message may show
# --------------------------------------------------------------------------------------------
# Errors name the field, the row and the reason; a value is shown only when it cannot identify
# anyone: a boolean, a number of at most four digits (a five-digit one may be a ZIP code), or
# clinical vocabulary (engine/io/clinical.py: dictionary words, synonyms, abbreviations, codes,
# levels, measures, and typos of them). Anything else - a name, an email, a date, a long
# number - is withheld, and the message says what kind of identifier it looks like when it can.

MAX_SHOWN_ID = 64  # case_ids are at most 64 characters (models.Case)
_SHORT_NUMBER = re.compile(r"[+-]?\d{1,6}(?:[.,]\d{1,6})?")
_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}|[a-z]+(?:[A-Z][a-z0-9]*)+")
_PLAIN_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PERSON_NAME = re.compile(r"[A-Z][a-z'-]+(?:[ ,.]+[A-Z][a-z'-]*)+\.?")
_SHOWN_NUMBER = 10_000  # numbers below this in size are shown
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def looks_like_person(value: object) -> set[str]:
    """identifier_kinds, plus "name" for text shaped like a person's name (Jane Doe) that is
    not clinical vocabulary (Disc Herniation)."""
    kinds = identifier_kinds(value)
    if isinstance(value, str) and _PERSON_NAME.fullmatch(value.strip()) and not is_clinical(value):
        kinds.add("name")
    return kinds


def showable(value: object, choices: Sequence[str] = ()) -> bool:
    """Whether an error message may show this value: it cannot identify anyone.

    `choices`: the field's allowed values, so that a typo of one ('Fracure') is shown.
    """
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < _SHOWN_NUMBER
    if isinstance(value, float):
        return value != value or (abs(value) < _SHOWN_NUMBER and len(repr(value)) <= 12)
    if not isinstance(value, str) or identifier_kinds(value):
        return False
    return is_clinical(value, [str(c) for c in choices])


_KIND_WORDS = {
    "email": "an email address",
    "url": "a web address",
    "device": "a hardware address",
    "ip": "an IP address",
    "ssn": "a social security number",
    "zip": "a ZIP code",
    "date": "a date",
    "phone": "a telephone number",
    "name": "a person's name",
    "nhs": "an NHS number",
    "mrn": "a medical record number",
}


def kind_words(kinds: Collection[str]) -> str:
    """Identifier kinds in words: "a date or a telephone number"."""
    return " or ".join(_KIND_WORDS.get(k, k) for k in sorted(kinds))


def withheld_reason(value: object) -> str:
    """What to say instead of a value that is not shown: the kind, never the value."""
    kinds = looks_like_person(value)
    if kinds:
        return f"value withheld: it looks like {kind_words(kinds)}"
    return "value withheld: it could identify someone"


def escape_text(text: str, limit: int = MAX_SHOWN_ID) -> str:
    """Text safe for a terminal and one line: control characters escaped, cut to `limit`."""
    cut = text[:limit]
    escaped = _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), cut)
    return escaped + ("..." if len(text) > limit else "")


def case_id_identifier_kinds(case_id: str) -> set[str]:
    """The kinds of identifier a case_id is (a date, a telephone number, a name...): the
    rule of engine.io.case_ids, plus any identifier inside a longer text."""
    kinds = case_id_kinds(case_id)
    if kinds or (len(case_id) <= MAX_SHOWN_ID and _PLAIN_ID.fullmatch(case_id)):
        return kinds
    return looks_like_person(case_id)


def identifier_id_message(kinds: Collection[str]) -> str:
    """Why a case_id is refused, and how to pseudonymise it (docs/identifier-guard.md)."""
    return (
        f"looks like {kind_words(kinds)}, not an anonymised id (value withheld); use a study "
        "code such as S-0193, or pseudonymise the ids with a key you keep: "
        "miss-screen batch --pseudonymise-ids KEYFILE"
    )


def shown_case_id(case_id: object) -> str | None:
    """A case_id as messages may print it, or None when it must be withheld.

    Escaped and cut to 64 characters; withheld when it looks like an identifier.
    """
    if not isinstance(case_id, str) or not case_id:
        return None
    if case_id_identifier_kinds(case_id[:4096]):
        return None
    return escape_text(case_id)


def shown_name(name: object, choices: Sequence[str] = ()) -> str | None:
    """A column or key name as messages may print it, or None when it could be data.

    A name is shown when it is shaped like a field name (snake_case or camelCase, no spaces),
    or is close to one of `choices`; a first line of data read as a header shows nothing.
    """
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    if looks_like_person(name) or _SHORT_NUMBER.fullmatch(name.strip()):
        return None
    if _FIELD_NAME.fullmatch(name):
        return name

    if difflib.get_close_matches(name.lower(), [str(c).lower() for c in choices], 1, 0.8):
        return escape_text(name)
    return None
