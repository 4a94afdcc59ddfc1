"""The case ids a batch chunk sends to run.DuplicateFinder, built column by column
(worker.chunk_ids): each id's hash is FNV-1a of its bytes whatever its length, the lines keep
row order across the rows the vectorised engine decided and those read one by one, and a
repeated id is found across both kinds of row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.batch.run import BatchOptions, run_batch
from engine.batch.worker import ChunkIds, OutputFormat, chunk_ids, id_hashes
from tests.conftest import RULES_DIR, RULESET


def fnv1a(text: str) -> int:
    """FNV-1a, 64 bits, signed: the hash written by hand, one byte at a time."""
    value = 0xCBF29CE484222325
    for octet in text.encode():
        value = ((value ^ octet) * 0x100000001B3) % 2**64
    return value - 2**64 if value >= 2**63 else value


@pytest.mark.timeout(30)
def test_hashes_are_fnv1a_of_each_id_whatever_its_length() -> None:
    ids = ["a", "ab", "A-1", "x" * 64, "case.0001_b", "9"]
    assert id_hashes(ids).tolist() == [fnv1a(i) for i in ids]
    assert id_hashes(["ab", "a"]).tolist() == [fnv1a("ab"), fnv1a("a")]  # no padding read
    assert id_hashes([]).tolist() == []


@pytest.mark.timeout(30)
def test_lines_are_tab_separated_in_the_order_given_beside_their_hashes() -> None:
    ids = chunk_ids(np.array([3, 10]), ["B-2", "A-1"])
    assert ids.lines == b"3\tB-2\n10\tA-1\n"
    assert ids.hashes.dtype == np.int64
    assert ids.hashes.tolist() == [fnv1a("B-2"), fnv1a("A-1")]
    empty = chunk_ids(np.array([], np.int64), [])
    assert (empty.lines, empty.hashes.tolist()) == (b"", [])


@pytest.mark.timeout(120)
def test_a_repeated_id_is_found_across_decided_and_rejected_rows(tmp_path: Path) -> None:
    """Row 2 is decided by the vectorised engine; row 5 repeats its id with an age out of range
    (rejected, row by row); row 4 repeats another decided id: both pairs are reported."""
    table = pa.table(
        {
            "case_id": ["C-1", "C-2", "C-3", "C-2", "C-2", "C-3"],
            "age_years": [40, 50, 60, 70, 999, 30],
            "diagnosis": ["lumbar_disc_herniation"] * 6,
        }
    )
    source = tmp_path / "cohort.parquet"
    pq.write_table(table, source)
    summary = tmp_path / "s.json"
    options = BatchOptions(
        inputs=[str(source)],
        out=str(tmp_path / "o.parquet"),
        output_format=OutputFormat.parquet,
        rules_dir=str(RULES_DIR),
        errors=str(tmp_path / "e.jsonl"),
        summary=str(summary),
        workers=1,
        engine="vectorised",
    )
    run_batch(options, RULESET)
    assert json.loads(summary.read_text())["duplicates"] == [
        {"case_id": "C-2", "rows": [2, 4, 5], "inputs": [0, 0, 0]},
        {"case_id": "C-3", "rows": [3, 6], "inputs": [0, 0]},
    ]


@pytest.mark.timeout(60)
def test_the_finder_keeps_hashes_as_chunks_arrive_and_finds_every_repeat() -> None:
    """DuplicateFinder appends each chunk's hashes as it arrives to one file of 8-byte
    hashes, and finds repeats from one sorted copy: a repeat is found wherever it falls,
    across chunks, at the first and the last line; ids whose hashes collide without being
    equal are no duplicates."""
    import engine.batch.run as run

    rng = np.random.default_rng(29)
    ids = [f"c{n}" for n in range(400)]
    ids[399] = ids[0] = "first-and-last"
    for n in rng.choice(np.arange(1, 399), 40, replace=False).tolist():
        ids[n] = f"c{n % 7}"  # c0..c6 each repeated several times, among the others
    hashes = [fnv1a(i) for i in ids] + [fnv1a("c1")]  # the last: same hash as c1, a new id
    lines = [f"{n + 1}\t{i}\n".encode() for n, i in enumerate([*ids, "collides-with-c1"])]
    finder = run.DuplicateFinder()
    for start in range(0, len(lines), 37):  # chunks of 37 ids
        part = slice(start, start + 37)
        finder.add([ChunkIds(np.array(hashes[part]), b"".join(lines[part]))], 0)
    found = {d.case_id: d.rows for d in finder.find()}
    expected: dict[str, list[int]] = {}
    for n, case_id in enumerate(ids):
        expected.setdefault(case_id, []).append(n + 1)
    assert found == {i: rows for i, rows in expected.items() if len(rows) > 1}
    assert found["first-and-last"] == [1, 400]
    assert run.DuplicateFinder().find() == []  # no id lines at all
