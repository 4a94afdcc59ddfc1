"""The synthetic cohort stays what it was, and its clinical mix (engine/synth/mix.yaml) is checked.

The sha256 pins below were computed with the generator before it was split per diagnosis (one
469-line function, the tables in code) and again after: any change to a number, to the order of
mix.yaml or to the order of the draws changes them. Filling the SLIC fields (issue 29) changed
them once, and only them: the late draws keep every other value (a test below holds this). They
depend on numpy's PCG64 stream and its uniform and normal draws, which numpy keeps stable; if a
numpy upgrade alone breaks them, say so in the commit that updates them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import pytest

from engine import synth
from engine.synth.diagnoses import GENERATORS, check_against_generators
from engine.synth.mix import MIX_FILE, MixError, parse_mix
from tests.conftest import RULESET

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "cases" / "cohort" / "synthetic-500.csv"
MIX_TEXT = MIX_FILE.read_text(encoding="utf-8")

PINNED = [
    # seed, rows, missing, corrupt, format, sha256 of the file (issue 27 moved the corruptions
    # a normaliser reads, Male or 27,5, to values none reads: only corrupt rows changed)
    (0, 1, 0.05, 0.01, "csv", "ce4fa51d62058c20580d789603bac67c9736189edd54852a3d4cebf06791b5ed"),
    (
        7,
        1500,
        0.05,
        0.01,
        "csv",
        "a2a9df2a7c6977b8881bfb01807cb59ea53eb2c72e8c37562a137b23e36ec4b7",
    ),
    (
        11,
        3000,
        0.3,
        0.05,
        "jsonl",
        "ebed7992d6d7b4f3559313c141c894556b250615ea44d95fa2ab68943d82bc78",
    ),
    # more than CHUNK_ROWS: the second chunk's stream too
    (
        9,
        60000,
        0.05,
        0.01,
        "csv",
        "3ae26feac55e9c63b74dca4641c2d7378ba6e71139e1cfedcabb5d989fc991b3",
    ),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("seed", "rows", "missing", "corrupt", "fmt", "sha256"), PINNED)
def test_the_same_arguments_give_the_same_bytes_as_before(
    tmp_path: Path, seed: int, rows: int, missing: float, corrupt: float, fmt: str, sha256: str
) -> None:
    path = tmp_path / f"cohort.{fmt}"
    synth.write_cohort(path, rows, seed, missing=missing, corrupt=corrupt)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def test_late_fields_leave_every_other_value_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fields drawn by a generator's `late` step come from a stream of their own: without them
    the rows are the rows seeds gave before they were added, value for value."""
    with_late = list(synth.generate_rows(3000, 5, missing=0.2, corrupt=0.02))
    late = {name for name, g in GENERATORS.items() if g.late is not None}
    assert late == {"fracture"}
    for name in late:
        monkeypatch.setitem(GENERATORS, name, dataclasses.replace(GENERATORS[name], late=None))
    without = list(synth.generate_rows(3000, 5, missing=0.2, corrupt=0.02))
    slic = [name for name in with_late[0] if name.startswith("slic_")]
    assert any(row[name] is not None for row in with_late for name in slic)
    for a, b in zip(with_late, without, strict=True):
        assert {k: v for k, v in a.items() if k not in slic} == {
            k: v for k, v in b.items() if k not in slic
        }


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.timeout(60)
def test_the_bundled_cohort_is_seed_2026_regenerated(tmp_path: Path) -> None:
    """README: `miss-screen synth 500 --seed 2026`. The bundled file is that command's output, byte
    for byte, SLIC columns included (issue 29 item 6: no bundled cohort left them empty)."""
    fresh = tmp_path / "cohort.csv"
    synth.write_cohort(fresh, 500, 2026)
    assert BUNDLED.read_bytes() == fresh.read_bytes()
    slic = [name for name in _csv(BUNDLED)[0] if name.startswith("slic_")]
    assert slic == [
        "slic_morphology", "slic_dlc", "slic_neuro", "slic_cord_compression", "slic_score"
    ]
    assert all(any(row[name] for row in _csv(BUNDLED)) for name in slic)


def test_score_points_are_the_rule_sets() -> None:
    """A TLICS, SINS or SLIC total the generator supplies is the sum the derived rules compute."""
    scores = synth.load_mix().scores
    derived = RULESET.derived_by_field
    rules_points = {
        name: points
        for total in ("tlics_score_derived", "sins_score_derived", "slic_score_derived")
        for name, points in derived[total].points
    }
    assert scores == rules_points


def test_the_bundled_mix_loads_and_matches_the_generators() -> None:
    mix = parse_mix(MIX_TEXT)
    check_against_generators(mix, "mix.yaml")
    assert list(synth.DIAGNOSIS_MIX) == list(mix.diagnoses)


def _broken(old: str, new: str) -> str:
    assert MIX_TEXT.count(old) == 1, old
    return MIX_TEXT.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    share: 0.30\n", "    share: 0.30\n    shaer: 1\n", "diagnoses.disc_herniation.shaer"),
        ("    prior_surgery: 0.12\n", "    prior_surgery: 1.2\n", "spinal_stenosis.prior_surgery"),
        (
            "{fusion: 0.82, decompression: 0.18}}",
            "{fusoin: 0.82, decompression: 0.18}}",
            "'fusoin'",
        ),
        ("L1-L2: 50, L2-L3: 25", "L1-L2: 50, L2-L6: 25", "'L2-L6' is not a lowest_level"),
        (
            "{procedure: corpectomy, region: cervical,",
            "{procedure: corpectomy, region: sacral,",
            "techniques.11.region",
        ),
        (
            "age: {mean: 47, sd: 11, lowest: 20, highest: 80}",
            "age: {mean: 47, sd: 11, lowest: 80, highest: 20}",
            "degenerative_disc_disease.age",
        ),
        ("levels_by_region:\n", "levels_by_region:\n  sacral: {L5-S1: 1}\n", "levels_by_region"),
        (
            "tlics_plc: {intact: 0, indeterminate: 2, injured: 3}",
            "tlics_plc: {intact: 0, injured: 3}",
            "scores.tlics_plc",
        ),
        ("diagnoses:\n", "diagnoses: [\n", "malformed YAML"),
    ],
)
def test_a_malformed_mix_is_refused_naming_the_key(old: str, new: str, message: str) -> None:
    with pytest.raises(MixError, match=r"mix\.yaml") as raised:
        parse_mix(_broken(old, new))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "      - {when: [high_grade], mix",
            "      - {when: [hihg_grade], mix",
            "procedures.0.when: 'hihg_grade'",
        ),
        (
            "      intradural: 0.25\n",
            "      intradural: 0.25\n      extra: 0.5\n",
            "tumor.shares.extra: is not read",
        ),
        ("      spondylodiscitis: 0.8\n", "", "infection.shares.spondylodiscitis: is missing"),
        (
            "      plc_other: {indeterminate: 0.1,",
            "      plc_other: {ruptured: 0.1,",
            "'ruptured' is not a tlics_plc",
        ),
        (
            "    age_by_subtype:\n      isthmic:",
            "    age_by_subtype:\n      lytic:",
            "age_by_subtype",
        ),
    ],
)
def test_a_mix_that_the_generators_cannot_read_is_refused(old: str, new: str, message: str) -> None:
    mix = parse_mix(_broken(old, new))
    with pytest.raises(MixError) as raised:
        check_against_generators(mix, "mix.yaml")
    assert message in str(raised.value)
