"""`Screener.screen_frame` on every engine (issue 29): one frame whatever the engine, on a cohort
with missing, corrupt and respelt values; and a notebook's frame goes to the cohort engine unless
the Screener was loaded for a named engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine.screener import COHORT_ENGINE, ENGINES, Screener
from engine.synth import generate_rows
from tests.conftest import RULESET
from tests.test_normalise import MESSY_CASES

pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")


def _cohort() -> Any:
    """400 generated rows (10 % of values blanked, 5 % corrupt) and the registry's spellings
    (`Male`, `L4/5`, `31,5`, `Y`) as text among them: object columns Arrow types as mixed."""
    rows = list(generate_rows(400, 29, missing=0.1, corrupt=0.05))
    rows += [messy for messy, _ in MESSY_CASES.values()]
    return pd.DataFrame(rows, index=range(1000, 1000 + len(rows)))


def _float_ids() -> Any:
    """Rows Arrow can type (none corrupt) with case ids as a spreadsheet gives them: 101.0,
    and one gap (NaN); some values respelt in text columns (`Male`, `F`, `L4/5`)."""
    typed = pd.DataFrame(list(generate_rows(300, 30, missing=0.1, corrupt=0.0)))
    typed["sex"] = typed["sex"].replace({"male": "Male", "female": "F"})
    typed.loc[typed.index[:10], "lowest_level"] = "L4/5"  # read row by row (a span states levels)
    typed["case_id"] = [float(100 + n) for n in range(len(typed))]
    typed.loc[typed.index[7], "case_id"] = float("nan")
    return typed


def _screened(screener: Screener, frame: Any, **options: Any) -> Any:
    found = screener.screen_frame(frame, **options)
    return found.to_pandas() if isinstance(found, pl.DataFrame) else found


@pytest.mark.timeout(600)
def test_every_engine_gives_one_frame_for_missing_corrupt_and_respelt_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided: list[int] = []
    by_column = Screener._frame_decided

    def counted(self: Screener, table: pa.Table) -> Any:
        found = by_column(self, table)
        decided.append(sum(len(part.rows) for part in found))
        return found

    monkeypatch.setattr(Screener, "_frame_decided", counted)
    cohort = _cohort()
    floats = _float_ids()
    key = tmp_path / "ids.key"
    screeners = {engine: Screener.from_ruleset(RULESET, engine) for engine in ENGINES}
    given: list[tuple[Any, dict[str, Any]]] = [
        (cohort, {}),
        (floats, {}),
        (floats, {"pseudonymise_ids": key}),
        (pl.from_pandas(floats), {}),
    ]
    for frame, options in given:
        decided.clear()
        frames = {e: _screened(s, frame, **options) for e, s in screeners.items()}
        first = frames["durable"]
        for engine, found in frames.items():
            assert found.equals(first), engine
            assert found.attrs == first.attrs, engine
        assert len(first) == len(frame)
        rejected = first["rejected"].notna()
        assert 0 < rejected.sum() < len(frame) * 0.2  # corrupt rows, each with its reasons
        # typed by Arrow: the vectorised engine decides by column (pseudonyms, all letters,
        # are the identifier check's to pass: row by row, as in batch)
        if frame is not cohort and not options:
            assert decided
            assert decided[0] > len(frame) * 0.8
        assert first.loc[rejected, "verdict"].isna().all()
    messy = screeners["vectorised"].screen_frame(cohort).iloc[-len(MESSY_CASES) :]
    assert messy["rejected"].isna().all()  # respelt values read as the dictionary spells them
    assert list(messy["case_id"]) == [m["case_id"] for m, _ in MESSY_CASES.values()]
    ids = screeners["vectorised"].screen_frame(floats)["case_id"]
    assert ids.iloc[0] == "100"  # 100.0 is the 100 of the source
    assert pd.isna(ids.iloc[7])  # no id: the row is refused, not dropped
    hashed = screeners["vectorised"].screen_frame(floats, pseudonymise_ids=key)["case_id"]
    assert hashed.notna().sum() == len(floats) - 1
    assert not set(hashed.dropna()) & set(ids.dropna())


@pytest.mark.timeout(300)
def test_frames_go_to_the_cohort_engine_unless_an_engine_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = Screener.load()
    assert (default.engine, default.cohort_engine) == ("durable", COHORT_ENGINE)
    assert default.with_site({"navigation_available": True}).cohort_engine == COHORT_ENGINE
    named = {engine: Screener.load(engine=engine) for engine in ENGINES}
    assert {e: s.cohort_engine for e, s in named.items()} == {e: e for e in ENGINES}
    by_column: list[str] = []
    original = Screener._frame_decided

    def spied(self: Screener, table: pa.Table) -> Any:
        by_column.append(self.cohort_engine)
        return original(self, table)

    monkeypatch.setattr(Screener, "_frame_decided", spied)
    frame = pd.DataFrame(list(generate_rows(50, 3, missing=0.1, corrupt=0.0)))
    found = default.screen_frame(frame)
    assert by_column == [COHORT_ENGINE]
    for engine in ("durable", "reference"):  # row by row, for the differential
        assert named[engine].screen_frame(frame).equals(found)
    assert by_column == [COHORT_ENGINE]
