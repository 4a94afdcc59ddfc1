"""run.DuplicateFinder: hashes kept chunk by chunk as results arrive, lines read back only for
hashes that repeat; every repeated case_id found, across chunks and inputs (one file given
twice is two), and a hash shared by two different ids is not a duplicate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from engine.batch.run import DuplicateFinder
from engine.batch.summary import Duplicate
from engine.batch.worker import ChunkIds, chunk_ids

pytestmark = pytest.mark.timeout(60)


def _ids(first: int, ids: list[str]) -> list[ChunkIds]:
    return [chunk_ids(np.arange(first, first + len(ids)), ids)]


def test_repeated_ids_are_found_across_chunks() -> None:
    finder = DuplicateFinder()
    finder.add(_ids(1, ["A-1", "B-2", "C-3"]), 1)
    finder.add([], 1)  # a chunk with no result (none so far)
    finder.add(_ids(4, []), 1)  # a chunk with no valid id
    finder.add(_ids(4, ["B-2", "D-4", "A-1"]), 1)
    finder.add(_ids(7, ["B-2"]), 1)
    assert finder.find() == [
        Duplicate(case_id="A-1", rows=[1, 6], inputs=[1, 1]),
        Duplicate(case_id="B-2", rows=[2, 4, 7], inputs=[1, 1, 1]),
    ]


def test_each_inputs_ids_are_listed_under_it() -> None:
    """Ids of several inputs, in runs (a chunk holds one input's rows): a line is read back
    under the input whose run it falls in, the first and last line of each run included."""
    finder = DuplicateFinder()
    finder.add(_ids(1, ["A-1", "B-2"]), 0)
    finder.add(_ids(1, ["B-2", "C-3"]), 1)
    finder.add(_ids(3, ["A-1"]) + _ids(4, ["D-4"]), 1)  # a split chunk: its halves
    finder.add(_ids(1, ["C-3", "D-4"]), 2)
    finder.add(_ids(3, ["C-3"]), 0)  # the first input's place again, after the others
    assert finder.repeats() == {
        "A-1": [(0, 1), (1, 3)],
        "B-2": [(0, 2), (1, 1)],
        "C-3": [(1, 2), (2, 1), (0, 3)],
        "D-4": [(1, 4), (2, 2)],
    }


def test_one_file_given_twice_is_two_inputs() -> None:
    """The same rows under the same name, at two places among the inputs: each repeated id is
    listed once under each place (by name alone, both would fall under the first)."""
    finder = DuplicateFinder()
    for place in (0, 1):
        finder.add(_ids(1, ["A-1", "B-2"]), place)
    assert finder.find() == [
        Duplicate(case_id="A-1", rows=[1, 1], inputs=[0, 1]),
        Duplicate(case_id="B-2", rows=[2, 2], inputs=[0, 1]),
    ]


def test_a_hash_two_ids_share_is_not_a_duplicate() -> None:
    """A collision (every id given hash 7) reads the lines back and groups by the id itself."""
    finder = DuplicateFinder()
    finder.add([ChunkIds(np.array([7, 7]), b"1\tA-1\n2\tB-2\n")], 0)
    finder.add([ChunkIds(np.array([7]), b"9\tA-1\n")], 1)
    assert finder.find() == [Duplicate(case_id="A-1", rows=[1, 9], inputs=[0, 1])]


def test_no_ids_no_duplicates() -> None:
    assert DuplicateFinder().find() == []


def test_hashes_and_lines_out_of_step_stop_the_finder() -> None:
    """A line missing beside its hash would put every later id on another's row: refused."""
    finder = DuplicateFinder()
    with pytest.raises(ValueError, match="2 case id hashes"):
        finder.add([ChunkIds(np.array([7, 8]), b"1\tA-1\n")], 0)
    with pytest.raises(ValueError, match="missing"):
        chunk_ids(np.array([1, 2]), pa.array(["A-1", None], pa.string()))
    finder.close()
