"""The patient summary's own words, read from rules/patient/<language>.yaml (strictly checked).

Every word of the summary that is not a rule's own text lives in that file, so a translation is
one more file. The file is presentation, like the clinician report's headings: it changes no
result, so it is not part of the ruleset's canonical JSON (Ruleset.canonical) and a new
translation leaves every result's sha256 as it was. A rule's English `patient:` text and a red
flag's `safety_net:` live in the rule files and are hashed with them.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.dictionary import INPUT_FIELDS
from engine.errors import RuleFileError, UsageError
from engine.rules.bundled import bundled_rules_dir
from engine.rules.loader import read_yaml_file

_STRICT = ConfigDict(extra="forbid", frozen=True)
LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Z]{2})?")  # en, de, pt-BR: never a path
ENGLISH = "en"
MADE_BY_FIELDS = ("tool_version", "ruleset", "ruleset_version")
_Text = Field(min_length=3, max_length=600)


class Heading(BaseModel):
    model_config = _STRICT
    heading: str = _Text


class LeadSection(Heading):
    lead: str = _Text


class SafetyNetWords(LeadSection):
    source: str = _Text


class LookedAtWords(LeadSection):
    lead_partial: str = _Text
    none: str = _Text


class FoundWords(Heading):
    none: str = _Text  # said when nothing of this kind fired


class CheckWords(LeadSection):
    lead_all: str = _Text  # said instead of the list when nothing about the patient is given


class AskTeamWords(BaseModel):
    model_config = _STRICT
    lead: str = _Text


class ClosingWords(Heading):
    text: str = _Text


class RuleWords(BaseModel):
    """A translation's words for one rule: its patient text, and for a red flag its warning
    signs, one for each of the rule file's, in the same order."""

    model_config = _STRICT
    patient: str | None = Field(default=None, min_length=10, max_length=300)
    safety_net: list[str] | None = Field(default=None, min_length=1)


class PatientWords(BaseModel):
    """rules/patient/<language>.yaml: the summary's headings, leads, closing and disclaimer,
    and the words for each case field a rule reads."""

    model_config = _STRICT
    language: str = Field(pattern=LANGUAGE.pattern)
    title: str = _Text
    intro: str = _Text
    urgent: LeadSection
    safety_net: SafetyNetWords
    looked_at: LookedAtWords
    benefits: FoundWords
    talk: FoundWords
    check: CheckWords
    ask_team: AskTeamWords
    closing: ClosingWords
    disclaimer: str = _Text
    made_by: str = _Text  # its MADE_BY_FIELDS in braces are filled in (made_by_line)
    fields: dict[str, str]
    rules: dict[str, RuleWords] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(fields) - set(INPUT_FIELDS) | ({"case_id"} & set(fields)))
        if unknown:
            raise ValueError(f"not a case field of the data dictionary: {', '.join(unknown)}")
        short = sorted(name for name, words in fields.items() if not 3 <= len(words) <= 120)
        if short:
            raise ValueError(f"words of 3 to 120 characters expected for: {', '.join(short)}")
        return fields

    @field_validator("made_by")
    @classmethod
    def _made_by_fields(cls, text: str) -> str:
        """Only the names of MADE_BY_FIELDS in braces: filled by replacement, never str.format
        (a words file is data; `{ruleset.__class__}` must not reach an attribute)."""
        left = re.sub("|".join(f"\\{{{name}\\}}" for name in MADE_BY_FIELDS), "", text)
        if "{" in left or "}" in left:
            raise ValueError(f"braces may hold only {', '.join(MADE_BY_FIELDS)}")
        return text

    def made_by_line(self, values: dict[str, str]) -> str:
        """`made_by` with each field's value in place of its name in braces."""
        line = self.made_by
        for name in MADE_BY_FIELDS:
            line = line.replace(f"{{{name}}}", values[name])
        return line

    @field_validator("rules")
    @classmethod
    def _rule_ids(cls, rules: dict[str, RuleWords]) -> dict[str, RuleWords]:
        bad = sorted(key for key in rules if not re.fullmatch(r"[A-Z]{3}-\d{3}", key))
        if bad:
            raise ValueError(
                f"a rule id is expected (such as RED-001), not {len(bad)} other key(s)"
            )
        return rules


def patient_words_path(rules_directory: str | Path, language: str = ENGLISH) -> Path:
    """The words file of a language: the rules directory's own, else the bundled one."""
    if not LANGUAGE.fullmatch(language):
        raise UsageError(f"language must look like en or pt-BR, not {language[:20]!r}")
    for root in (Path(rules_directory), bundled_rules_dir()):
        path = root / "patient" / f"{language}.yaml"
        if path.is_file():
            return path
    raise UsageError(
        f"no patient summary words for language {language}: add rules/patient/{language}.yaml"
    )


def load_patient_words(rules_directory: str | Path, language: str = ENGLISH) -> PatientWords:
    """The checked words of a language for a rules directory (RuleFileError naming file:line)."""
    path = patient_words_path(rules_directory, language)
    return _load(str(path.resolve()), path.stat().st_mtime_ns, language)


@functools.cache
def _load(path: str, _mtime_ns: int, language: str) -> PatientWords:
    """Read once per file version (the mtime is in the key so an edited file is read again)."""
    doc = read_yaml_file(Path(path))
    if not isinstance(doc.data, dict):
        raise RuleFileError("expected a mapping of keys to values", path, 1)
    try:
        words = PatientWords.model_validate(doc.data)
    except ValidationError as exc:
        first, *rest = (
            RuleFileError(
                err["msg"] if err["type"] != "extra_forbidden" else "unknown key",
                path,
                doc.line_of(tuple(err["loc"])),
                ".".join(str(p) for p in err["loc"]) or None,
            )
            for err in exc.errors()
        )
        raise RuleFileError(first.message, first.path, first.line, first.key, extra=rest) from None
    if words.language != language:
        raise RuleFileError(f"language is {words.language}, the file name says {language}", path)
    if language == ENGLISH and words.rules:
        raise RuleFileError("the English rule texts live in the rule files, not here", path)
    return words
