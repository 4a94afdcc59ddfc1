"""The clinical mix of the synthetic cohort (mix.yaml beside this file), loaded and checked once.

A malformed file raises MixError naming the key (`diagnoses.tumor.procedures.1.mix: ...`), before
any row is drawn. Mappings keep the order of the file, which is the order of the draws.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.dictionary import FIELDS_BY_NAME
from engine.errors import UserError
from engine.yamlsource import YamlError, parse_yaml

MIX_FILE = Path(__file__).with_name("mix.yaml")
REGIONS = ("cervical", "thoracic", "lumbar")

Share = Annotated[float, Field(ge=0, le=1)]
Weight = Annotated[float, Field(ge=0)]
Mix = dict[str, Weight]


class MixError(UserError, ValueError):
    """mix.yaml cannot be used; the message names the file and the key."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NormalRange(_Table):
    """A normal(mean, sd) clipped to [lowest, highest]: ages, slip percent."""

    mean: float
    sd: Annotated[float, Field(ge=0)]
    lowest: float
    highest: float

    @model_validator(mode="after")
    def _ordered(self) -> NormalRange:
        if self.lowest > self.highest:
            raise ValueError(f"lowest {self.lowest} is above highest {self.highest}")
        return self


class CordRegions(_Table):
    """A chance in the cervical and in the thoracic spine (where the cord is)."""

    cervical: Share
    thoracic: Share


class ProcedureRule(_Table):
    """Cases of the diagnosis in every `when` group (none: all cases left) draw from `mix`."""

    when: tuple[str, ...] = ()
    mix: Mix


class TechniqueRule(_Table):
    """Cases with this procedure, region, diagnosis and lowest level (absent: any) draw `mix`."""

    procedure: str | None = None
    region: str | None = None
    diagnosis: tuple[str, ...] = ()
    lowest_level: str | None = None
    mix: Mix


class Diagnosis(_Table):
    """Everything drawn per diagnosis; see the comment at the top of mix.yaml."""

    share: Weight
    regions: Mix
    lowest_level: dict[str, Mix] = {}
    age: NormalRange | None = None
    age_by_subtype: dict[str, NormalRange] | None = None
    female_share: Share | None = None
    levels: dict[int, Weight]
    extra_level_if_cervical: Share | None = None
    prior_surgery: Share
    progressive_deficit: Share
    cauda_equina_if_lumbar: Share
    myelopathy: CordRegions
    procedures: tuple[ProcedureRule, ...]
    shares: dict[str, Share] = {}
    mixes: dict[str, Mix] = {}
    ranges: dict[str, NormalRange] = {}

    @model_validator(mode="after")
    def _one_age(self) -> Diagnosis:
        if (self.age is None) == (self.age_by_subtype is None):
            raise ValueError("give either age or age_by_subtype")
        if self.age_by_subtype is not None and (
            len(self.age_by_subtype) != 2 or list(self.age_by_subtype)[1] != "rest"
        ):
            raise ValueError("age_by_subtype: give one subtype, then rest")
        return self


class Sex(_Table):
    female_share: Share
    male_below: Share
    other_below: Share


class ClinicalMix(_Table):
    """The whole of mix.yaml."""

    diagnoses: dict[str, Diagnosis]
    levels_by_region: dict[str, Mix]
    techniques: tuple[TechniqueRule, ...]
    sex: Sex
    scores: dict[str, dict[str, int]]


def _key(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top)"


def parse_mix(text: str, source: str = str(MIX_FILE)) -> ClinicalMix:
    """Parse and check the text of a mix file; MixError names the first bad key."""
    try:
        data = parse_yaml(text).data
    except YamlError as exc:
        raise MixError(f"{source}: line {exc.line}: {exc}") from None
    try:
        mix = ClinicalMix.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MixError(f"{source}: {_key(tuple(first['loc']))}: {first['msg']}") from None
    _check_values(mix, source)
    return mix


@cache
def load_mix() -> ClinicalMix:
    """The bundled mix.yaml, read and checked on first use."""
    return parse_mix(MIX_FILE.read_text(encoding="utf-8"))


def _check_values(mix: ClinicalMix, source: str) -> None:
    """Every key of a weight table, and every value a rule names, is one the dictionary allows."""
    named: list[tuple[str, str, Iterable[str]]] = [("diagnoses", "diagnosis", mix.diagnoses)]
    for name, dx in mix.diagnoses.items():
        where = f"diagnoses.{name}"
        named += [(f"{where}.regions", "region", dx.regions)]
        named += [(f"{where}.lowest_level", "region", dx.lowest_level)]
        named += [
            (f"{where}.lowest_level.{r}", "lowest_level", m) for r, m in dx.lowest_level.items()
        ]
        named += [
            (f"{where}.procedures.{i}.mix", "planned_procedure", rule.mix)
            for i, rule in enumerate(dx.procedures)
        ]
    named += [("levels_by_region", "region", mix.levels_by_region)]
    named += [(f"levels_by_region.{r}", "lowest_level", m) for r, m in mix.levels_by_region.items()]
    for i, rule in enumerate(mix.techniques):
        named += [
            (f"techniques.{i}.mix", "mis_technique", rule.mix),
            (f"techniques.{i}.procedure", "planned_procedure", _given(rule.procedure)),
            (f"techniques.{i}.region", "region", _given(rule.region)),
            (f"techniques.{i}.diagnosis", "diagnosis", rule.diagnosis),
            (f"techniques.{i}.lowest_level", "lowest_level", _given(rule.lowest_level)),
        ]
    for key, field, values in named:
        allowed = FIELDS_BY_NAME[field].values if field in FIELDS_BY_NAME else ()
        unknown = [value for value in values if value not in allowed]
        if unknown:
            raise MixError(f"{source}: {key}: '{unknown[0]}' is not a {field} value")
    for name, points in mix.scores.items():
        unknown = [value for value in points if value not in score_keys(name)]
        if unknown:
            raise MixError(f"{source}: scores.{name}: '{unknown[0]}' is not a {name} value")
    if set(mix.levels_by_region) != set(REGIONS):
        raise MixError(f"{source}: levels_by_region: give a table for each of {', '.join(REGIONS)}")
    for name, points in mix.scores.items():
        if set(points) != set(score_keys(name)):
            raise MixError(f"{source}: scores.{name}: give points for every value of {name}")


def score_keys(name: str) -> tuple[str, ...]:
    """The keys a score table of `name` gives points for: its enum values, or "true" and
    "false" for a boolean (as the rules' `points:` spell them); none for an unknown field."""
    spec = FIELDS_BY_NAME.get(name)
    if spec is None:
        return ()
    return tuple(str(v).lower() if isinstance(v, bool) else v for v in spec.domain)


def _given(value: str | None) -> tuple[str, ...]:
    return () if value is None else (value,)
