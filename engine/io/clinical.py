"""Whether a text value is clinical vocabulary, which a message may show: it names no one.

An error about `diagnosis: 'HNP'` is only useful with the value in it, and a clinical word,
code, level or measure cannot identify a person. Recognised: the data dictionary's field names
and values, the synonyms table beside it (engine/io/synonyms.yaml, when present), the words of
clinical_terms.yaml (abbreviations, diagnoses, procedures, anatomy, drugs, units), ICD-10 and
OPCS-4 shaped codes (M51.16, V25.2), level spellings (L4/5, L5-S1, l4l5, T12-L1) and numbers
of at most four digits before the decimal point, with a unit (31,5; 95 mm; 12 %). A value of
several words is clinical when every word is, with at most one number among them, so that a
telephone number written in groups is not four harmless numbers. Each word may be a typo of a
vocabulary word ('Fracure'), but only a word of six or more letters, very close to it: a short
surname is more often one letter away from a clinical word than a typo is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import yaml

__all__ = ["clinical_vocabulary", "is_clinical", "spelling_key"]

_HERE = Path(__file__).parent
TERMS_FILE = _HERE / "clinical_terms.yaml"

_SEPARATORS = re.compile(r"[\s/_\-\u2013.]+")
MAX_TEXT = 64  # longer text is free text, never shown


class _Shapes(NamedTuple):
    """The shapes of a clinical word. Compiled on the first value checked, not at import: a
    case screened without a problem checks none, and compiling these was about 1.5 ms of a
    cold `screen` (benchmarks/results.md)."""

    number: re.Pattern[str]
    code: re.Pattern[str]
    level: re.Pattern[str]
    roman: re.Pattern[str]
    word_split: re.Pattern[str]


@lru_cache(maxsize=1)
def _shapes() -> _Shapes:
    return _Shapes(
        number=re.compile(
            r"[+-]?(?:\d{1,4}(?:[.,]\d{1,6})?|[.,]\d{1,6})\s*"
            r"(?:%|mm|cm|m|kg|kg/m2|kg/m²|lbs?|in|ft|°|deg|degrees?|y|yrs?|years?|mg|ml)?",
            re.IGNORECASE,
        ),
        # ICD-10(-CM) and OPCS-4: a letter, two digits, then up to four characters after an
        # optional point (M51.16, M48.062, S32.0XXA, G83.4, V25.2)
        code=re.compile(r"[A-Z]\d{2}(?:\.?[0-9A-Z]{1,4})?", re.IGNORECASE),
        # levels and level ranges: L4/5, L4-L5, l4l5, L45, L5S1, L5-S1, C5/6, T12-L1, L3-L5, S1
        level=re.compile(
            r"[CTLS]\d{1,2}(?:\s?[-/\u2013]?\s?[CTLS]?\d{1,2})*|[CTLS]{2}(?:\s?junction)?",
            re.IGNORECASE,
        ),
        roman=re.compile(r"(?:I{1,3}|IV|V|VI)", re.IGNORECASE),
        word_split=re.compile(r"[\s;]+|,\s+"),
    )


def spelling_key(text: str) -> str:
    """A word as compared: case and separators (space, -, /, _, .) ignored, tumour = tumor."""
    return _SEPARATORS.sub("", text.strip().lower()).replace("tumour", "tumor")


@lru_cache(maxsize=1)
def clinical_vocabulary() -> frozenset[str]:
    """Every vocabulary entry and every word of one, compared by spelling_key."""
    from engine.dictionary import FIELDS  # the bottom layer; imported when first needed

    entries: set[str] = set()
    for spec in FIELDS:
        entries.add(spec.name)
        entries.update(str(v) for v in spec.values)
    terms = yaml.safe_load(TERMS_FILE.read_text(encoding="utf-8"))
    for words in terms.values():
        entries.update(str(w) for w in words)
    from engine.io.normalise import synonym_words  # the normaliser's one table of spellings

    entries.update(synonym_words())
    keys = {spelling_key(e) for e in entries}
    for entry in entries:  # the words of disc_herniation, herniated disc, ...
        keys.update(spelling_key(w) for w in re.split(r"[\s_]+", entry))
    keys.discard("")
    return frozenset(keys)


@lru_cache(maxsize=1)
def _long_words() -> list[str]:
    return sorted(k for k in clinical_vocabulary() if len(k) >= 6 and k.isalpha())


def _word_kind(word: str, choices: Sequence[str]) -> str | None:
    """'number', 'term' or None (not clinical) for one word of a value."""
    shapes = _shapes()
    if shapes.number.fullmatch(word):
        return "number"
    if shapes.level.fullmatch(word) or shapes.code.fullmatch(word) or shapes.roman.fullmatch(word):
        return "term"
    key = spelling_key(word)
    if key in clinical_vocabulary():
        return "term"
    if not key.isalpha():
        return None
    if choices and difflib.get_close_matches(key, [spelling_key(c) for c in choices], 1, 0.75):
        return "term"  # a typo of one of the field's own values
    if len(key) >= 6 and difflib.get_close_matches(key, _long_words(), 1, 0.85):
        return "term"
    return None


def is_clinical(text: str, choices: Sequence[str] = ()) -> bool:
    """Whether text is clinical vocabulary (see the module docstring); `choices`, the field's
    allowed values, so that a typo of one is recognised."""
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        return not text
    shapes = _shapes()
    if shapes.number.fullmatch(text) or spelling_key(text) in clinical_vocabulary():
        return True
    words = [w for w in shapes.word_split.split(text) if w]
    kinds = [_word_kind(w, choices) for w in words]
    return None not in kinds and kinds.count("number") <= 1
