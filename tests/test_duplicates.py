"""run.DuplicateFinder: hashes parsed chunk by chunk as results arrive, lines read back only for
hashes that repeat; every repeated case_id found, across chunks and inputs, whatever the
inputs' paths hold, and a hash shared by two different ids is not a duplicate."""

from __future__ import annotations

import numpy as np
import pytest

from engine.batch import run
from engine.batch.run import DuplicateFinder, line_hashes
from engine.batch.summary import Duplicate
from engine.batch.worker import id_hashes, id_lines

pytestmark = pytest.mark.timeout(60)


def _lines(source: str, first: int, ids: list[str]) -> list[str]:
    return [id_lines(source, np.arange(first, first + len(ids)), ids)]


@pytest.mark.parametrize(
    "source",
    ["cohort.parquet", "a\tb.parquet", "a\rb.parquet", "a\r\tb\t.csv", "ü ñ.parquet"],
    ids=["plain", "tab", "carriage-return", "both", "non-ascii"],
)
def test_repeated_ids_are_found_across_chunks_whatever_the_path_holds(source: str) -> None:
    finder = DuplicateFinder()
    finder.add(_lines(source, 1, ["A-1", "B-2", "C-3"]))
    finder.add([])  # a chunk with no valid id
    finder.add([""])
    finder.add(_lines(source, 4, ["B-2", "D-4", "A-1"]))
    finder.add(_lines(source, 7, ["B-2"]))
    assert finder.find() == [
        Duplicate(case_id="A-1", rows=[1, 6]),
        Duplicate(case_id="B-2", rows=[2, 4, 7]),
    ]


def test_each_lines_hash_is_parsed_in_order() -> None:
    ids = [f"SYN-{i:07d}" for i in range(25_000)]  # more than one block of Arrow's reader
    text = _lines("in.parquet", 1, ids)[0]
    assert line_hashes(text).tolist() == id_hashes(ids).tolist()
    assert line_hashes(text.replace("in.parquet", "in\rparquet")).tolist() == (
        id_hashes(ids).tolist()
    )


def test_a_hash_two_ids_share_is_not_a_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A collision (every line given hash 7) reads the lines back and groups by the id itself."""
    monkeypatch.setattr(run, "line_hashes", lambda text: np.full(text.count("\n"), 7))
    finder = DuplicateFinder()
    finder.add(["7\tin.csv\t1\tA-1\n7\tin.csv\t2\tB-2\n"])
    finder.add(["7\tother.csv\t9\tA-1\n"])
    assert finder.find() == [Duplicate(case_id="A-1", rows=[1, 9])]


def test_no_ids_no_duplicates() -> None:
    assert DuplicateFinder().find() == []
