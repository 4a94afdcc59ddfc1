"""run.DuplicateFinder: hashes kept chunk by chunk as results arrive, lines read back only for
hashes that repeat; every repeated case_id found, across chunks and inputs, whatever the
inputs' paths hold, and a hash shared by two different ids is not a duplicate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from engine.batch.run import DuplicateFinder
from engine.batch.summary import Duplicate
from engine.batch.worker import ChunkIds, chunk_ids

pytestmark = pytest.mark.timeout(60)


def _ids(source: str, first: int, ids: list[str]) -> list[ChunkIds]:
    return [chunk_ids(source, np.arange(first, first + len(ids)), ids)]


@pytest.mark.parametrize(
    "source",
    ["cohort.parquet", "a\tb.parquet", "a\rb.parquet", "a\r\tb\t.csv", "ü ñ.parquet"],
    ids=["plain", "tab", "carriage-return", "both", "non-ascii"],
)
def test_repeated_ids_are_found_across_chunks_whatever_the_path_holds(source: str) -> None:
    finder = DuplicateFinder()
    finder.add(_ids(source, 1, ["A-1", "B-2", "C-3"]))
    finder.add([])  # a chunk with no result (none so far)
    finder.add(_ids(source, 4, []))  # a chunk with no valid id
    finder.add(_ids(source, 4, ["B-2", "D-4", "A-1"]))
    finder.add(_ids(source, 7, ["B-2"]))
    assert finder.find(["other.csv", source]) == [
        Duplicate(case_id="A-1", rows=[1, 6], inputs=[1, 1]),
        Duplicate(case_id="B-2", rows=[2, 4, 7], inputs=[1, 1, 1]),
    ]


def test_each_inputs_ids_are_listed_under_it() -> None:
    """Ids of several inputs, in runs (a chunk holds one input's rows): a line is read back
    under the input whose run it falls in, the first and last line of each run included."""
    finder = DuplicateFinder()
    finder.add(_ids("a.csv", 1, ["A-1", "B-2"]))
    finder.add(_ids("b.csv", 1, ["B-2", "C-3"]))
    finder.add(_ids("b.csv", 3, ["A-1"]) + _ids("c\tc.csv", 1, ["C-3"]))  # a split chunk
    finder.add(_ids("a.csv", 3, ["C-3"]))  # the first input again, after the others
    assert finder.repeats() == {
        "A-1": [("a.csv", 1), ("b.csv", 3)],
        "B-2": [("a.csv", 2), ("b.csv", 1)],
        "C-3": [("b.csv", 2), ("c\tc.csv", 1), ("a.csv", 3)],
    }


def test_a_hash_two_ids_share_is_not_a_duplicate() -> None:
    """A collision (every id given hash 7) reads the lines back and groups by the id itself."""
    finder = DuplicateFinder()
    finder.add([ChunkIds("in.csv", np.array([7, 7]), b"1\tA-1\n2\tB-2\n")])
    finder.add([ChunkIds("other.csv", np.array([7]), b"9\tA-1\n")])
    assert finder.find(["in.csv", "other.csv"]) == [
        Duplicate(case_id="A-1", rows=[1, 9], inputs=[0, 1])
    ]


def test_no_ids_no_duplicates() -> None:
    assert DuplicateFinder().find(["in.csv"]) == []


def test_hashes_and_lines_out_of_step_stop_the_finder() -> None:
    """A line missing beside its hash would put every later id on another's row: refused."""
    finder = DuplicateFinder()
    with pytest.raises(ValueError, match="2 case id hashes"):
        finder.add([ChunkIds("in.csv", np.array([7, 8]), b"1\tA-1\n")])
    with pytest.raises(ValueError, match="missing"):
        chunk_ids("in.csv", np.array([1, 2]), pa.array(["A-1", None], pa.string()))
    finder.close()
