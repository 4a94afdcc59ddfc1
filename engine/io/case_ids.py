"""Whether a case_id is itself a direct identifier: a date, a telephone, NHS or social security
number, an email address, a person's name, a medical record number, a URL or an IP address.

A registry that keys its rows by such a value has not de-identified them, whatever else it
removed; the id would reach every output. The rule, its measured precision and recall and what
it cannot see are in docs/identifier-guard.md. Ordinary study ids (sequential integers,
`REG-00042`, `SW-2021-0042`, UUIDs, short codes) pass; a researcher whose ids are identifiers
pseudonymises them (engine/io/pseudonymise.py, `--pseudonymise-ids KEYFILE`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from functools import lru_cache
from typing import NamedTuple

__all__ = ["CASE_ID_SUSPECT", "case_id_kinds"]

# Ids worth the full check. Everything else (S-0193, SYN-0000001, 42, REG-00042) is cleared by
# this one search; engine.io.columnar runs it on whole Arrow columns, so it is RE2 syntax:
# digits on both sides of a separator, a day or a month name, MRN, eight digits in a row, no
# digit at all (a name), and anything outside models.Case's id alphabet (an email's @, a
# telephone's + or spaces).
CASE_ID_SUSPECT = (
    r"\d[-./_]\d|\d[A-Za-z]{3}|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|mrn)"
    r"|\d{8}|^[^0-9]*$|[^A-Za-z0-9._-]"
)
# the same test in Python, cheaper on the common id than one regex of many alternatives
_SUSPECT_SHAPE = re.compile(r"\d(?:[-./_]\d|[A-Za-z]{3}|\d{7})|[^A-Za-z0-9._-]")
_ANY_DIGIT = re.compile(r"\d")
_MONTHS_MRN = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
    "mrn",
)

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)


class _Shapes(NamedTuple):
    """The full check's patterns. Compiled on the first suspect id, not at import: a single
    case's ordinary id is cleared by the suspect test alone, and compiling these was about 1 %
    of a cold `screen` (benchmarks/results.md)."""

    uuid: re.Pattern[str]
    email: re.Pattern[str]
    url: re.Pattern[str]
    ipv4: re.Pattern[str]
    mrn: re.Pattern[str]
    phone_shaped: re.Pattern[str]  # a number written with a telephone's separators
    digits: re.Pattern[str]
    nanp: re.Pattern[str]  # North American: area code, exchange, line
    ymd: re.Pattern[str]
    dmy: re.Pattern[str]
    day_month_year: re.Pattern[str]
    month_day_year: re.Pattern[str]
    month_year: re.Pattern[str]
    name_separators: re.Pattern[str]  # between the words of a name: smith.john
    name_word: re.Pattern[str]  # a word, or a camel-case hump: JohnSmith


@lru_cache(maxsize=1)
def _shapes() -> _Shapes:
    return _Shapes(
        uuid=re.compile(r"\{?[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?"),
        email=re.compile(r"[^@\s]+@[^@\s]+"),
        url=re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.)", re.IGNORECASE),
        ipv4=re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"),
        mrn=re.compile(r"(?<![A-Za-z])mrn[-_.:# ]*\d", re.IGNORECASE),
        # the whole id: 555-867-5309, +44 20 7946 0958
        phone_shaped=re.compile(r"\+?\s*\(?\d[\d ().-]*\d\)?"),
        digits=re.compile(r"\d+"),
        nanp=re.compile(r"[2-9]\d{2}[2-9]\d{6}"),
        ymd=re.compile(r"(?<!\d)(\d{4})([-/._ ])(\d{1,2})\2(\d{1,2})(?!\d)"),
        dmy=re.compile(r"(?<!\d)(\d{1,2})([-/._ ])(\d{1,2})\2(\d{4}|\d{2})(?!\d)"),
        day_month_year=re.compile(
            rf"(?<!\d)(\d{{1,2}})(?:st|nd|rd|th)?[-/._ ]?{_MONTH}[-/._ ,]*(\d{{4}}|\d{{2}})(?!\d)",
            re.IGNORECASE,
        ),
        month_day_year=re.compile(
            rf"(?<![A-Za-z]){_MONTH}[-/._ ]*(\d{{1,2}})(?:st|nd|rd|th)?[-/._ ,]+(\d{{4}})(?!\d)",
            re.IGNORECASE,
        ),
        month_year=re.compile(
            rf"(?<![A-Za-z]){_MONTH}[-/._ ]*((?:19|20)\d\d)(?!\d)", re.IGNORECASE
        ),
        name_separators=re.compile(r"[._ ,]"),
        name_word=re.compile(r"[A-Z][a-z']+|[A-Z]+(?![a-z])|[a-z']+"),
    )


# Regions whose national numbers are written with a trunk prefix 0 (07700 900123, 030 1234567,
# 06 12 34 56 78): a bare 0-led digit string is read as a national number of one of them.
TRUNK_REGIONS = ("GB", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "SE", "FI", "AU", "NZ")


def case_id_kinds(case_id: str) -> set[str]:
    """The kinds of identifier a case_id is (empty for an ordinary study id)."""
    if not suspect(case_id):
        return set()
    text = case_id.strip()
    shapes = _shapes()
    if shapes.uuid.fullmatch(text):
        return set()
    kinds: set[str] = set()
    if shapes.email.search(text):
        kinds.add("email")
    if shapes.mrn.search(text):
        kinds.add("mrn")
    if shapes.url.search(text):
        kinds.add("url")
    if any(_ipv4(m[0]) for m in shapes.ipv4.finditer(text)):
        kinds.add("ip")
    if _has_date(text):
        kinds.add("date")
    if shapes.phone_shaped.fullmatch(text):
        digits = re.sub(r"\D", "", text)
        kinds |= number_kinds(digits, international=text.startswith("+"))
        if not kinds and _grouped_like_phone(text, len(digits)):
            kinds.add("phone")
    else:
        for run in shapes.digits.findall(text):
            kinds |= number_kinds(run, international=False, whole=False)
    if _name_shaped(text):
        kinds.add("name")
    return kinds


def suspect(case_id: str) -> bool:
    """Whether CASE_ID_SUSPECT matches the id (tests/test_identifier_corpus.py holds the two
    equal, and equal to Arrow's RE2 reading)."""
    if _SUSPECT_SHAPE.search(case_id) is not None or _ANY_DIGIT.search(case_id) is None:
        return True
    lowered = case_id.lower()
    return any(word in lowered for word in _MONTHS_MRN)


def number_kinds(digits: str, *, international: bool, whole: bool = True) -> set[str]:
    """What a string of digits is: a date (8 digits), an SSN (9), an NHS number (10, check
    digit), a telephone number; nothing for the digits of an ordinary id.

    Telephone numbers: with a leading + (or 00, `whole` ids only), any number phonenumbers
    finds possible; a 0-led national number of 9 to 11 digits possible in one of
    TRUNK_REGIONS; ten digits shaped as a North American number, valid or not (555 numbers
    are fictional, not anonymous); an id of eleven or more digits alone (`whole`), possible
    as an international number without its + (inside a prefixed id, such as the FHIR
    mapper's fhir-<12 digits>, a long digit run is a hash or a counter).
    Eight or fewer digits without a + are never a telephone number: sequential ids live there.
    """
    kinds: set[str] = set()
    n = len(digits)
    if international or (whole and digits.startswith("00") and n >= 10 and digits[2] != "0"):
        number = digits if international else digits[2:]
        if 7 <= len(number) <= 15 and _possible("+" + number, None):
            kinds.add("phone")
        return kinds
    if n == 8 and _date_digits(digits):
        kinds.add("date")
    if n == 9 and _ssn(digits):
        kinds.add("ssn")
    if n == 10 and nhs_check_digit_ok(digits):
        kinds.add("nhs")
    if (n == 10 and _shapes().nanp.fullmatch(digits)) or (
        n == 11 and digits[0] == "1" and _shapes().nanp.fullmatch(digits[1:])
    ):
        kinds.add("phone")
    elif 9 <= n <= 11 and digits[0] == "0" and digits[1] != "0":
        if any(_possible(digits, region) for region in TRUNK_REGIONS):
            kinds.add("phone")
    elif whole and n >= 11 and digits[0] != "0" and _possible("+" + digits, None):
        kinds.add("phone")
    return kinds


def _grouped_like_phone(text: str, digits: int) -> bool:
    """8 to 15 digits written in three or more groups, or with an area code in brackets:
    555-123-4567, (555) 123 4567, 0161 496 0000 (a date or an SSN is found before this)."""
    return 8 <= digits <= 15 and (len(_shapes().digits.findall(text)) >= 3 or "(" in text)


def nhs_check_digit_ok(digits: str) -> bool:
    """A 10-digit NHS number's modulus 11 check (NHS Data Dictionary, "NHS Number")."""
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _ssn(digits: str) -> bool:
    """A possible US social security number: area not 000, 666 or 9xx; group and serial not 0."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _calendar(year: int, month: int, day: int) -> bool:
    if not 1900 <= year <= 2099:
        return False
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def _date_digits(digits: str) -> bool:
    """Eight digits that are a date: YYYYMMDD, DDMMYYYY or MMDDYYYY."""
    a, b, c = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    d, m, y = int(digits[:2]), int(digits[2:4]), int(digits[4:])
    return _calendar(a, b, c) or _calendar(y, m, d) or _calendar(y, d, m)


def _year(text: str) -> int:
    year = int(text)
    return year + (1900 if year >= 30 else 2000) if len(text) == 2 else year


def _has_date(text: str) -> bool:
    shapes = _shapes()
    for m in shapes.ymd.finditer(text):
        if _calendar(int(m[1]), int(m[3]), int(m[4])):
            return True
    for m in shapes.dmy.finditer(text):
        if len(m[4]) == 2 and m[2] not in "-/":  # 1.10.20 is more likely a version
            continue
        a, b, year = int(m[1]), int(m[3]), _year(m[4])
        if _calendar(year, b, a) or _calendar(year, a, b):
            return True
    return any(
        p.search(text) is not None
        for p in (shapes.day_month_year, shapes.month_day_year, shapes.month_year)
    )


def _name_shaped(text: str) -> bool:
    """An id of letters only, shaped like a person's name: two to four words joined by `.`,
    `_`, `,` or a space (smith.john, J.Smith), or at least two capitalised words (JohnSmith,
    John-Smith). Lower-case words joined by hyphens (cli-case) are not read as a name."""
    if any(c.isdigit() for c in text) or len(text) > 64:
        return False
    shapes = _shapes()
    words = shapes.name_word.findall(text)
    if not 2 <= len(words) <= 4 or "".join(words) != re.sub(r"[-._ ,]", "", text):
        return False
    if any(len(w) < 2 and not w.isupper() for w in words):  # initials: J.Smith, LindaOBrien
        return False
    if shapes.name_separators.search(text):
        return True
    titled = sum(1 for w in words if w[0].isupper() and w[1:].islower())
    upper = sum(1 for w in words if w.isupper() and len(w) > 1)
    return titled >= 2 or (titled >= 1 and upper >= 1)


@lru_cache(maxsize=1)
def _phonenumbers():  # type: ignore[no-untyped-def]  # the module, imported once, when needed
    import phonenumbers

    return phonenumbers


def _possible(text: str, region: str | None) -> bool:
    phonenumbers = _phonenumbers()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_possible_number(number))
